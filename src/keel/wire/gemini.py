"""Google's Gemini API (generativelanguage, v1beta) `generateContent`, both directions, with no I/O.

Requests arrive OpenAI-shaped. System/developer text becomes `systemInstruction`; the turns become
`contents` with roles user/model (same-role neighbours merged); an assistant's tool calls become
`functionCall` parts and a tool message a `functionResponse` part named after the call it answers
(Gemini matches results by function name). Tools go out as `functionDeclarations` with their JSON
Schema as `parametersJsonSchema`, `tool_choice` as `toolConfig.functionCallingConfig`, and
`response_format` as `responseMimeType` plus `responseJsonSchema`, `reasoning_effort` as
`thinkingConfig` (a budget for Gemini 2.x, a level for later models). Images and PDFs must be base64
data URLs. Fields are carried, dropped and recorded or refused as keel/wire/translate.py decides for
an Anthropic target: fields Gemini has no place for (`user`, `metadata`, `store`, `cache_control`, ...)
are named in the trace's `keel.dropped` tag, those the caller would read back (logprobs, audio, ...)
are a 400 naming them; `n` other than 1 is refused (Keel answers one choice). An Anthropic-dialect
request is first put in the OpenAI dialect by translate.to_openai (its `thinking` becomes an effort).

Usage in Keel's OpenAI convention: `promptTokenCount` already includes `cachedContentTokenCount`;
output is `candidatesTokenCount` plus `thoughtsTokenCount` (the reasoning tokens). A stream is SSE
(`alt=sse`) of GenerateContentResponse objects; the one carrying `finishReason` completes it.
Gemini gives function calls no ids (or optional ones): Keel numbers them `call_<n>`. A call's
`thoughtSignature` (Gemini 3 refuses a follow-up turn whose function calls lack theirs) rides in
the id the client echoes back, `call_<n>_ts_<signature as base64url>`, and is restored on the way out.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

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
    ToolCallDelta,
    Usage,
)
from keel.wire.base import MAX_TOKENS, Malformed, Outbound, call_arguments, checked_usage, counted, retry_after
from keel.wire.openai_chat import output_cap
from keel.wire.translate import ANTHROPIC, dropped_notes, effort_of, openai_extra, to_openai

# ---- ChatRequest -> Gemini JSON ---------------------------------------------------------------

_CHOICE_MODES = {"auto": "AUTO", "required": "ANY", "none": "NONE"}
# extra (OpenAI or Anthropic-shaped) field -> generationConfig field
_EXTRA_CONFIG = {"top_k": "topK", "seed": "seed", "presence_penalty": "presencePenalty"}
_EXTRA_CONFIG |= {"frequency_penalty": "frequencyPenalty"}
# the extra fields this codec reads (`parallel_tool_calls: false` is recorded as dropped by itself);
# translate.openai_extra refuses or drops the rest
_READS = frozenset(_EXTRA_CONFIG) | {"reasoning_effort", "thinking", "max_completion_tokens", "n"}
_READS |= {"parallel_tool_calls"}
# what Gemini takes of an Anthropic-dialect request, as translate.to_openai's catalog flags
_TAKES = frozenset({"top_k", "reasoning_effort"})


def model_path(model: str, method: str) -> str:
    return f"/models/{quote(model.removeprefix('models/'), safe='')}:{method}"


def request_json(request: ChatRequest, model: str = "") -> tuple[JSON, list[str]]:
    """The Gemini body for `request`, and the names of the fields it dropped (for the trace)."""
    dropped: list[str] = []
    if request.dialect == ANTHROPIC:
        request, dropped = to_openai(request, _TAKES)
    system, contents = split_messages(request.messages, dropped)
    body: JSON = {"contents": contents}
    if system:
        body["systemInstruction"] = {"parts": system}
    config = _generation_config(request)
    effort = request.extra.get("reasoning_effort")
    if effort is None:  # Anthropic's `thinking` object, sent by an OpenAI client the LiteLLM way
        effort = effort_of(request.extra.get("thinking"))
    thinking = _thinking(effort, model.removeprefix("models/"))
    if thinking is not None:
        config["thinkingConfig"] = thinking
    if config:
        body["generationConfig"] = config
    if request.tools:
        declarations = [_declaration(t, i, dropped) for i, t in enumerate(request.tools)]
        body["tools"] = [{"functionDeclarations": declarations}]
        choice = _tool_config(request.tool_choice)
        if choice is not None:
            body["toolConfig"] = {"functionCallingConfig": choice}
    dropped += [name for name, value in (("user", request.user), ("metadata", request.metadata)) if value]
    if request.extra.get("parallel_tool_calls") is False:
        dropped.append("parallel_tool_calls")
    dropped += openai_extra(request.extra, _READS, "Gemini")
    return body, dropped


def _generation_config(request: ChatRequest) -> JSON:
    n = request.extra.get("n")
    if n is not None and n != 1:
        raise InvalidRequest("Gemini targets answer one choice: 'n' must be 1.", "n")
    config: JSON = {}
    optional = (
        ("temperature", request.temperature),
        ("topP", request.top_p),
        ("maxOutputTokens", output_cap(request)),
        ("stopSequences", list(request.stop) or None),
    )
    config.update((k, v) for k, v in optional if v is not None)
    config.update(
        (name, request.extra[key]) for key, name in _EXTRA_CONFIG.items() if request.extra.get(key) is not None
    )
    config.update(_response_format(request.response_format))
    return config


# reasoning_effort -> Gemini 2.x thinkingBudget, as Google's own OpenAI-compatible endpoint maps it
_BUDGETS = {"none": 0, "minimal": 1024, "low": 1024, "medium": 8192, "high": 24576}


def _thinking(effort: Any, model: str) -> JSON | None:
    """Gemini 2.x thinks within a token budget; Gemini 3 and later by level (`none` is their `minimal`)."""
    if effort is None:
        return None
    if not isinstance(effort, str) or effort not in _BUDGETS:
        raise InvalidRequest(f"'reasoning_effort' must be one of {', '.join(_BUDGETS)}.", "reasoning_effort")
    if model.startswith(("gemini-2", "gemini-1")):
        return {"thinkingBudget": _BUDGETS[effort]}
    return {"thinkingLevel": "minimal" if effort == "none" else effort}


def _response_format(fmt: JSON | None) -> JSON:
    if fmt is None or fmt.get("type") == "text":
        return {}
    if fmt.get("type") == "json_object":
        return {"responseMimeType": "application/json"}
    schema = (fmt.get("json_schema") or {}).get("schema") if fmt.get("type") == "json_schema" else None
    if not isinstance(schema, dict):
        raise InvalidRequest(
            "'response_format' must be text, json_object or json_schema with a 'schema' object.", "response_format"
        )
    return {"responseMimeType": "application/json", "responseJsonSchema": schema}


def split_messages(messages: Sequence[Message], dropped: list[str]) -> tuple[list[JSON], list[JSON]]:
    """The system instruction's parts, and the conversation as `contents` (same roles merged); the
    message fields Gemini has no place for are named in `dropped`."""
    system: list[JSON] = []
    contents: list[JSON] = []
    names: dict[str, str] = {}  # tool call id -> function name, for the functionResponse parts
    for i, m in enumerate(messages):
        if m.name is not None and m.role != "tool":
            dropped.append("messages[].name")
        dropped.extend(f"messages[].{k}" for k in m.extra or {})
        if m.role in ("system", "developer"):
            parts = _parts(m.content, i, dropped)
            if any("text" not in p for p in parts):
                raise InvalidRequest("Gemini takes only text in system instructions.", f"messages[{i}].content")
            system.extend(parts)
            continue
        role, parts = _turn(m, i, names, dropped)
        if not parts:
            continue
        if contents and contents[-1]["role"] == role:
            contents[-1]["parts"].extend(parts)
        else:
            contents.append({"role": role, "parts": parts})
    return system, contents


def _turn(m: Message, i: int, names: dict[str, str], dropped: list[str]) -> tuple[str, list[JSON]]:
    if m.role == "user":
        return "user", _parts(m.content, i, dropped)
    if m.role == "assistant":
        calls = []
        for call in m.tool_calls:
            names[call.id] = call.name
            part: JSON = {"functionCall": {"name": call.name, "args": call_arguments(call.arguments, call.id, i)}}
            signature = _signature_of(call.id)
            if signature:
                part["thoughtSignature"] = signature
            calls.append(part)
        return "model", _parts(m.content, i, dropped) + calls
    if m.role == "tool":
        name = names.get(m.tool_call_id or "")
        if name is None:
            raise InvalidRequest(
                f"Tool message answers '{m.tool_call_id}', which no earlier assistant tool call has.",
                f"messages[{i}].tool_call_id",
            )
        return "user", [{"functionResponse": {"name": name, "response": {"output": _result(m.content)}}}]
    raise InvalidRequest(f"Gemini targets do not accept '{m.role}' messages.", f"messages[{i}].role")


def _result(content: str | list[JSON] | None) -> Any:
    """A tool's output: its JSON when it is JSON, else its text (Gemini wants a Struct under `output`)."""
    text = content if isinstance(content, str) else "".join(str(p.get("text") or "") for p in content or [])
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return text


