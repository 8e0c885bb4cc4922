"""The codec for upstreams that speak the OpenAI Responses API (catalog wire `openai_responses`), no I/O.

Keel's `ChatRequest` goes out as a Responses body: messages become input items (tool calls
`function_call`, tool results `function_call_output`), function tools keep chat's non-strict default
(`strict: false` unless asked), `response_format` becomes `text.format`, `max_tokens` becomes
`max_output_tokens`, `reasoning_effort` becomes `reasoning.effort`, and the chat fields the Responses
API shares (`parallel_tool_calls`, `service_tier`, `safety_identifier`, `prompt_cache_key`, …) ride
as they are. `store: false`: Keel keeps conversation state itself. `stop` has no Responses
counterpart and changes the answer: a 400 naming it; other chat-only fields are dropped and named in
the trace's `keel.dropped` tag. Answers (JSON or the Responses event stream) become ChatEvents:
reasoning, text, tool calls, the finish reason from the status, usage. Embeddings and errors are the
chat codec's (the same API serves them).
"""

from __future__ import annotations

from collections.abc import Mapping
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
    Reasoning,
    Start,
    Target,
    Text,
    ToolCallDelta,
    Usage,
)
from keel.wire.base import MAX_TOKENS, Malformed, Outbound, counted, usage_events
from keel.wire.openai_chat import OpenAIChatCodec, classify, error_from, output_cap
from keel.wire.translate import ANTHROPIC, dropped_notes, to_openai

_SHARED = ("parallel_tool_calls", "service_tier", "safety_identifier", "prompt_cache_key", "prompt_cache_retention")
_READ = frozenset({"reasoning_effort", "verbosity", "max_completion_tokens", "stream_options", *_SHARED})


# ---- ChatRequest -> Responses JSON ---------------------------------------------------------------


def request_json(request: ChatRequest, model: str, stream: bool, dropped: list[str]) -> JSON:
    if request.stop:
        raise InvalidRequest("'stop' cannot be carried to a Responses API target without changing the answer.", "stop")
    body: JSON = {"model": model, "input": _items(request.messages), "store": False}
    if stream:
        body["stream"] = True
    extra = request.extra
    text: JSON = {}
    fmt = _format(request.response_format)
    if fmt is not None:
        text["format"] = fmt
    if extra.get("verbosity") is not None:
        text["verbosity"] = extra["verbosity"]
    optional = (
        ("max_output_tokens", output_cap(request)),
        ("temperature", request.temperature),
        ("top_p", request.top_p),
        ("tools", [_tool(t) for t in request.tools] or None),
        ("tool_choice", _tool_choice(request.tool_choice) if request.tools else None),
        ("text", text or None),
        ("reasoning", {"effort": extra["reasoning_effort"]} if extra.get("reasoning_effort") else None),
        ("user", request.user),
        ("metadata", request.metadata),
        *((k, extra.get(k)) for k in _SHARED),
    )
    body.update((k, v) for k, v in optional if v is not None)
    dropped.extend(k for k in extra if k not in _READ)
    return body


def _items(messages: tuple[Message, ...]) -> list[JSON]:
    items: list[JSON] = []
    for m in messages:
        if m.role == "tool":
            output = m.content if isinstance(m.content, str) else [_part(p) for p in m.content or ()]
            items.append({"type": "function_call_output", "call_id": m.tool_call_id, "output": output})
            continue
        if m.content:
            content = m.content if isinstance(m.content, str) else [_part(p, m.role) for p in m.content]
            items.append({"type": "message", "role": m.role, "content": content})
        items += [
            {"type": "function_call", "call_id": c.id, "name": c.name, "arguments": c.arguments} for c in m.tool_calls
        ]
    return items


def _part(part: JSON, role: str = "user") -> JSON:
    kind = part.get("type")
    if kind == "text":
        return {"type": "output_text" if role == "assistant" else "input_text", "text": part.get("text", "")}
    if kind == "image_url":
        image = part.get("image_url")
        url = image.get("url") if isinstance(image, dict) else image
        detail = image.get("detail", "auto") if isinstance(image, dict) else "auto"
        return {"type": "input_image", "image_url": url, "detail": detail}
    if kind == "file":
        file: JSON = part["file"] if isinstance(part.get("file"), dict) else {}
        return {"type": "input_file", **{k: v for k, v in file.items() if k in ("file_data", "file_id", "filename")}}
    raise InvalidRequest(f"A Responses API target does not take '{kind}' content parts.", "messages")


def _tool(tool: JSON) -> JSON:
    fn = tool.get("function") or {}
    out: JSON = {"type": "function", "name": fn.get("name"), "strict": bool(fn.get("strict"))}
    out |= {k: fn[k] for k in ("description", "parameters") if fn.get(k) is not None}
    return out


def _tool_choice(choice: str | JSON | None) -> str | JSON | None:
    if isinstance(choice, dict):
        fn = choice.get("function") or {}
        return {"type": "function", "name": fn.get("name")}
    return choice


def _format(fmt: JSON | None) -> JSON | None:
    kind = (fmt or {}).get("type")
    if kind == "json_object":
        return {"type": "json_object"}
    if kind == "json_schema":
        assert fmt is not None
        schema = fmt.get("json_schema") or {}
        return {"type": "json_schema", "name": schema.get("name") or "answer", "schema": schema.get("schema") or {}} | {
            k: schema[k] for k in ("description", "strict") if schema.get(k) is not None
        }
    return None


# ---- Responses JSON -> events --------------------------------------------------------------------

_INCOMPLETE = {"max_output_tokens": "length", "content_filter": "content_filter"}


