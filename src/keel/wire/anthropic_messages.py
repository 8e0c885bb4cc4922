"""The Anthropic Messages wire format, both directions, with no I/O.

Requests arrive OpenAI-shaped. Encoding hoists system/developer text to the top-level `system`,
folds tool results into user turns and merges same-role neighbours, because Anthropic requires
user/assistant alternation. `cache_control` on content parts survives. A request in the Anthropic
dialect passes its own fields on as sent; an OpenAI-dialect one is translated, its untranslatable
fields dropped (named for the trace) or refused (keel/wire/translate.py): `response_format` becomes
native structured output or a forced answer tool, `reasoning_effort` a thinking budget. Thinking
blocks come back as Reasoning events. Usage is reported in Keel's OpenAI convention: `input_tokens`
includes cache reads and cache writes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from keel.errors import ErrorKind, InvalidRequest, ProviderError
from keel.types import (
    IS_ERROR,
    JSON,
    PREFIX,
    THINKING,
    ChatEvent,
    ChatRequest,
    EmbeddingRequest,
    EmbeddingResponse,
    Finish,
    Message,
    Reasoning,
    Start,
    Target,
    Text,
    ToolCall,
    ToolCallDelta,
    Usage,
)
from keel.wire.base import MAX_TOKENS, Malformed, Outbound, call_arguments, checked_usage, counted, retry_after
from keel.wire.openai_chat import output_cap
from keel.wire.translate import (
    ANSWER_TOOL,
    ANTHROPIC,
    dropped_notes,
    openai_extra,
    structured,
    thinking_of,
    unthinkable,
)

DEFAULT_MAX_TOKENS = 4096  # Anthropic requires max_tokens; OpenAI callers often omit it

# ---- ChatRequest -> Anthropic JSON ------------------------------------------------------------

_SHARED = frozenset({"parallel_tool_calls", "top_k", "max_completion_tokens"})  # keys both edges may set


def request_json(request: ChatRequest, model: str, stream: bool, native_schema: bool = False) -> tuple[JSON, list[str]]:
    """The Anthropic body for `request`, and the names of the fields it had to drop (for the trace).

    `native_schema`: the model takes `output_config.format` (structured outputs); else a json_schema
    `response_format` becomes a forced call of `ANSWER_TOOL`.
    """
    dropped: list[str] = []
    own = request.dialect == ANTHROPIC
    system, messages = split_messages(request.messages, dropped if not own else None)
    extra = request.extra
    thinking, max_tokens = (None, output_cap(request) or DEFAULT_MAX_TOKENS)
    if not own and isinstance(extra.get("thinking"), dict):  # Anthropic's own, sent the LiteLLM way
        thinking = extra["thinking"]
    elif not own:
        thinking, max_tokens = thinking_of(extra.get("reasoning_effort"), output_cap(request), DEFAULT_MAX_TOKENS)
    body: JSON = {"model": model, "max_tokens": max_tokens, "messages": messages}
    if system is not None:
        body["system"] = system
    if stream:
        body["stream"] = True
    tools = [_tool_json(t, own, native_schema, dropped) for t in request.tools]
    choice = _tool_choice(request.tool_choice) if tools else None  # Anthropic refuses it without tools
    if not (own and ("output_config" in extra or "output_format" in extra)):
        tools, choice = structured(request.response_format, tools, choice, native_schema, body)
    if tools and extra.get("parallel_tool_calls") is False:
        choice = {**(choice or {"type": "auto"}), "disable_parallel_tool_use": True}
    if request.metadata is not None and not own:
        dropped.append("metadata")
    sampling: JSON = {"temperature": request.temperature, "top_p": request.top_p, "top_k": extra.get("top_k")}
    if thinking is not None and not own:
        dropped += unthinkable(sampling)
    optional = (
        *sampling.items(),
        ("stop_sequences", list(request.stop) or None),
        ("tools", tools or None),
        ("tool_choice", choice),
        ("metadata", {"user_id": request.user} if request.user else None),
        ("thinking", thinking),
    )
    body.update((k, v) for k, v in optional if v is not None)
    if own:
        body.update((k, v) for k, v in extra.items() if k not in _SHARED)
    else:
        dropped += openai_extra(extra)
    if thinking is not None and choice is not None and choice.get("type") in ("any", "tool"):
        raise InvalidRequest(
            "Anthropic models cannot think while a tool call is forced (tool_choice or response_format on a "
            "model without native structured output); drop 'reasoning_effort' or the forcing.",
            "reasoning_effort",
        )
    return body, dropped


def split_messages(
    messages: Sequence[Message], dropped: list[str] | None = None
) -> tuple[str | list[JSON] | None, list[JSON]]:
    """The top-level `system`, and the conversation as alternating user/assistant turns.

    `dropped` (OpenAI-dialect messages) collects the names of message fields Anthropic has no place for;
    None: the messages are Anthropic's own, whose `extra` carries thinking blocks and `is_error`."""
    system: list[JSON] = []
    turns: list[JSON] = []
    for i, m in enumerate(messages):
        if m.role in ("system", "developer"):
            system.extend(_blocks(m.content, i, text_only=True))
            continue
        if dropped is not None and m.extra:
            dropped.extend(f"messages[].{k}" for k in m.extra if k != PREFIX)
        role, blocks = _turn(m, i, dropped is None)
        if not blocks:
            continue  # Anthropic rejects empty turns
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    return _system(system), [{"role": t["role"], "content": _compact(t["content"])} for t in turns]