def _parts(content: str | list[JSON] | None, i: int, dropped: list[str]) -> list[JSON]:
    if not content:
        return []
    if isinstance(content, str):
        return [{"text": content}]
    parts = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        where = f"messages[{i}].content[{j}]"
        if kind == "text" and isinstance(part.get("text"), str):
            if part["text"]:
                parts.append({"text": part["text"]})
        elif kind == "image_url":
            image = part.get("image_url")
            if isinstance(image, dict) and image.get("detail") not in (None, "auto"):
                dropped.append("image_url.detail")
            parts.append(_inline(image, f"{where}.image_url.url"))
        elif kind == "file":
            file = part.get("file")
            parts.append(_inline((file or {}).get("file_data") if isinstance(file, dict) else None, f"{where}.file"))
        else:
            raise InvalidRequest("Gemini targets accept text, image_url and file content parts.", f"{where}.type")
        if "cache_control" in part:
            dropped.append("cache_control")  # Gemini caches by itself (implicit caching)
    return parts


_DATA_URL = re.compile(r"data:([\w.+-]+/[\w.+-]+);base64,(.*)", re.S)


def _inline(image: Any, where: str) -> JSON:
    """An image or a file (a PDF) given as a base64 data URL, as an `inlineData` part."""
    url = image.get("url") if isinstance(image, dict) else image
    match = _DATA_URL.fullmatch(url) if isinstance(url, str) else None
    if match is None:
        raise InvalidRequest(
            "Gemini targets take images and files as base64 data URLs (data:image/png;base64,...).", where
        )
    return {"inlineData": {"mimeType": match.group(1), "data": match.group(2)}}


