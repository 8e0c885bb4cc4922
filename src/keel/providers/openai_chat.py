"""The OpenAI chat-completions wire format, both directions, with no I/O.

Used by the HTTP edge (parse client bodies, render responses) and by the codec that talks to
OpenAI-compatible upstreams. Unknown request and message fields ride in `extra` and are written
back untouched, so new OpenAI parameters reach the upstream without a Keel release.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from keel.errors import ErrorKind, InvalidRequest, ProviderError
from keel.providers.base import Outbound, retry_after
from keel.types import (
    JSON,
    ChatEvent,
    ChatRequest,
    ChatResponse,
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
    UsageEvent,
)

_KNOWN = frozenset(
    {"model", "messages", "stream", "stream_options", "max_tokens", "temperature", "top_p"}
    | {"stop", "tools", "tool_choice", "response_format", "user", "metadata"}
)
_MESSAGE_KNOWN = frozenset({"role", "content", "name", "tool_calls", "tool_call_id"})
_ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})


# ---- client JSON -> ChatRequest -------------------------------------------------------------


def require_model(body: Any) -> str:
    """Every model endpoint's first check: a JSON object with a non-empty `model`."""
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.", None)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest("'model' is required and must be a non-empty string.", "model")
    return model


def parse_request(body: Any) -> ChatRequest:
    """Validate an OpenAI chat body; raise InvalidRequest naming the offending field."""
    model = require_model(body)
    raw_messages = body.get("messages")
    if not isinstance(raw_messages, list) or not raw_messages:
        raise InvalidRequest("'messages' is required and must be a non-empty array.", "messages")
    messages = tuple(_parse_message(m, i) for i, m in enumerate(raw_messages))
    stream = _typed(body, "stream", bool, False)
    options = _typed(body, "stream_options", dict, None)
    max_tokens = _positive_int(body, "max_tokens")
    _positive_int(body, "max_completion_tokens")  # kept in extra: some models accept only this name
    stop = body.get("stop")
    if isinstance(stop, str):
        stop = [stop]
    if stop is not None and not (isinstance(stop, list) and all(isinstance(s, str) for s in stop)):
        raise InvalidRequest("'stop' must be a string or an array of strings.", "stop")
    tools = _typed(body, "tools", list, None) or []
    for i, t in enumerate(tools):
        if not (
            isinstance(t, dict) and isinstance(t.get("function"), dict) and isinstance(t["function"].get("name"), str)
        ):
            raise InvalidRequest("Each tool needs a 'function' object with a 'name'.", f"tools[{i}].function.name")
    n = body.get("n")
    if n not in (None, 1):
        raise InvalidRequest("Only n=1 is supported.", "n")
    return ChatRequest(
        model=model,
        messages=messages,
        stream=stream,
        include_usage=bool(options and options.get("include_usage")),
        max_tokens=max_tokens,
        temperature=_number(body, "temperature", 0, 2),
        top_p=_number(body, "top_p", 0, 1),
        stop=tuple(stop or ()),
        tools=tuple(tools),
        tool_choice=_tool_choice(body.get("tool_choice")),
        response_format=_typed(body, "response_format", dict, None),
        user=_typed(body, "user", str, None),
        metadata=_typed(body, "metadata", dict, None),
        extra={k: v for k, v in body.items() if k not in _KNOWN},
    )


def _typed(body: JSON, key: str, kind: type, default: Any) -> Any:
    value = body.get(key, default)
    if value is not None and not isinstance(value, kind):
        raise InvalidRequest(f"'{key}' must be of type {_JSON_NAME[kind]}.", key)
    return value


_JSON_NAME = {bool: "boolean", dict: "object", list: "array", str: "string"}


def _positive_int(body: JSON, key: str) -> int | None:
    value = body.get(key)
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
        raise InvalidRequest(f"'{key}' must be a positive integer.", key)
    return value