def _turn(m: Message, i: int, own: bool) -> tuple[str, list[JSON]]:
    extra = (m.extra or {}) if own else {}
    if m.role == "user":
        return "user", _blocks(m.content, i)
    if m.role == "assistant":
        thinking = [b for b in extra.get(THINKING) or () if isinstance(b, dict)]
        return "assistant", thinking + _blocks(m.content, i) + [_tool_use(c, i) for c in m.tool_calls]
    if m.role == "tool":
        block = _tool_result(m, i)
        if extra.get(IS_ERROR) is True:
            block["is_error"] = True
        return "user", [block]
    raise InvalidRequest(
        f"Anthropic targets do not accept '{m.role}' messages; use 'tool' messages.", f"messages[{i}].role"
    )


def _blocks(content: str | list[JSON] | None, i: int, text_only: bool = False) -> list[JSON]:
    if not content:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    blocks = [_part(p, f"messages[{i}].content[{j}]", text_only) for j, p in enumerate(content)]
    return [b for b in blocks if b["type"] != "text" or b["text"]]  # Anthropic rejects empty text blocks


def _part(part: Any, where: str, text_only: bool) -> JSON:
    kind = part.get("type") if isinstance(part, dict) else None
    if kind == "text" and isinstance(part.get("text"), str):
        block: JSON = {"type": "text", "text": part["text"]}
    elif kind == "image_url" and not text_only:
        block = _image(part.get("image_url"), where)
    elif kind == "file" and not text_only:
        block = _document(part.get("file"), where)
    elif kind == "document" and not text_only:
        return dict(part)  # Anthropic's own block, as an Anthropic client sent it
    else:
        allowed = "text" if text_only else "text, image_url and file"
        raise InvalidRequest(f"Anthropic targets accept only {allowed} content parts here.", f"{where}.type")
    if "cache_control" in part:
        block["cache_control"] = part["cache_control"]
    return block


def _image(image: Any, where: str) -> JSON:
    url = image.get("url") if isinstance(image, dict) else image
    if isinstance(url, str) and url.startswith("data:"):
        head, comma, data = url[5:].partition(",")
        media_type, *params = head.split(";")
        if comma and media_type and "base64" in params:
            return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}
    elif isinstance(url, str) and url.startswith(("http://", "https://")):
        return {"type": "image", "source": {"type": "url", "url": url}}
    raise InvalidRequest(
        "An image needs an http(s) URL or a base64 data URL (data:image/png;base64,...).", f"{where}.image_url.url"
    )