def _declaration(tool: JSON, i: int, dropped: list[str]) -> JSON:
    fn = tool.get("function") if isinstance(tool, dict) else None
    if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
        raise InvalidRequest("Gemini targets take function tools with a 'name'.", f"tools[{i}]")
    if fn.get("strict"):
        dropped.append("tools[].function.strict")
    if "cache_control" in tool:
        dropped.append("tools[].cache_control")
    out: JSON = {"name": fn["name"]}
    if fn.get("description"):
        out["description"] = fn["description"]
    if fn.get("parameters"):
        out["parametersJsonSchema"] = fn["parameters"]
    return out


def _tool_config(choice: str | JSON | None) -> JSON | None:
    if choice is None:
        return None
    if isinstance(choice, str) and choice in _CHOICE_MODES:
        return {"mode": _CHOICE_MODES[choice]}
    fn = choice.get("function") if isinstance(choice, dict) else None
    if isinstance(fn, dict) and isinstance(fn.get("name"), str):
        return {"mode": "ANY", "allowedFunctionNames": [fn["name"]]}
    raise InvalidRequest(
        "'tool_choice' must be 'auto', 'none', 'required' or {\"type\": \"function\", \"function\": {\"name\": ...}}.",
        "tool_choice",
    )


# ---- Gemini JSON -> events --------------------------------------------------------------------

_FILTERED = {"SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY"}
_FINISH = {"MAX_TOKENS": "length"} | dict.fromkeys(_FILTERED, "content_filter")


def finish_reason(reason: Any, called: bool) -> str:
    if called and reason == "STOP":
        return "tool_calls"
    return _FINISH.get(reason, "stop") if isinstance(reason, str) else "stop"


def usage_from(u: Mapping[str, Any], cap: int = MAX_TOKENS, problems: list[str] | None = None) -> Usage:
    found = problems if problems is not None else []
    thoughts = counted(u.get("thoughtsTokenCount"), cap, "thoughtsTokenCount", found)
    prompt = counted(u.get("promptTokenCount"), cap, "promptTokenCount", found)
    tool_prompt = counted(u.get("toolUsePromptTokenCount"), cap, "toolUsePromptTokenCount", found)
    return Usage(
        input_tokens=prompt + tool_prompt,
        output_tokens=counted(u.get("candidatesTokenCount"), cap, "candidatesTokenCount", found) + thoughts,
        cached_input_tokens=min(
            counted(u.get("cachedContentTokenCount"), cap, "cachedContentTokenCount", found), prompt
        ),
        reasoning_tokens=thoughts,
    )