def _finish(response: JSON, calls: bool) -> Finish:
    if response.get("status") == "incomplete":
        reason = (response.get("incomplete_details") or {}).get("reason")
        return Finish(_INCOMPLETE.get(str(reason), "length"))
    return Finish("tool_calls" if calls else "stop")


def _usage(u: Any, cap: int) -> list[ChatEvent]:
    if not isinstance(u, dict):
        return []
    found: list[str] = []
    details, out = u.get("input_tokens_details") or {}, u.get("output_tokens_details") or {}
    usage = Usage(
        input_tokens=counted(u.get("input_tokens"), cap, "input_tokens", found),
        output_tokens=counted(u.get("output_tokens"), cap, "output_tokens", found),
        cached_input_tokens=counted(details.get("cached_tokens"), cap, "cached_tokens", found),
        reasoning_tokens=counted(out.get("reasoning_tokens"), cap, "reasoning_tokens", found),
    )
    return usage_events(usage, found)


def _failed(response: JSON) -> ProviderError:
    return error_from(response.get("error") or {"message": "upstream response failed"}, 200)


def events_from_response(data: Any, cap: int = MAX_TOKENS) -> list[ChatEvent]:
    if not isinstance(data, dict) or data.get("object") not in ("response", None) or "output" not in data:
        if isinstance(data, dict) and data.get("error"):
            raise error_from(data["error"], 200)
        raise ProviderError(ErrorKind.protocol, "upstream answer is not a Responses API response")
    if data.get("status") == "failed":
        raise _failed(data)
    events: list[ChatEvent] = [Start(str(data.get("id") or ""), str(data.get("model") or ""))]
    calls = 0
    for item in data.get("output") or ():
        kind = item.get("type") if isinstance(item, dict) else None
        if kind == "reasoning":
            text = "".join(p.get("text", "") for p in item.get("content") or () if isinstance(p, dict))
            if text:
                events.append(Reasoning(text))
        elif kind == "message":
            parts = item.get("content") or ()
            text = "".join(p.get("text") or p.get("refusal") or "" for p in parts if isinstance(p, dict))
            if text:
                events.append(Text(text))
        elif kind == "function_call":
            events.append(ToolCallDelta(calls, item.get("call_id"), item.get("name"), item.get("arguments") or ""))
            calls += 1
    events.append(_finish(data, calls > 0))
    return events + _usage(data.get("usage"), cap)


class ResponsesStreamDecoder:
    """The Responses event stream → ChatEvents; complete at `response.completed` or `.incomplete`."""

    def __init__(self, cap: int = MAX_TOKENS) -> None:
        self._cap = cap
        self._calls: dict[int, int] = {}  # output_index -> tool call index
        self._malformed = Malformed()
        self.done = False

    def feed(self, data: bytes) -> list[ChatEvent]:
        try:
            event = orjson.loads(data)
            return self._events(event)
        except (ValueError, TypeError, AttributeError):
            return self._malformed.skip(data, "stream event")

    def _events(self, event: JSON) -> list[ChatEvent]:
        kind = event.get("type")
        if kind == "response.created":
            response = event["response"]
            return [Start(str(response.get("id") or ""), str(response.get("model") or ""))]
        if kind == "response.output_text.delta":
            return [Text(event["delta"])] if event.get("delta") else []
        if kind in ("response.reasoning_text.delta", "response.reasoning_summary_text.delta"):
            return [Reasoning(event["delta"])] if event.get("delta") else []
        if kind == "response.output_item.added" and event["item"].get("type") == "function_call":
            item = event["item"]
            index = self._calls[event["output_index"]] = len(self._calls)
            return [ToolCallDelta(index, item.get("call_id"), item.get("name"), item.get("arguments") or "")]
        if kind == "response.function_call_arguments.delta":
            at = self._calls.get(event["output_index"])
            return [] if at is None or not event.get("delta") else [ToolCallDelta(at, arguments=event["delta"])]
        if kind in ("response.completed", "response.incomplete"):
            self.done = True
            response = event["response"]
            return [_finish(response, bool(self._calls)), *_usage(response.get("usage"), self._cap)]
        if kind == "response.failed":
            raise _failed(event["response"])
        if kind == "error":
            raise error_from(event, 200)
        return []

    def close(self) -> list[ChatEvent]:
        if not self.done:
            raise ProviderError(ErrorKind.protocol, "upstream stream ended before the response completed")
        return []


class OpenAIResponsesCodec:
    """`Codec` for a Responses API upstream; embeddings go through the chat codec (same API)."""

    def __init__(self, quirks: frozenset[str] = frozenset()) -> None:
        self._quirks = quirks
        self._chat = OpenAIChatCodec(quirks)

    def encode_chat(self, request: ChatRequest, target: Target, stream: bool) -> Outbound:
        dropped: list[str] = []
        if request.dialect == ANTHROPIC:
            request, dropped = to_openai(request, self._quirks | {"reasoning_effort"})
        body = request_json(request, target.model, stream, dropped)
        return Outbound("/responses", orjson.dumps(body), notes=dropped_notes(dropped))

    def decode_chat(self, body: bytes, cap: int = MAX_TOKENS) -> list[ChatEvent]:
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise ProviderError(ErrorKind.protocol, "upstream answered with invalid JSON") from None
        return events_from_response(data, cap)

    def stream_decoder(self, cap: int = MAX_TOKENS) -> ResponsesStreamDecoder:
        return ResponsesStreamDecoder(cap)

    def encode_embed(self, request: EmbeddingRequest, target: Target) -> Outbound:
        return self._chat.encode_embed(request, target)

    def decode_embed(self, body: bytes) -> EmbeddingResponse:
        return self._chat.decode_embed(body)

    def classify(self, status: int, body: bytes, headers: Mapping[str, str]) -> ProviderError:
        return classify(status, body, headers)