def output_cap(request: ChatRequest) -> int | None:
    """The most output tokens the caller allowed, whichever OpenAI name they used."""
    cap = request.max_tokens or request.extra.get("max_completion_tokens")
    return cap if isinstance(cap, int) else None


def _number(body: JSON, key: str, lo: float, hi: float) -> float | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not lo <= value <= hi:
        raise InvalidRequest(f"'{key}' must be a number between {lo} and {hi}.", key)
    return float(value)


def _tool_choice(value: Any) -> str | JSON | None:
    if value is None or value in ("auto", "none", "required") or isinstance(value, dict):
        return value  # type: ignore[no-any-return]
    raise InvalidRequest("'tool_choice' must be 'auto', 'none', 'required' or an object.", "tool_choice")


def _parse_message(m: Any, i: int) -> Message:
    if not isinstance(m, dict):
        raise InvalidRequest("Each message must be an object.", f"messages[{i}]")
    role = m.get("role")
    if role not in _ROLES:
        raise InvalidRequest(
            "Each message needs a 'role': system, developer, user, assistant or tool.", f"messages[{i}].role"
        )
    content = m.get("content")
    if content is not None and not isinstance(content, str | list):
        raise InvalidRequest("'content' must be a string or an array of content parts.", f"messages[{i}].content")
    if content is None and role in ("system", "developer", "user", "tool"):
        raise InvalidRequest(f"A {role} message needs 'content'.", f"messages[{i}].content")
    calls: tuple[ToolCall, ...] = ()
    if m.get("tool_calls"):
        try:
            calls = tuple(
                ToolCall(c["id"], c["function"]["name"], c["function"].get("arguments") or "") for c in m["tool_calls"]
            )
        except (KeyError, TypeError):
            raise InvalidRequest(
                "Each tool call needs 'id' and 'function.name'.", f"messages[{i}].tool_calls"
            ) from None
    if role == "tool" and not isinstance(m.get("tool_call_id"), str):
        raise InvalidRequest("A tool message needs 'tool_call_id'.", f"messages[{i}].tool_call_id")
    extra = {k: v for k, v in m.items() if k not in _MESSAGE_KNOWN} or None
    return Message(role, content, m.get("name"), calls, m.get("tool_call_id"), extra)


# ---- ChatRequest -> upstream JSON -------------------------------------------------------------


def request_json(request: ChatRequest, model: str, stream: bool, stream_usage: bool = True) -> JSON:
    body: JSON = {"model": model, "messages": [message_json(m) for m in request.messages]}
    if stream:
        body["stream"] = True
        if stream_usage:
            body["stream_options"] = {"include_usage": True}
    optional = (
        ("max_tokens", request.max_tokens),
        ("temperature", request.temperature),
        ("top_p", request.top_p),
        ("stop", list(request.stop) or None),
        ("tools", list(request.tools) or None),
        ("tool_choice", request.tool_choice),
        ("response_format", request.response_format),
        ("user", request.user),
        ("metadata", request.metadata),
    )
    body.update((k, v) for k, v in optional if v is not None)
    body.update(request.extra)
    return body


def message_json(m: Message) -> JSON:
    out: JSON = {"role": m.role, "content": m.content}
    if m.name is not None:
        out["name"] = m.name
    if m.tool_calls:
        out["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in m.tool_calls
        ]
    if m.tool_call_id is not None:
        out["tool_call_id"] = m.tool_call_id
    if m.extra:
        out.update(m.extra)
    return out


# ---- upstream JSON -> events ------------------------------------------------------------------


def usage_from(u: JSON | None) -> Usage | None:
    if not u:
        return None
    prompt = u.get("prompt_tokens_details") or {}
    completion = u.get("completion_tokens_details") or {}
    return Usage(
        input_tokens=u.get("prompt_tokens") or 0,
        output_tokens=u.get("completion_tokens") or 0,
        cached_input_tokens=prompt.get("cached_tokens") or 0,
        cache_write_tokens=prompt.get("cache_write_tokens") or 0,
        reasoning_tokens=completion.get("reasoning_tokens") or 0,
    )