class _Reader:
    """Turns GenerateContentResponse objects (one whole answer, or a stream's chunks) into events."""

    __slots__ = ("calls", "finished", "started")

    def __init__(self) -> None:
        self.started = False
        self.calls = 0
        self.finished = False

    def read(self, data: Any) -> list[ChatEvent]:
        if not isinstance(data, dict):
            raise ValueError("not an object")
        if data.get("error"):
            raise stream_error(data["error"])
        events: list[ChatEvent] = []
        if not self.started:
            self.started = True
            events.append(Start(str(data.get("responseId") or ""), str(data.get("modelVersion") or "")))
        candidates = data.get("candidates")
        if not candidates:
            blocked = (data.get("promptFeedback") or {}).get("blockReason")
            if blocked:
                raise ProviderError(ErrorKind.content_filter, f"Gemini blocked the prompt: {blocked}")
            return events
        candidate = candidates[0]
        for part in (candidate.get("content") or {}).get("parts") or []:
            events.extend(self._part(part))
        reason = candidate.get("finishReason")
        if reason and not self.finished:
            self.finished = True
            events.append(Finish(finish_reason(reason, self.calls > 0)))
        return events

    def _part(self, part: JSON) -> list[ChatEvent]:
        if part.get("thought"):
            return []  # a thought summary is not part of the OpenAI answer
        if isinstance(part.get("text"), str) and part["text"]:
            return [Text(part["text"])]
        call = part.get("functionCall")
        if isinstance(call, dict):
            n, self.calls = self.calls, self.calls + 1
            arguments = orjson.dumps(call.get("args") or {}).decode()
            call_id = str(call.get("id") or f"call_{n}")
            if isinstance(part.get("thoughtSignature"), str):
                call_id = _with_signature(call_id, part["thoughtSignature"])
            return [ToolCallDelta(n, call_id, str(call.get("name") or ""), arguments)]
        return []


_SIGNED = "_ts_"


def _with_signature(call_id: str, signature: str) -> str:
    """The signature in base64url (no padding), so the id stays within [A-Za-z0-9_-] as Anthropic's are."""
    try:
        raw = base64.b64decode(signature, validate=True)
    except (binascii.Error, ValueError):
        return call_id  # not base64: Keel cannot carry it faithfully, so it does not try
    return call_id + _SIGNED + base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _signature_of(call_id: str) -> str | None:
    _, marked, encoded = call_id.partition(_SIGNED)
    if not marked or not encoded:
        return None
    try:
        raw = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
    except (binascii.Error, ValueError):
        return None
    return base64.b64encode(raw).decode()


def events_from_response(data: Any, cap: int = MAX_TOKENS) -> list[ChatEvent]:
    """A whole answer's events; an error object, or an answer with no candidate, is an error."""
    reader = _Reader()
    try:
        events = reader.read(data)
    except (ValueError, TypeError, AttributeError, IndexError):
        raise _protocol("Gemini answer is not shaped like a GenerateContentResponse") from None
    if not reader.finished:
        raise _protocol("Gemini answer has no candidate with a finishReason")
    return events + checked_usage(data.get("usageMetadata") or {}, cap, usage_from, "usageMetadata")


def _protocol(message: str) -> ProviderError:
    return ProviderError(ErrorKind.protocol, message)


class GeminiStreamDecoder:
    """SSE chunks of `streamGenerateContent?alt=sse`. Usage comes with the finishing chunk (each chunk
    repeats the running totals, the last one wins)."""

    __slots__ = ("_cap", "_malformed", "_reader", "_usage", "done")

    def __init__(self, cap: int = MAX_TOKENS) -> None:
        self.done = False
        self._cap = cap
        self._reader = _Reader()
        self._malformed = Malformed()
        self._usage: Any = None

    def feed(self, data: bytes) -> list[ChatEvent]:
        try:
            chunk = orjson.loads(data)
            events = self._reader.read(chunk)
        except (ValueError, TypeError, AttributeError, IndexError):
            return self._malformed.skip(data, "Gemini stream chunk")
        if chunk.get("usageMetadata") is not None:
            self._usage = chunk["usageMetadata"]
        if self._reader.finished and not self.done:
            self.done = True
            events += checked_usage(self._usage or {}, self._cap, usage_from, "usageMetadata")
        return events

    def close(self) -> list[ChatEvent]:
        if not self.done:
            raise _protocol("upstream stream ended before the answer finished (no finishReason)")
        return []


# ---- errors -----------------------------------------------------------------------------------