def _document(file: Any, where: str) -> JSON:
    """An OpenAI `file` part (a PDF as a base64 data URL, or an http(s) URL) as a `document` block; a
    `file_id` names an OpenAI upload, which an Anthropic model cannot read."""
    data = file.get("file_data") if isinstance(file, dict) else None
    if isinstance(data, str) and data.startswith("data:"):
        head, comma, payload = data[5:].partition(",")
        media_type, *params = head.split(";")
        if comma and media_type and "base64" in params:
            return {"type": "document", "source": {"type": "base64", "media_type": media_type, "data": payload}}
    elif isinstance(data, str) and data.startswith(("http://", "https://")):
        return {"type": "document", "source": {"type": "url", "url": data}}
    raise InvalidRequest(
        "A file part needs 'file.file_data': a base64 data URL (data:application/pdf;base64,...) or an http(s) "
        "URL; OpenAI file ids cannot be read by Anthropic targets.",
        f"{where}.file",
    )


def _tool_use(call: ToolCall, i: int) -> JSON:
    return {"type": "tool_use", "id": call.id, "name": call.name, "input": call_arguments(call.arguments, call.id, i)}


def _tool_result(m: Message, i: int) -> JSON:
    block: JSON = {"type": "tool_result", "tool_use_id": m.tool_call_id}
    content = m.content if isinstance(m.content, str) else _blocks(m.content, i)
    if content:
        block["content"] = content
    return block


def _system(blocks: list[JSON]) -> str | list[JSON] | None:
    if not blocks:
        return None
    if any("cache_control" in b for b in blocks):
        return blocks
    return "\n\n".join(b["text"] for b in blocks)


def _compact(blocks: list[JSON]) -> str | list[JSON]:
    """A lone plain text block goes out as a string, the form most Anthropic examples use."""
    if len(blocks) == 1 and blocks[0].keys() == {"type", "text"} and blocks[0]["type"] == "text":
        return str(blocks[0]["text"])
    return blocks


def _tool_json(tool: JSON, own: bool, native: bool, dropped: list[str]) -> JSON:
    """An OpenAI tool as Anthropic's; `strict` goes where the model takes it (the structured-output
    models), an Anthropic client's own tool fields (`own`) as they came."""
    fn = tool.get("function") or {}
    out: JSON = {"name": fn.get("name")}
    if fn.get("description"):
        out["description"] = fn["description"]
    out["input_schema"] = fn.get("parameters") or {"type": "object", "properties": {}}
    if "strict" in fn and (own or native or not fn["strict"]):
        out["strict"] = fn["strict"]
    elif "strict" in fn:
        dropped.append("tools[].function.strict")
    if "cache_control" in tool:
        out["cache_control"] = tool["cache_control"]
    if own:
        out.update((k, v) for k, v in tool.items() if k not in ("type", "function"))
    return out


_CHOICES = {"auto": "auto", "required": "any", "none": "none"}


def _tool_choice(choice: str | JSON | None) -> JSON | None:
    if choice is None:
        return None
    if isinstance(choice, str) and choice in _CHOICES:
        return {"type": _CHOICES[choice]}
    fn = choice.get("function") if isinstance(choice, dict) else None
    if isinstance(fn, dict) and isinstance(fn.get("name"), str):
        return {"type": "tool", "name": fn["name"]}
    raise InvalidRequest(
        "'tool_choice' must be 'auto', 'none', 'required' or {\"type\": \"function\", \"function\": {\"name\": ...}}.",
        "tool_choice",
    )


# ---- Anthropic JSON -> events -----------------------------------------------------------------

_FINISH = {"end_turn": "stop", "stop_sequence": "stop", "pause_turn": "stop", "tool_use": "tool_calls"}
_FINISH |= {"max_tokens": "length", "model_context_window_exceeded": "length", "refusal": "content_filter"}


def finish_reason(stop_reason: Any) -> str:
    return _FINISH.get(stop_reason, "stop") if isinstance(stop_reason, str) else "stop"


