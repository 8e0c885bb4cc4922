"""Keel's replies in Anthropic Messages format: the message JSON, its SSE events, and errors.

Usage follows Anthropic's convention: `input_tokens` excludes cache reads and cache writes, which
are reported apart. Keel's event stream ends Finish, then Usage, while Anthropic wants both in one
`message_delta`; the stream encoder therefore holds the finish reason until the events end.
"""

from __future__ import annotations

import orjson

from keel.errors import KeelError
from keel.types import JSON, ChatEvent, ChatResponse, Finish, Reasoning, Text, ToolCallDelta, Usage, UsageEvent

_STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use", "content_filter": "refusal"}
_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error"}
_ERROR_TYPES |= {404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error"}
_ERROR_TYPES |= {503: "overloaded_error", 529: "overloaded_error"}


def stop_reason(finish: str | None) -> str:
    return _STOP_REASONS.get(finish or "stop", "end_turn")


def usage_json(u: Usage | None) -> JSON:
    u = u or Usage()
    return {
        "input_tokens": max(0, u.input_tokens - u.cached_input_tokens - u.cache_write_tokens),
        "cache_creation_input_tokens": u.cache_write_tokens,
        "cache_read_input_tokens": u.cached_input_tokens,
        "output_tokens": u.output_tokens,
    }


def tool_input(arguments: str) -> JSON:
    """The parsed arguments; `{}` when the model produced none or invalid JSON (Anthropic wants an object)."""
    try:
        value = orjson.loads(arguments) if arguments.strip() else {}
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def tool_use_id(call_id: str | None, message_id: str, n: int) -> str:
    return call_id or f"toolu_{message_id.removeprefix('msg_')}_{n}"


def message_json(r: ChatResponse, message_id: str, model: str) -> JSON:
    content: list[JSON] = [dict(b) for b in r.reasoning]
    content += [{"type": "text", "text": r.content}] if r.content else []
    content += [
        {"type": "tool_use", "id": tool_use_id(c.id, message_id, n), "name": c.name, "input": tool_input(c.arguments)}
        for n, c in enumerate(r.tool_calls)
    ]
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason(r.finish_reason),
        "stop_sequence": None,
        "usage": usage_json(r.usage),
    }


def error_json(err: KeelError) -> JSON:
    kind = _ERROR_TYPES.get(err.status) or ("api_error" if err.status >= 500 else "invalid_request_error")
    message = err.message
    if err.param and err.param not in message:
        message = f"{err.param}: {message}"
    return {"type": "error", "error": {"type": kind, "message": message}}


def sse(event: str, data: JSON) -> bytes:
    return b"event: " + event.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


class StreamEncoder:
    """ChatEvents → Anthropic SSE: message_start, content blocks (thinking, text, tool_use), message_delta,
    message_stop. A thinking block stays open for more text until its signature comes."""

    __slots__ = ("_blocks", "_finish", "_id", "_kind", "_model", "_open", "_tools", "_usage")

    def __init__(self, message_id: str, model: str) -> None:
        self._id, self._model = message_id, model
        self._blocks = 0  # content blocks opened so far
        self._open: int | None = None  # index of the open block
        self._kind = ""  # the open block's kind: text, thinking (unsigned), signed, tool_use, redacted_thinking
        self._tools: dict[int, int] = {}  # tool call index -> content block index
        self._finish: str | None = None
        self._usage: Usage | None = None

    def start(self) -> bytes:
        message: JSON = {
            "id": self._id,
            "type": "message",
            "role": "assistant",
            "model": self._model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0},  # Keel learns usage only at the end
        }
        return sse("message_start", {"type": "message_start", "message": message})

    def feed(self, event: ChatEvent) -> bytes:
        if isinstance(event, Text):
            return self._text(event.text)
        if isinstance(event, Reasoning):
            return self._thinking(event)
        if isinstance(event, ToolCallDelta):
            return self._tool(event)
        if isinstance(event, Finish):
            self._finish = event.reason
        elif isinstance(event, UsageEvent):
            self._usage = event.usage
        return b""

    def end(self) -> bytes:
        delta = {"stop_reason": stop_reason(self._finish), "stop_sequence": None}
        tail = sse("message_delta", {"type": "message_delta", "delta": delta, "usage": usage_json(self._usage)})
        return self._close() + tail + sse("message_stop", {"type": "message_stop"})

    def _text(self, text: str) -> bytes:
        if not text:
            return b""
        head = b""
        if self._kind != "text":
            head = self._close() + self._begin({"type": "text", "text": ""})
        return head + self._delta(self._blocks - 1, {"type": "text_delta", "text": text})

    def _thinking(self, event: Reasoning) -> bytes:
        if event.redacted is not None:
            return self._close() + self._begin({"type": "redacted_thinking", "data": event.redacted})
        head = b""
        if self._kind != "thinking":
            head = self._close() + self._begin({"type": "thinking", "thinking": "", "signature": ""})
        if event.text:
            head += self._delta(self._blocks - 1, {"type": "thinking_delta", "thinking": event.text})
        if event.signature:
            head += self._delta(self._blocks - 1, {"type": "signature_delta", "signature": event.signature})
            self._kind = "signed"
        return head

    def _tool(self, event: ToolCallDelta) -> bytes:
        head = b""
        index = self._tools.get(event.index)
        if index is None:
            call_id = tool_use_id(event.id, self._id, event.index)
            head = self._close() + self._begin(
                {"type": "tool_use", "id": call_id, "name": event.name or "", "input": {}}
            )
            index = self._tools[event.index] = self._blocks - 1
        if not event.arguments:
            return head
        return head + self._delta(index, {"type": "input_json_delta", "partial_json": event.arguments})

    def _begin(self, block: JSON) -> bytes:
        self._open, self._kind = self._blocks, block["type"]
        self._blocks += 1
        return sse("content_block_start", {"type": "content_block_start", "index": self._open, "content_block": block})

    def _delta(self, index: int, delta: JSON) -> bytes:
        return sse("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta})

    def _close(self) -> bytes:
        if self._open is None:
            return b""
        index, self._open, self._kind = self._open, None, ""
        return sse("content_block_stop", {"type": "content_block_stop", "index": index})
