"""The Anthropic Messages wire format, both directions, with no I/O.

Requests arrive OpenAI-shaped. Encoding hoists system/developer text to the top-level `system`,
folds tool results into user turns and merges same-role neighbours, because Anthropic requires
user/assistant alternation. `cache_control` on content parts survives. OpenAI-only `extra` fields
are dropped; `response_format` is refused rather than silently ignored. Usage is reported in
Keel's OpenAI convention: `input_tokens` includes cache reads and cache writes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from keel.errors import ErrorKind, InvalidRequest, ProviderError
from keel.types import (
    JSON,
    ChatEvent,
    ChatRequest,
    EmbeddingRequest,
    EmbeddingResponse,
    Finish,
    Message,
    Start,
    Target,
    Text,
    ToolCall,
    ToolCallDelta,
    Usage,
)
from keel.wire.base import MAX_TOKENS, Malformed, Outbound, counted, retry_after, usage_events
from keel.wire.openai_chat import output_cap

DEFAULT_MAX_TOKENS = 4096  # Anthropic requires max_tokens; OpenAI callers often omit it

# ---- ChatRequest -> Anthropic JSON ------------------------------------------------------------


def request_json(request: ChatRequest, model: str, stream: bool) -> JSON:
    if request.response_format is not None:
        raise ProviderError(
            ErrorKind.bad_request, "response_format is not supported by Anthropic targets", param="response_format"
        )
    system, messages = split_messages(request.messages)
    body: JSON = {"model": model, "max_tokens": output_cap(request) or DEFAULT_MAX_TOKENS, "messages": messages}
    if system is not None:
        body["system"] = system
    if stream:
        body["stream"] = True
    tools = [_tool_json(t) for t in request.tools]
    optional = (
        ("temperature", request.temperature),
        ("top_p", request.top_p),
        ("stop_sequences", list(request.stop) or None),
        ("tools", tools or None),
        ("tool_choice", _tool_choice(request.tool_choice) if tools else None),  # Anthropic refuses it without tools
        ("metadata", {"user_id": request.user} if request.user else None),
    )
    body.update((k, v) for k, v in optional if v is not None)
    return body


def split_messages(messages: Sequence[Message]) -> tuple[str | list[JSON] | None, list[JSON]]:
    """The top-level `system`, and the conversation as alternating user/assistant turns."""
    system: list[JSON] = []
    turns: list[JSON] = []
    for i, m in enumerate(messages):
        if m.role in ("system", "developer"):
            system.extend(_blocks(m.content, i, text_only=True))
            continue
        role, blocks = _turn(m, i)
        if not blocks:
            continue  # Anthropic rejects empty turns
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    return _system(system), [{"role": t["role"], "content": _compact(t["content"])} for t in turns]


def _turn(m: Message, i: int) -> tuple[str, list[JSON]]:
    if m.role == "user":
        return "user", _blocks(m.content, i)
    if m.role == "assistant":
        return "assistant", _blocks(m.content, i) + [_tool_use(c, i) for c in m.tool_calls]
    if m.role == "tool":
        return "user", [_tool_result(m, i)]
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
    else:
        allowed = "text" if text_only else "text and image_url"
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


def _tool_use(call: ToolCall, i: int) -> JSON:
    try:
        arguments = orjson.loads(call.arguments) if call.arguments.strip() else {}
    except orjson.JSONDecodeError:
        arguments = None
    if not isinstance(arguments, dict):
        raise InvalidRequest(
            f"The arguments of tool call '{call.id}' must be a JSON object.", f"messages[{i}].tool_calls"
        )
    return {"type": "tool_use", "id": call.id, "name": call.name, "input": arguments}


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


def _tool_json(tool: JSON) -> JSON:
    fn = tool.get("function") or {}
    out: JSON = {"name": fn.get("name")}
    if fn.get("description"):
        out["description"] = fn["description"]
    out["input_schema"] = fn.get("parameters") or {"type": "object", "properties": {}}
    if "cache_control" in tool:
        out["cache_control"] = tool["cache_control"]
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


def _usage_events(u: Any, cap: int) -> list[ChatEvent]:
    problems: list[str] = []
    if not isinstance(u, dict):
        problems.append(f"usage={str(u)[:24]}")
        u = {}
    return usage_events(usage_from(u, cap, problems), problems)


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
        text = "".join(b.get("text") or "" for b in blocks if b.get("type") == "text")
        if text:
            events.append(Text(text))
        calls = [b for b in blocks if b.get("type") == "tool_use"]
        for n, b in enumerate(calls):
            events.append(ToolCallDelta(n, b.get("id"), b.get("name"), orjson.dumps(b.get("input") or {}).decode()))
        events.append(Finish(finish_reason(data.get("stop_reason"))))
        return events + _usage_events(data.get("usage") or {}, cap)
    except (AttributeError, TypeError):
        raise _protocol("Anthropic answer is not shaped like a message") from None


def _protocol(message: str) -> ProviderError:
    return ProviderError(ErrorKind.protocol, message)


class AnthropicStreamDecoder:
    """Turns Messages SSE events into ChatEvents; tool calls are numbered from 0 in arrival order.

    Complete once message_delta has given a stop reason (message_stop, which carries the usage, may
    then be missing: the usage is sent at the end). A malformed event is skipped once (`Malformed`)."""

    __slots__ = ("_argless", "_cap", "_malformed", "_stopped", "_tools", "_usage", "done")

    def __init__(self, cap: int = MAX_TOKENS) -> None:
        self.done = False
        self._stopped = False  # message_stop seen: the usage is out
        self._cap = cap
        self._malformed = Malformed()
        self._usage: JSON = {}  # message_start's counts, overwritten by message_delta's cumulative ones
        self._tools: dict[int, int] = {}  # content block index -> tool call index
        self._argless: set[int] = set()  # tool calls that have streamed no argument text yet

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
            return [Finish(finish_reason(reason))] if reason else []
        if kind == "message_stop":
            self.done = self._stopped = True
            return _usage_events(self._usage, self._cap)
        return []  # ping, and event types Anthropic may add

    def close(self) -> list[ChatEvent]:
        if not self.done:
            raise _protocol("upstream stream ended before the answer finished (no stop reason)")
        return [] if self._stopped else _usage_events(self._usage, self._cap)

    def _record(self, usage: Any) -> None:
        if isinstance(usage, dict):
            self._usage.update((k, v) for k, v in usage.items() if v is not None)

    def _block_start(self, index: Any, block: JSON) -> list[ChatEvent]:
        if block.get("type") == "tool_use":
            n = self._tools[index] = len(self._tools)
            self._argless.add(n)
            return [ToolCallDelta(n, block.get("id"), block.get("name"), "")]
        if block.get("type") == "text" and block.get("text"):
            return [Text(block["text"])]
        return []  # thinking and server-tool blocks are not part of the OpenAI shape

    def _block_delta(self, index: Any, delta: JSON) -> list[ChatEvent]:
        if delta.get("type") == "text_delta" and delta.get("text"):
            return [Text(delta["text"])]
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
    def encode_chat(self, request: ChatRequest, target: Target, stream: bool) -> Outbound:
        return Outbound("/messages", orjson.dumps(request_json(request, target.model, stream)))

    def decode_chat(self, body: bytes, cap: int = MAX_TOKENS) -> list[ChatEvent]:
        return events_from_message(_load(body, "answer"), cap)

    def stream_decoder(self, cap: int = MAX_TOKENS) -> AnthropicStreamDecoder:
        return AnthropicStreamDecoder(cap)

    def encode_embed(self, request: EmbeddingRequest, target: Target) -> Outbound:
        raise _no_embeddings()

    def decode_embed(self, body: bytes) -> EmbeddingResponse:
        raise _no_embeddings()

    classify = staticmethod(classify)