def usage_from(u: Mapping[str, Any], cap: int = MAX_TOKENS, problems: list[str] | None = None) -> Usage:
    """Anthropic counts uncached, cache-read and cache-written input apart; OpenAI sums them. Each count
    is checked (`counted`); the clamped ones land in `problems`."""
    found = problems if problems is not None else []
    read = counted(u.get("cache_read_input_tokens"), cap, "cache_read_input_tokens", found)
    written = counted(u.get("cache_creation_input_tokens"), cap, "cache_creation_input_tokens", found)
    return Usage(
        input_tokens=counted(u.get("input_tokens"), cap, "input_tokens", found) + read + written,
        output_tokens=counted(u.get("output_tokens"), cap, "output_tokens", found),
        cached_input_tokens=read,
        cache_write_tokens=written,
    )


def events_from_message(data: JSON, cap: int = MAX_TOKENS) -> list[ChatEvent]:
    """A whole answer's events. An error object, or a body that is not a message, is an upstream error
    even under HTTP 200: passing it on as an empty answer would be a lie."""
    if data.get("type") == "error" or data.get("error"):
        raise stream_error(data.get("error"))
    if not isinstance(data.get("content"), list):
        raise _protocol("Anthropic answer has no content list: it is not a message")
    try:
        events: list[ChatEvent] = [Start(data.get("id") or "", data.get("model") or "")]
        blocks = [b for b in data["content"] if isinstance(b, dict)]
        events += [r for r in map(_reasoning, blocks) if r is not None]
        text = "".join(b.get("text") or "" for b in blocks if b.get("type") == "text")
        text += "".join(orjson.dumps(b.get("input") or {}).decode() for b in blocks if _answer(b))
        if text:
            events.append(Text(text))
        calls = [b for b in blocks if b.get("type") == "tool_use" and not _answer(b)]
        for n, b in enumerate(calls):
            events.append(ToolCallDelta(n, b.get("id"), b.get("name"), orjson.dumps(b.get("input") or {}).decode()))
        reason = finish_reason(data.get("stop_reason"))
        answered = reason == "tool_calls" and not calls and any(map(_answer, blocks))
        events.append(Finish("stop" if answered else reason))
        return events + checked_usage(data.get("usage") or {}, cap, usage_from)
    except (AttributeError, TypeError):
        raise _protocol("Anthropic answer is not shaped like a message") from None


def _answer(block: JSON) -> bool:
    """A call of the forced answer tool: its input is the reply's text, not a tool call."""
    return block.get("type") == "tool_use" and block.get("name") == ANSWER_TOOL


def _reasoning(block: JSON) -> Reasoning | None:
    if block.get("type") == "thinking":
        return Reasoning(str(block.get("thinking") or ""), str(block.get("signature") or "") or None)
    if block.get("type") == "redacted_thinking":
        return Reasoning(redacted=str(block.get("data") or ""))
    return None


def _protocol(message: str) -> ProviderError:
    return ProviderError(ErrorKind.protocol, message)