_STATUS = {"INVALID_ARGUMENT": ErrorKind.bad_request, "FAILED_PRECONDITION": ErrorKind.bad_request}
_STATUS |= {"OUT_OF_RANGE": ErrorKind.bad_request, "UNAUTHENTICATED": ErrorKind.auth}
_STATUS |= {"PERMISSION_DENIED": ErrorKind.auth, "NOT_FOUND": ErrorKind.not_found}
_STATUS |= {"RESOURCE_EXHAUSTED": ErrorKind.rate_limited, "UNAVAILABLE": ErrorKind.overloaded}
_STATUS |= {"DEADLINE_EXCEEDED": ErrorKind.timeout, "INTERNAL": ErrorKind.server, "UNKNOWN": ErrorKind.server}
_HTTP = {400: ErrorKind.bad_request, 401: ErrorKind.auth, 403: ErrorKind.auth, 404: ErrorKind.not_found}
_HTTP |= {429: ErrorKind.rate_limited, 500: ErrorKind.server, 503: ErrorKind.overloaded, 504: ErrorKind.timeout}
# "The input token count (1048577) exceeds the maximum number of tokens allowed (1048576)."
_CONTEXT_WORDING = ("exceeds the maximum number of tokens", "input token count")


def error_from(error: Any, status: int | None) -> ProviderError:
    """A google.rpc.Status-shaped error (`code`, `message`, `status`, `details`) as a ProviderError."""
    error = error if isinstance(error, dict) else {}
    name, message = str(error.get("status") or ""), str(error.get("message") or "")
    kind = _STATUS.get(name) or _HTTP.get(status or 0)
    if kind is None:
        kind = ErrorKind.bad_request if status is not None and 400 <= status < 500 else ErrorKind.server
    details = [d for d in error.get("details") or [] if isinstance(d, dict)]
    if any(d.get("reason") == "API_KEY_INVALID" for d in details):
        kind = ErrorKind.auth  # Gemini answers a bad key with 400 INVALID_ARGUMENT
    elif kind is ErrorKind.bad_request and any(w in message.lower() for w in _CONTEXT_WORDING):
        kind = ErrorKind.context_length
    fallback = f"upstream answered HTTP {status}" if status else f"upstream error: {name or 'unknown'}"
    err = ProviderError(kind, message or fallback, status=status or 200)
    err.retry_after = _retry_delay(details)
    return err


def _retry_delay(details: list[JSON]) -> float | None:
    """google.rpc.RetryInfo's `retryDelay` ("37s")."""
    for d in details:
        delay = d.get("retryDelay")
        if str(d.get("@type", "")).endswith("RetryInfo") and isinstance(delay, str) and delay.endswith("s"):
            try:
                return max(0.0, float(delay[:-1]))
            except ValueError:
                return None
    return None


def stream_error(error: Any) -> ProviderError:
    return error_from(error, None)


def classify(status: int, body: bytes, headers: Mapping[str, str]) -> ProviderError:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        data = None
    err = error_from(data.get("error") if isinstance(data, dict) else None, status)
    err.retry_after = retry_after(headers) or err.retry_after
    return err


# ---- the codec --------------------------------------------------------------------------------


def _load(body: bytes, what: str) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        raise _protocol(f"malformed Gemini {what}: {body[:80]!r}") from None


class GeminiCodec:
    def encode_chat(self, request: ChatRequest, target: Target, stream: bool) -> Outbound:
        path = model_path(target.model, "streamGenerateContent?alt=sse" if stream else "generateContent")
        body, dropped = request_json(request, target.model)
        return Outbound(path, orjson.dumps(body), notes=dropped_notes(dropped))

    def decode_chat(self, body: bytes, cap: int = MAX_TOKENS) -> list[ChatEvent]:
        return events_from_response(_load(body, "answer"), cap)

    def stream_decoder(self, cap: int = MAX_TOKENS) -> GeminiStreamDecoder:
        return GeminiStreamDecoder(cap)

    def encode_embed(self, request: EmbeddingRequest, target: Target) -> Outbound:
        if request.tokens:
            raise ProviderError(ErrorKind.bad_request, "Gemini targets embed text, not token arrays.", param="input")
        name = "models/" + target.model.removeprefix("models/")
        dimensions = request.extra.get("dimensions")
        requests = []
        for text in request.inputs:
            one: JSON = {"model": name, "content": {"parts": [{"text": text}]}}
            if isinstance(dimensions, int):
                one["outputDimensionality"] = dimensions
            requests.append(one)
        return Outbound(model_path(target.model, "batchEmbedContents"), orjson.dumps({"requests": requests}))

    def decode_embed(self, body: bytes) -> EmbeddingResponse:
        """Gemini reports no token count for embeddings: the usage is zero (and so is the cost)."""
        data = _load(body, "embeddings")
        try:
            vectors = tuple(tuple(float(x) for x in e["values"]) for e in data["embeddings"])
        except (KeyError, TypeError, ValueError):
            raise _protocol("Gemini embeddings answer has no embeddings[].values") from None
        return EmbeddingResponse("", vectors, Usage())

    classify = staticmethod(classify)