def events_from_response(data: JSON) -> list[ChatEvent]:
    events: list[ChatEvent] = [Start(data.get("id") or "", data.get("model") or "")]
    choices = data.get("choices") or []
    if choices:
        msg = choices[0].get("message") or {}
        if msg.get("content"):
            events.append(Text(msg["content"]))
        for i, c in enumerate(msg.get("tool_calls") or []):
            fn = c.get("function") or {}
            events.append(ToolCallDelta(i, c.get("id"), fn.get("name"), fn.get("arguments") or ""))
        events.append(Finish(choices[0].get("finish_reason") or "stop"))
    usage = usage_from(data.get("usage"))
    if usage is not None:
        events.append(UsageEvent(usage))
    return events


class OpenAIStreamDecoder:
    __slots__ = ("_started", "done")

    def __init__(self) -> None:
        self.done = False
        self._started = False

    def feed(self, data: bytes) -> list[ChatEvent]:
        if data == b"[DONE]":
            self.done = True
            return []
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise ProviderError(ErrorKind.protocol, f"malformed stream chunk: {data[:80]!r}") from None
        if not isinstance(chunk, dict):
            raise ProviderError(ErrorKind.protocol, "stream chunk is not an object")
        if "error" in chunk:
            err = chunk["error"] or {}
            raise ProviderError(ErrorKind.server, f"upstream stream error: {err.get('message', err)}")
        events: list[ChatEvent] = []
        if not self._started:
            self._started = True
            events.append(Start(chunk.get("id") or "", chunk.get("model") or ""))
        for choice in chunk.get("choices") or ():
            delta = choice.get("delta") or {}
            if delta.get("content"):
                events.append(Text(delta["content"]))
            for c in delta.get("tool_calls") or ():
                fn = c.get("function") or {}
                events.append(ToolCallDelta(c.get("index", 0), c.get("id"), fn.get("name"), fn.get("arguments") or ""))
            if choice.get("finish_reason"):
                events.append(Finish(choice["finish_reason"]))
        usage = usage_from(chunk.get("usage"))
        if usage is not None:
            events.append(UsageEvent(usage))
        return events


# ---- errors -----------------------------------------------------------------------------------

_STATUS_KIND = {401: ErrorKind.auth, 403: ErrorKind.auth, 404: ErrorKind.not_found, 408: ErrorKind.timeout}
_STATUS_KIND |= {409: ErrorKind.overloaded, 429: ErrorKind.rate_limited, 500: ErrorKind.server}
_STATUS_KIND |= {
    502: ErrorKind.overloaded,
    503: ErrorKind.overloaded,
    504: ErrorKind.timeout,
    529: ErrorKind.overloaded,
}


def classify(status: int, body: bytes, headers: Mapping[str, str]) -> ProviderError:
    message, code, param = f"upstream answered HTTP {status}", "", None
    try:
        err = orjson.loads(body).get("error") or {}
        if isinstance(err, dict):
            message = str(err.get("message") or message)
            code = str(err.get("code") or err.get("type") or "")
            param = err.get("param")
        elif isinstance(err, str):
            message = err
    except (orjson.JSONDecodeError, AttributeError):
        pass
    kind = _STATUS_KIND.get(status, ErrorKind.server if status >= 500 else ErrorKind.bad_request)
    if "context_length" in code or "maximum context length" in message:
        kind = ErrorKind.context_length
    elif "content_filter" in code or "content_policy" in code:
        kind = ErrorKind.content_filter
    return ProviderError(kind, message, status=status, retry_after=retry_after(headers), param=param)


# ---- the codec --------------------------------------------------------------------------------