class AnthropicStreamDecoder:
    """Turns Messages SSE events into ChatEvents; tool calls are numbered from 0 in arrival order.

    Complete once message_delta has given a stop reason (message_stop, which carries the usage, may
    then be missing: the usage is sent at the end). A malformed event is skipped once (`Malformed`)."""

    __slots__ = ("_answers", "_argless", "_cap", "_malformed", "_stopped", "_tools", "_usage", "done")

    def __init__(self, cap: int = MAX_TOKENS) -> None:
        self.done = False
        self._stopped = False  # message_stop seen: the usage is out
        self._cap = cap
        self._malformed = Malformed()
        self._usage: JSON = {}  # message_start's counts, overwritten by message_delta's cumulative ones
        self._tools: dict[int, int] = {}  # content block index -> tool call index
        self._argless: set[int] = set()  # tool calls that have streamed no argument text yet
        self._answers: set[int] = set()  # content block indexes of forced answer-tool calls (text)

    def feed(self, data: bytes) -> list[ChatEvent]:
        try:
            event = orjson.loads(data)
            kind = event.get("type")
            if kind == "error" or event.get("error"):  # `event: error`, even without its type field
                raise stream_error(event.get("error"))
            return self._event(kind, event)
        except (ValueError, TypeError, AttributeError):  # orjson.JSONDecodeError is a ValueError
            return self._malformed.skip(data, "Anthropic stream event")

    def _event(self, kind: Any, event: JSON) -> list[ChatEvent]:
        if kind == "message_start":
            message = event.get("message") or {}
            usage = message.get("usage")
            self._record(usage)
            prompt = usage_from(usage, self._cap) if isinstance(usage, dict) and "input_tokens" in usage else None
            return [Start(message.get("id") or "", message.get("model") or "", prompt)]
        if kind == "content_block_start":
            return self._block_start(event.get("index"), event.get("content_block") or {})
        if kind == "content_block_delta":
            return self._block_delta(event.get("index"), event.get("delta") or {})
        if kind == "content_block_stop":
            return self._block_stop(event.get("index"))
        if kind == "message_delta":
            self._record(event.get("usage"))
            reason = (event.get("delta") or {}).get("stop_reason")
            self.done = self.done or bool(reason)
            if reason == "tool_use" and self._answers and not self._tools:  # only the answer tool was called
                reason = "end_turn"
            return [Finish(finish_reason(reason))] if reason else []
        if kind == "message_stop":
            self.done = self._stopped = True
            return checked_usage(self._usage, self._cap, usage_from)
        return []  # ping, and event types Anthropic may add

    def close(self) -> list[ChatEvent]:
        if not self.done:
            raise _protocol("upstream stream ended before the answer finished (no stop reason)")
        return [] if self._stopped else checked_usage(self._usage, self._cap, usage_from)

    def _record(self, usage: Any) -> None:
        if isinstance(usage, dict):
            self._usage.update((k, v) for k, v in usage.items() if v is not None)

    def _block_start(self, index: Any, block: JSON) -> list[ChatEvent]:
        if _answer(block):
            self._answers.add(index)
            return []
        if block.get("type") in ("thinking", "redacted_thinking"):
            reasoning = _reasoning(block)
            return [reasoning] if reasoning is not None and (reasoning.text or reasoning.redacted) else []
        if block.get("type") == "tool_use":
            n = self._tools[index] = len(self._tools)
            self._argless.add(n)
            return [ToolCallDelta(n, block.get("id"), block.get("name"), "")]
        if block.get("type") == "text" and block.get("text"):
            return [Text(block["text"])]
        return []  # server-tool blocks are not part of the OpenAI shape

    def _block_delta(self, index: Any, delta: JSON) -> list[ChatEvent]:
        kind = delta.get("type")
        if kind == "text_delta" and delta.get("text"):
            return [Text(delta["text"])]
        if kind == "thinking_delta" and delta.get("thinking"):
            return [Reasoning(str(delta["thinking"]))]
        if kind == "signature_delta" and delta.get("signature"):
            return [Reasoning(signature=str(delta["signature"]))]
        if kind == "input_json_delta" and index in self._answers and delta.get("partial_json"):
            return [Text(delta["partial_json"])]
        n = self._tools.get(index)
        if delta.get("type") == "input_json_delta" and n is not None and delta.get("partial_json"):
            self._argless.discard(n)
            return [ToolCallDelta(n, arguments=delta["partial_json"])]
        return []

    def _block_stop(self, index: Any) -> list[ChatEvent]:
        n = self._tools.get(index)
        if n is None or n not in self._argless:
            return []
        self._argless.discard(n)
        return [ToolCallDelta(n, arguments="{}")]  # a call without arguments still carries a JSON object


def _load(data: bytes, what: str) -> JSON:
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise ProviderError(ErrorKind.protocol, f"malformed Anthropic {what}: {data[:80]!r}") from None
    if not isinstance(value, dict):
        raise ProviderError(ErrorKind.protocol, f"Anthropic {what} is not a JSON object")
    return value


# ---- errors -----------------------------------------------------------------------------------

