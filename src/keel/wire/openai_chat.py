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
from keel.types import (
    JSON,
    PREFIX,
    ChatEvent,
    ChatRequest,
    ChatResponse,
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
from keel.wire.base import MAX_TOKENS, Malformed, Outbound, counted, retry_after, usage_events
from keel.wire.translate import ANTHROPIC, dropped_notes, to_openai

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
    """Validate an OpenAI chat body; raise InvalidRequest naming the offending field.

    Every value Keel itself reads later (adapters, the token estimate, the simulated provider, the
    trace) is type-checked here, so a body that passes cannot fail further in: a 400, never a 500.
    """
    # A call naming a prompt (keel.prompts) may leave out `model` and `messages`: the prompt slot fills them.
    prompted = isinstance(body, dict) and isinstance(body.get("prompt"), dict)
    model = "" if prompted and body.get("model") in (None, "") else require_model(body)
    raw_messages = body.get("messages", [] if prompted else None)
    if not isinstance(raw_messages, list) or not (raw_messages or prompted):
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
        _check_tool(t, i)
    n = body.get("n")
    if n is not None and (type(n) is not int or n != 1):  # `True == 1`: a boolean is not a count
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


def parse_message(m: Any, i: int) -> Message:
    """One chat message, checked as a client's `messages[i]` is (the prompt slot's rendered messages)."""
    return _parse_message(m, i)


def _typed(body: JSON, key: str, kind: type, default: Any) -> Any:
    value = body.get(key, default)
    if value is not None and not isinstance(value, kind):
        raise InvalidRequest(f"'{key}' must be of type {_JSON_NAME[kind]}.", key)
    return value


_JSON_NAME = {bool: "boolean", dict: "object", list: "array", str: "string"}


def _positive_int(body: JSON, key: str) -> int | None:
    """A token count: 1 up to MAX_TOKENS (more than any model's window; beyond it is a mistake, and
    would inflate every budget reservation made from it)."""
    value = body.get(key)
    if value is not None and (type(value) is not int or not 1 <= value <= MAX_TOKENS):
        raise InvalidRequest(f"'{key}' must be an integer from 1 to {MAX_TOKENS}.", key)
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
    if value is None or isinstance(value, dict) or (type(value) is str and value in ("auto", "none", "required")):
        return value
    raise InvalidRequest("'tool_choice' must be 'auto', 'none', 'required' or an object.", "tool_choice")


def _check_tool(t: Any, i: int) -> None:
    fn = t.get("function") if type(t) is dict else None
    if type(fn) is not dict or type(fn.get("name")) is not str or not fn["name"]:
        raise InvalidRequest("Each tool needs a 'function' object with a 'name'.", f"tools[{i}].function.name")
    parameters, description = fn.get("parameters"), fn.get("description")
    if parameters is not None and type(parameters) is not dict:
        raise InvalidRequest("A tool's 'parameters' must be a JSON Schema object.", f"tools[{i}].function.parameters")
    if description is not None and type(description) is not str:
        raise InvalidRequest("A tool's 'description' must be a string.", f"tools[{i}].function.description")


def _parse_message(m: Any, i: int) -> Message:
    if type(m) is not dict:
        raise InvalidRequest("Each message must be an object.", f"messages[{i}]")
    role = m.get("role")
    if type(role) is not str or role not in _ROLES:
        raise InvalidRequest(
            "Each message needs a 'role': system, developer, user, assistant or tool.", f"messages[{i}].role"
        )
    content = m.get("content")
    if type(content) is list:
        _check_parts(content, i)
    elif content is not None and type(content) is not str:
        raise InvalidRequest("'content' must be a string or an array of content parts.", f"messages[{i}].content")
    if content is None and role in ("system", "developer", "user", "tool"):
        raise InvalidRequest(f"A {role} message needs 'content'.", f"messages[{i}].content")
    raw_calls = m.get("tool_calls")
    calls = _tool_calls(raw_calls, i) if raw_calls else ()
    name, call_id = m.get("name"), m.get("tool_call_id")
    if name is not None and type(name) is not str:
        raise InvalidRequest("A message's 'name' must be a string.", f"messages[{i}].name")
    if (role == "tool" or call_id is not None) and type(call_id) is not str:
        raise InvalidRequest("A tool message needs 'tool_call_id', a string.", f"messages[{i}].tool_call_id")
    extra = {k: v for k, v in m.items() if k not in _MESSAGE_KNOWN} or None
    return Message(role, content, name, calls, call_id, extra)


def _check_parts(parts: list[Any], i: int) -> None:
    """Content parts are objects with a string `type`; the kinds Keel reads (text, image_url) are
    shaped as OpenAI documents them. Other kinds (audio, files) pass through to the upstream."""
    for j, part in enumerate(parts):
        kind = part.get("type") if type(part) is dict else None
        if kind == "text":
            if type(part.get("text")) is not str:
                raise InvalidRequest("A text part needs a string 'text'.", f"messages[{i}].content[{j}].text")
        elif kind == "image_url":
            image = part.get("image_url")
            if type(image) is not str and (type(image) is not dict or type(image.get("url")) is not str):
                raise InvalidRequest(
                    'An image part needs \'image_url\': {"url": "..."}.', f"messages[{i}].content[{j}].image_url"
                )
        elif type(kind) is not str:
            raise InvalidRequest(
                "Each content part must be an object with a string 'type'.", f"messages[{i}].content[{j}]"
            )


def _tool_calls(raw: Any, i: int) -> tuple[ToolCall, ...]:
    if type(raw) is not list:
        raise InvalidRequest("'tool_calls' must be an array.", f"messages[{i}].tool_calls")
    calls = []
    for j, c in enumerate(raw):
        fn = c.get("function") if type(c) is dict else None
        call_id, name, arguments = (c.get("id"), fn.get("name"), fn.get("arguments")) if type(fn) is dict else ("",) * 3
        if type(fn) is not dict or type(call_id) is not str or type(name) is not str or not name:
            raise _bad_call(c, i, j)
        if arguments is not None and type(arguments) is not str:
            raise InvalidRequest(
                "A tool call's 'function.arguments' must be a string of JSON.",
                f"messages[{i}].tool_calls[{j}].function.arguments",
            )
        calls.append(ToolCall(call_id, name, arguments or ""))
    return tuple(calls)


def _bad_call(c: Any, i: int, j: int) -> InvalidRequest:
    """Which part of tool call j of message i is wrong (off the hot path: only for a refusal)."""
    where = f"messages[{i}].tool_calls[{j}]"
    fn = c.get("function") if type(c) is dict else None
    if type(fn) is not dict:
        return InvalidRequest("Each tool call needs 'id' and a 'function' object.", f"{where}.function")
    if type(c.get("id")) is not str:
        return InvalidRequest("A tool call's 'id' must be a string.", f"{where}.id")
    return InvalidRequest("A tool call's 'function.name' must be a non-empty string.", f"{where}.function.name")


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


def usage_from(u: Any, cap: int = MAX_TOKENS, problems: list[str] | None = None) -> Usage | None:
    """Usage in Keel's convention, each count checked (`counted`); the clamped ones land in `problems`."""
    if not u:
        return None
    found = problems if problems is not None else []
    if not isinstance(u, dict):
        found.append(f"usage={str(u)[:24]}")
        return Usage()
    prompt = _object(u.get("prompt_tokens_details"))
    completion = _object(u.get("completion_tokens_details"))
    return Usage(
        input_tokens=counted(u.get("prompt_tokens"), cap, "prompt_tokens", found),
        output_tokens=counted(u.get("completion_tokens"), cap, "completion_tokens", found),
        cached_input_tokens=counted(prompt.get("cached_tokens"), cap, "cached_tokens", found),
        cache_write_tokens=counted(prompt.get("cache_write_tokens"), cap, "cache_write_tokens", found),
        reasoning_tokens=counted(completion.get("reasoning_tokens"), cap, "reasoning_tokens", found),
    )


def _object(value: Any) -> JSON:
    return value if isinstance(value, dict) else {}


def _usage_events(u: Any, cap: int) -> list[ChatEvent]:
    problems: list[str] = []
    usage = usage_from(u, cap, problems)
    return [] if usage is None else usage_events(usage, problems)


def events_from_response(data: Any, cap: int = MAX_TOKENS) -> list[ChatEvent]:
    """A whole answer's events. An error object, or no choice to answer with, is an upstream error even
    under HTTP 200: passing it on as an empty completion would be a lie."""
    if not isinstance(data, dict):
        raise _protocol("upstream answer is not a JSON object")
    if data.get("error"):
        raise error_from(data["error"], 200)
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise _protocol("upstream answer has no choices")
    msg = choices[0].get("message")
    if not isinstance(msg, dict):
        raise _protocol("upstream answer's choice has no message")
    try:
        events: list[ChatEvent] = [Start(data.get("id") or "", data.get("model") or "")]
        events += _reasoning(msg)
        if msg.get("content"):
            events.append(Text(msg["content"]))
        for i, c in enumerate(msg.get("tool_calls") or []):
            fn = c.get("function") or {}
            events.append(ToolCallDelta(i, c.get("id"), fn.get("name"), fn.get("arguments") or ""))
        events.append(Finish(choices[0].get("finish_reason") or "stop"))
        return events + _usage_events(data.get("usage"), cap)
    except (AttributeError, TypeError):
        raise _protocol("upstream answer is not shaped like a chat completion") from None


def _reasoning(message: JSON) -> list[ChatEvent]:
    """The thinking text of a message or delta: `reasoning_content` (DeepSeek, vLLM) or `reasoning`
    (OpenRouter, newer vLLM)."""
    text = message.get("reasoning_content") or message.get("reasoning")
    return [Reasoning(text)] if isinstance(text, str) and text else []


def _protocol(message: str) -> ProviderError:
    return ProviderError(ErrorKind.protocol, message)


class OpenAIStreamDecoder:
    """Chunks → events. Complete once a finish reason (or `[DONE]` after content) has come; a chunk that
    is not JSON or not shaped like one is malformed (`Malformed`: one is skipped, two fail the stream)."""

    __slots__ = ("_cap", "_content", "_malformed", "_started", "done")

    def __init__(self, cap: int = MAX_TOKENS) -> None:
        self.done = False
        self._started = False
        self._content = False
        self._cap = cap
        self._malformed = Malformed()

    def feed(self, data: bytes) -> list[ChatEvent]:
        if data == b"[DONE]":
            self.done = self.done or self._content
            return []
        try:
            chunk = orjson.loads(data)
            if chunk.get("error"):
                raise error_from(chunk["error"], 200)
            return self._events(chunk)
        except (ValueError, TypeError, AttributeError):  # orjson.JSONDecodeError is a ValueError
            return self._malformed.skip(data, "stream chunk")

    def _events(self, chunk: JSON) -> list[ChatEvent]:
        events: list[ChatEvent] = [] if self._started else [Start(chunk.get("id") or "", chunk.get("model") or "")]
        head = len(events)
        for choice in chunk.get("choices") or ():
            delta = choice.get("delta") or {}
            events += _reasoning(delta)
            if delta.get("content"):
                events.append(Text(delta["content"]))
            for c in delta.get("tool_calls") or ():
                fn = c.get("function") or {}
                events.append(ToolCallDelta(c.get("index", 0), c.get("id"), fn.get("name"), fn.get("arguments") or ""))
            if choice.get("finish_reason"):
                events.append(Finish(choice["finish_reason"]))
                self.done = True
        self._started = True
        self._content = self._content or len(events) > head
        if chunk.get("usage"):
            events += _usage_events(chunk["usage"], self._cap)
        return events

    def close(self) -> list[ChatEvent]:
        if not self.done:
            raise _protocol("upstream stream ended before the answer finished (no finish reason)")
        return []


# ---- errors -----------------------------------------------------------------------------------

_STATUS_KIND = {401: ErrorKind.auth, 403: ErrorKind.auth, 404: ErrorKind.not_found, 408: ErrorKind.timeout}
_STATUS_KIND |= {409: ErrorKind.overloaded, 429: ErrorKind.rate_limited, 500: ErrorKind.server}
_STATUS_KIND |= {
    502: ErrorKind.overloaded,
    503: ErrorKind.overloaded,
    504: ErrorKind.timeout,
    529: ErrorKind.overloaded,
}
# An error object's own `code` or `type`, for errors that come under HTTP 200 (in a body or a stream).
_CODE_KIND = {"rate_limit_exceeded": ErrorKind.rate_limited, "rate_limit_error": ErrorKind.rate_limited}
_CODE_KIND |= {"requests": ErrorKind.rate_limited, "tokens": ErrorKind.rate_limited}
_CODE_KIND |= {"overloaded": ErrorKind.overloaded, "overloaded_error": ErrorKind.overloaded}
_CODE_KIND |= {"service_unavailable": ErrorKind.overloaded, "timeout": ErrorKind.timeout}
_CODE_KIND |= {"server_error": ErrorKind.server, "api_error": ErrorKind.server, "internal_error": ErrorKind.server}
_CODE_KIND |= {"invalid_request_error": ErrorKind.bad_request, "invalid_api_key": ErrorKind.auth}
_CODE_KIND |= {"authentication_error": ErrorKind.auth, "permission_error": ErrorKind.auth}
_CODE_KIND |= {"model_not_found": ErrorKind.not_found, "not_found_error": ErrorKind.not_found}


def error_from(err: Any, status: int) -> ProviderError:
    """A ProviderError from an OpenAI-style error object (or string) that came with HTTP `status`.

    Under a 200 the HTTP status says nothing: the object's numeric code (some servers put the HTTP
    status there), then its `code` or `type`, decide; an unknown error is a server error.
    """
    message, code, param, said = f"upstream answered HTTP {status}", "", None, status
    if isinstance(err, dict):
        message = str(err.get("message") or message)
        code = str(err.get("code") or err.get("type") or "")
        param = None if err.get("param") is None else str(err["param"])
        if status < 400:
            said = next((v for v in (err.get("code"), err.get("status")) if type(v) is int and v >= 400), status)
    elif isinstance(err, str) and err:
        message = err
    if said >= 400:
        kind = _STATUS_KIND.get(said, ErrorKind.server if said >= 500 else ErrorKind.bad_request)
    else:
        kind = _CODE_KIND.get(code, ErrorKind.server)
    if "context_length" in code or "maximum context length" in message:
        kind = ErrorKind.context_length
    elif "content_filter" in code or "content_policy" in code:
        kind = ErrorKind.content_filter
    return ProviderError(kind, message, status=status, param=param)


def classify(status: int, body: bytes, headers: Mapping[str, str]) -> ProviderError:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        data = None
    err = error_from(data.get("error") if isinstance(data, dict) else None, status)
    err.retry_after = retry_after(headers)
    return err


# ---- the codec --------------------------------------------------------------------------------


class OpenAIChatCodec:
    def __init__(self, quirks: frozenset[str] = frozenset(), api_version: str | None = None) -> None:
        self._stream_usage = "no_stream_options" not in quirks
        self._azure = "azure_deployments" in quirks
        self._continue_final = "continue_final_message" in quirks
        self._quirks = quirks
        self._query = f"?api-version={api_version}" if api_version else ""

    def _path(self, target: Target, leaf: str) -> str:
        if self._azure:
            return f"/openai/deployments/{target.model}/{leaf}{self._query}"
        return f"/{leaf}{self._query}"

    def encode_chat(self, request: ChatRequest, target: Target, stream: bool) -> Outbound:
        dropped: list[str] = []
        if request.dialect == ANTHROPIC:
            request, dropped = to_openai(request, self._quirks)
        body = request_json(request, target.model, stream, self._stream_usage)
        if self._continue_final and (request.messages[-1].extra or {}).get(PREFIX) is True:
            del body["messages"][-1][PREFIX]  # vLLM's dialect of a prefill: two request flags
            body["continue_final_message"], body["add_generation_prompt"] = True, False
        return Outbound(self._path(target, "chat/completions"), orjson.dumps(body), notes=dropped_notes(dropped))

    def decode_chat(self, body: bytes, cap: int = MAX_TOKENS) -> list[ChatEvent]:
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise _protocol("upstream answered with invalid JSON") from None
        return events_from_response(data, cap)

    def stream_decoder(self, cap: int = MAX_TOKENS) -> OpenAIStreamDecoder:
        return OpenAIStreamDecoder(cap)

    def encode_embed(self, request: EmbeddingRequest, target: Target) -> Outbound:
        inputs = list(request.inputs) if request.inputs else [list(t) for t in request.tokens]
        body = {"model": target.model, "input": inputs, **request.extra}
        return Outbound(self._path(target, "embeddings"), orjson.dumps(body))

    def decode_embed(self, body: bytes) -> EmbeddingResponse:
        try:
            data = orjson.loads(body)
            rows = sorted(data["data"], key=lambda r: r.get("index", 0))
            vectors = tuple(tuple(r["embedding"]) for r in rows)
        except (orjson.JSONDecodeError, KeyError, TypeError):
            raise ProviderError(ErrorKind.protocol, "upstream embeddings answer is malformed") from None
        u = data.get("usage") or {}
        tokens = counted(u.get("prompt_tokens") if isinstance(u, dict) else None, MAX_TOKENS, "prompt_tokens", [])
        return EmbeddingResponse(data.get("model") or "", vectors, Usage(input_tokens=tokens))

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
    thinking = "".join(b.get("thinking") or "" for b in r.reasoning)
    if thinking:
        message["reasoning_content"] = thinking  # DeepSeek's, vLLM's and LiteLLM's name for it
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
    elif isinstance(event, Reasoning):
        if not event.text:
            return None  # a signature or a redacted block has no OpenAI form
        delta, finish = {"reasoning_content": event.text}, None
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