class OpenAIChatCodec:
    def __init__(self, quirks: frozenset[str] = frozenset(), api_version: str | None = None) -> None:
        self._stream_usage = "no_stream_options" not in quirks
        self._azure = "azure_deployments" in quirks
        self._query = f"?api-version={api_version}" if api_version else ""

    def _path(self, target: Target, leaf: str) -> str:
        if self._azure:
            return f"/openai/deployments/{target.model}/{leaf}{self._query}"
        return f"/{leaf}{self._query}"

    def encode_chat(self, request: ChatRequest, target: Target, stream: bool) -> Outbound:
        body = request_json(request, target.model, stream, self._stream_usage)
        return Outbound(self._path(target, "chat/completions"), orjson.dumps(body))

    def decode_chat(self, body: bytes) -> list[ChatEvent]:
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise ProviderError(ErrorKind.protocol, "upstream answered with invalid JSON") from None
        return events_from_response(data)

    def stream_decoder(self) -> OpenAIStreamDecoder:
        return OpenAIStreamDecoder()

    def encode_embed(self, request: EmbeddingRequest, target: Target) -> Outbound:
        body = {"model": target.model, "input": list(request.inputs), **request.extra}
        return Outbound(self._path(target, "embeddings"), orjson.dumps(body))

    def decode_embed(self, body: bytes) -> EmbeddingResponse:
        try:
            data = orjson.loads(body)
            rows = sorted(data["data"], key=lambda r: r.get("index", 0))
            vectors = tuple(tuple(r["embedding"]) for r in rows)
        except (orjson.JSONDecodeError, KeyError, TypeError):
            raise ProviderError(ErrorKind.protocol, "upstream embeddings answer is malformed") from None
        u = data.get("usage") or {}
        return EmbeddingResponse(data.get("model") or "", vectors, Usage(input_tokens=u.get("prompt_tokens") or 0))

    classify = staticmethod(classify)


# ---- Keel -> client JSON (used by the HTTP edge) ------------------------------------------------


def usage_json(u: Usage) -> JSON:
    return {
        "prompt_tokens": u.input_tokens,
        "completion_tokens": u.output_tokens,
        "total_tokens": u.input_tokens + u.output_tokens,
        "prompt_tokens_details": {"cached_tokens": u.cached_input_tokens},
        "completion_tokens_details": {"reasoning_tokens": u.reasoning_tokens},
    }


def response_json(r: ChatResponse, alias: str, created: int) -> JSON:
    message: JSON = {"role": "assistant", "content": r.content}
    if r.tool_calls:
        message["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in r.tool_calls
        ]
    out: JSON = {
        "id": r.id,
        "object": "chat.completion",
        "created": created,
        "model": alias,
        "choices": [{"index": 0, "message": message, "finish_reason": r.finish_reason, "logprobs": None}],
    }
    if r.usage is not None:
        out["usage"] = usage_json(r.usage)
    return out


def chunk_json(rid: str, alias: str, created: int, event: ChatEvent) -> JSON | None:
    """One client SSE chunk for an event; None for events that have no chunk of their own."""
    if isinstance(event, Text):
        delta: JSON = {"content": event.text}
        finish = None
    elif isinstance(event, ToolCallDelta):
        call: JSON = {"index": event.index, "function": {"arguments": event.arguments}}
        if event.id:
            call["id"], call["type"] = event.id, "function"
        if event.name:
            call["function"]["name"] = event.name
        delta, finish = {"tool_calls": [call]}, None
    elif isinstance(event, Finish):
        delta, finish = {}, event.reason
    elif isinstance(event, Start):
        delta, finish = {"role": "assistant", "content": ""}, None
    else:
        return None
    return {
        "id": rid,
        "object": "chat.completion.chunk",
        "created": created,
        "model": alias,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
    }


def usage_chunk_json(rid: str, alias: str, created: int, usage: Usage) -> JSON:
    return {
        "id": rid,
        "object": "chat.completion.chunk",
        "created": created,
        "model": alias,
        "choices": [],
        "usage": usage_json(usage),
    }