_STATUS_KIND = {400: ErrorKind.bad_request, 401: ErrorKind.auth, 403: ErrorKind.auth, 404: ErrorKind.not_found}
_STATUS_KIND |= {408: ErrorKind.timeout, 413: ErrorKind.bad_request, 429: ErrorKind.rate_limited}
_STATUS_KIND |= {500: ErrorKind.server, 502: ErrorKind.overloaded, 503: ErrorKind.overloaded}
_STATUS_KIND |= {504: ErrorKind.timeout, 529: ErrorKind.overloaded}
_TYPE_KIND = {"invalid_request_error": ErrorKind.bad_request, "request_too_large": ErrorKind.bad_request}
_TYPE_KIND |= {"authentication_error": ErrorKind.auth, "permission_error": ErrorKind.auth}
_TYPE_KIND |= {"not_found_error": ErrorKind.not_found, "rate_limit_error": ErrorKind.rate_limited}
_TYPE_KIND |= {"api_error": ErrorKind.server, "overloaded_error": ErrorKind.overloaded}
# "prompt is too long: 208656 tokens > 200000 maximum";
# "input length and `max_tokens` exceed context limit: 199759 + 8192 > 200000, ..."
_CONTEXT_WORDING = ("prompt is too long", "context limit", "context window", "context length")


def error_kind(status: int | None, error_type: str, message: str) -> ErrorKind:
    """The HTTP status decides when it is known; in-stream errors have only the error type."""
    kind = (_STATUS_KIND.get(status) if status is not None else None) or _TYPE_KIND.get(error_type)
    if kind is None:
        kind = ErrorKind.bad_request if status is not None and status < 500 else ErrorKind.server
    if kind is ErrorKind.bad_request and any(w in message.lower() for w in _CONTEXT_WORDING):
        kind = ErrorKind.context_length
    return kind


def _error_fields(error: Any) -> tuple[str, str]:
    if not isinstance(error, dict):
        return "", ""
    return str(error.get("type") or ""), str(error.get("message") or "")


def stream_error(error: Any) -> ProviderError:
    """An error Anthropic sent after answering 200 (in the body, or mid-stream, e.g. overloaded_error)."""
    error_type, message = _error_fields(error)
    kind = error_kind(None, error_type, message)
    return ProviderError(kind, message or f"upstream error: {error_type or 'unknown'}", status=200)


def classify(status: int, body: bytes, headers: Mapping[str, str]) -> ProviderError:
    try:
        error_type, message = _error_fields(orjson.loads(body).get("error"))
    except (orjson.JSONDecodeError, AttributeError):
        error_type, message = "", ""
    message = message or f"upstream answered HTTP {status}"
    kind = error_kind(status, error_type, message)
    return ProviderError(kind, message, status=status, retry_after=retry_after(headers))


def _no_embeddings() -> ProviderError:
    return ProviderError(ErrorKind.bad_request, "anthropic providers do not offer embeddings")


# ---- the codec --------------------------------------------------------------------------------


class AnthropicCodec:
    """`schema_models`: prefixes of the model ids with native structured output (the catalog's)."""

    def __init__(self, schema_models: tuple[str, ...] = ()) -> None:
        self._schema_models = schema_models

    def encode_chat(self, request: ChatRequest, target: Target, stream: bool) -> Outbound:
        native = target.model.startswith(self._schema_models) if self._schema_models else False
        body, dropped = request_json(request, target.model, stream, native)
        headers = (("anthropic-beta", ",".join(request.betas)),) if request.betas else ()
        return Outbound("/messages", orjson.dumps(body), headers, dropped_notes(dropped))

    def decode_chat(self, body: bytes, cap: int = MAX_TOKENS) -> list[ChatEvent]:
        return events_from_message(_load(body, "answer"), cap)

    def stream_decoder(self, cap: int = MAX_TOKENS) -> AnthropicStreamDecoder:
        return AnthropicStreamDecoder(cap)

    def encode_embed(self, request: EmbeddingRequest, target: Target) -> Outbound:
        raise _no_embeddings()

    def decode_embed(self, body: bytes) -> EmbeddingResponse:
        raise _no_embeddings()

    classify = staticmethod(classify)
