"""Keel's answers in the OpenAI Responses API's shape: the Response object, its output items, and the
Responses SSE sequence (`StreamEncoder`), every event numbered from 0. No I/O.

Output items: the model's thinking as `reasoning` items (text as `reasoning_text`; a block the provider
redacted as `encrypted_content` only), its text as one `message`, each tool call as a `function_call`.
A finish reason of `length` or `content_filter` makes the Response `incomplete` with its reason.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from keel.errors import KeelError
from keel.types import JSON, ChatEvent, ChatResponse, Finish, Reasoning, Text, ToolCallDelta, Usage, UsageEvent
from keel.wire.openai_responses import ResponsesRequest

# ---- the answer -> Response JSON ---------------------------------------------------------------


def usage_json(u: Usage) -> JSON:
    return {
        "input_tokens": u.input_tokens,
        "input_tokens_details": {"cached_tokens": u.cached_input_tokens, "cache_write_tokens": u.cache_write_tokens},
        "output_tokens": u.output_tokens,
        "output_tokens_details": {"reasoning_tokens": u.reasoning_tokens},
        "total_tokens": u.input_tokens + u.output_tokens,
    }


def message_item(item_id: str, text: str, status: str = "completed") -> JSON:
    part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
    return {"id": item_id, "type": "message", "status": status, "role": "assistant", "content": [part]}


def call_item(item_id: str, call_id: str, name: str, arguments: str, status: str = "completed") -> JSON:
    return {
        "id": item_id,
        "type": "function_call",
        "status": status,
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
    }


def reasoning_item(item_id: str, text: str | None, encrypted: str | None = None, status: str = "completed") -> JSON:
    """The model's thinking as a reasoning item: its text as `reasoning_text` content, or (redacted by the
    provider) only the opaque data as `encrypted_content`."""
    item: JSON = {"id": item_id, "type": "reasoning", "summary": [], "status": status}
    if text is not None:
        item["content"] = [{"type": "reasoning_text", "text": text}]
    if encrypted is not None:
        item["encrypted_content"] = encrypted
    return item


def output_items(r: ChatResponse, prefix: str) -> list[JSON]:
    """A whole answer's output: its thinking as reasoning items, its text as one message, then one
    function_call item per tool call."""
    out = [
        reasoning_item(f"rs_{prefix}_{n}", b.get("thinking"), b.get("data"))
        for n, b in enumerate(r.reasoning)
        if b.get("thinking") or b.get("data")
    ]
    if r.content:
        out.append(message_item(f"msg_{prefix}_0", r.content))
    for n, c in enumerate(r.tool_calls):
        out.append(call_item(f"fc_{prefix}_{n}", c.id or f"call_{prefix}_{n}", c.name, c.arguments))
    return out


_INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}


def status_of(finish: str | None) -> tuple[str, JSON | None]:
    """The Response's status and incomplete_details for a finish reason."""
    reason = _INCOMPLETE.get(finish or "")
    return ("incomplete", {"reason": reason}) if reason else ("completed", None)


def response_json(
    r: ResponsesRequest,
    response_id: str,
    created_at: float,
    model: str,
    *,
    status: str = "completed",
    output: list[JSON] | None = None,
    usage: Usage | None = None,
    incomplete: JSON | None = None,
    error: JSON | None = None,
) -> JSON:
    """The Response object: the request's settings echoed, then what came of it."""
    reasoning = {"effort": None, "summary": None} | (r.reasoning or {})
    return {
        "id": response_id,
        "object": "response",
        "created_at": int(created_at),
        "completed_at": None if status in ("in_progress", "failed") else int(time.time()),
        "status": status,
        "error": error,
        "incomplete_details": incomplete,
        "instructions": r.instructions,
        "max_output_tokens": r.max_output_tokens,
        "model": model,
        "output": output or [],
        "parallel_tool_calls": r.parallel_tool_calls,
        "previous_response_id": r.previous_response_id,
        "reasoning": reasoning,
        "store": r.store,
        "temperature": 1.0 if r.temperature is None else r.temperature,
        "text": r.text,
        "tool_choice": r.tool_choice,
        "tools": [{"description": None, "parameters": None, "strict": None} | t for t in r.tools],
        "top_p": 1.0 if r.top_p is None else r.top_p,
        "presence_penalty": 0.0,
        "frequency_penalty": 0.0,
        "top_logprobs": 0,
        "max_tool_calls": None,
        "truncation": r.truncation,
        "usage": None if usage is None else usage_json(usage),  # None: the upstream reported none
        "user": r.user,
        "metadata": r.metadata or {},
        "background": False,
        "service_tier": r.extra.get("service_tier") or "default",
        "safety_identifier": r.extra.get("safety_identifier"),
        "prompt_cache_key": r.extra.get("prompt_cache_key"),
    }


_ERROR_CODES = {429: "rate_limit_exceeded"}


def error_json(err: KeelError) -> JSON:
    """A failed Response's `error`: OpenAI's codes are few; Keel's own code rides in the message."""
    code = _ERROR_CODES.get(err.status, "server_error" if err.status >= 500 else "invalid_prompt")
    return {"code": code, "message": err.message}


# ---- the answer -> Responses SSE ---------------------------------------------------------------


def sse(event: JSON) -> bytes:
    kind: str = event["type"]
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n"


class StreamEncoder:
    """ChatEvents → the Responses event sequence, every event numbered from 0.

    Text opens a message item (output_item.added, content_part.added) and streams output_text.delta;
    each tool call is a function_call item streaming function_call_arguments.delta. Items close
    (…done events) when another item begins or the answer ends; `output` then holds them all.
    """

    def __init__(self, request: ResponsesRequest, response_id: str, created_at: float, model: str) -> None:
        self.request, self.id, self.created_at, self.model = request, response_id, created_at, model
        self.prefix = response_id.removeprefix("resp_")
        self.output: list[JSON] = []  # items in output order; open ones grow as deltas pass
        self._seq = 0
        self._text: int | None = None  # output index of the open message item
        self._thinking: int | None = None  # output index of the open reasoning item
        self._calls: dict[int, int] = {}  # tool call index -> output index
        self._open: set[int] = set()  # output indexes not closed yet
        self.finish: str | None = None
        self.usage: Usage | None = None

    def _event(self, kind: str, **fields: Any) -> bytes:
        event = {"type": kind, "sequence_number": self._seq, **fields}
        self._seq += 1
        return sse(event)

    def snapshot(self, status: str, **extra: Any) -> JSON:
        return response_json(self.request, self.id, self.created_at, self.model, status=status, **extra)

    def start(self) -> bytes:
        head = self.snapshot("in_progress")
        return self._event("response.created", response=head) + self._event("response.in_progress", response=head)

    def feed(self, event: ChatEvent) -> bytes:
        if isinstance(event, Text):
            return self._delta(event.text) if event.text else b""
        if isinstance(event, ToolCallDelta):
            return self._call(event)
        if isinstance(event, Reasoning):
            return self._reasoning(event)
        if isinstance(event, Finish):
            self.finish = event.reason
        elif isinstance(event, UsageEvent):
            self.usage = event.usage
        return b""

    def _delta(self, text: str) -> bytes:
        head = b""
        if self._text is None:
            head = self._close_all()
            index = self._text = self._add(message_item(f"msg_{self.prefix}_{len(self.output)}", "", "in_progress"))
            item = self.output[index]
            head += self._event("response.output_item.added", output_index=index, item=_without_text(item))
            part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
            head += self._event(
                "response.content_part.added", item_id=item["id"], output_index=index, content_index=0, part=part
            )
        index = self._text
        item = self.output[index]
        item["content"][0]["text"] += text
        return head + self._event(
            "response.output_text.delta",
            item_id=item["id"],
            output_index=index,
            content_index=0,
            delta=text,
            logprobs=[],
        )

    def _reasoning(self, event: Reasoning) -> bytes:
        """Thinking text streams into one open reasoning item; a redacted block is an item of its own."""
        if event.redacted:
            head = self._close_all()
            index = self._add(reasoning_item(f"rs_{self.prefix}_{len(self.output)}", None, event.redacted))
            item = self.output[index]
            self._open.discard(index)
            added = self._event("response.output_item.added", output_index=index, item=item)
            return head + added + self._event("response.output_item.done", output_index=index, item=item)
        if not event.text:
            return b""  # a signature: it closes the block for Anthropic; the item stays open for more text
        head = b""
        if self._thinking is None:
            head = self._close_all()
            item = reasoning_item(f"rs_{self.prefix}_{len(self.output)}", "", status="in_progress")
            index = self._thinking = self._add(item)
            head += self._event("response.output_item.added", output_index=index, item={**item, "content": []})
            head += self._event(
                "response.content_part.added",
                item_id=item["id"],
                output_index=index,
                content_index=0,
                part={"type": "reasoning_text", "text": ""},
            )
        index = self._thinking
        item = self.output[index]
        item["content"][0]["text"] += event.text
        return head + self._event(
            "response.reasoning_text.delta", item_id=item["id"], output_index=index, content_index=0, delta=event.text
        )

    def _call(self, event: ToolCallDelta) -> bytes:
        head = b""
        index = self._calls.get(event.index)
        if index is None:
            head = self._close_all()  # upstreams stream one call after another
            n = len(self.output)
            call_id = event.id or f"call_{self.prefix}_{n}"
            item = call_item(f"fc_{self.prefix}_{n}", call_id, event.name or "", "", "in_progress")
            index = self._calls[event.index] = self._add(item)
            head += self._event("response.output_item.added", output_index=index, item=dict(item))
        item = self.output[index]
        if not event.arguments:
            return head
        item["arguments"] += event.arguments
        return head + self._event(
            "response.function_call_arguments.delta", item_id=item["id"], output_index=index, delta=event.arguments
        )

    def _add(self, item: JSON) -> int:
        self.output.append(item)
        self._open.add(len(self.output) - 1)
        return len(self.output) - 1

    def _close(self, index: int) -> bytes:
        if index not in self._open:
            return b""
        self._open.discard(index)
        item = self.output[index]
        item["status"] = "completed"
        out = b""
        common = {"item_id": item["id"], "output_index": index, "content_index": 0}
        if item["type"] == "message":
            self._text = None
            part = item["content"][0]
            out += self._event("response.output_text.done", **common, text=part["text"], logprobs=[])
            out += self._event("response.content_part.done", **common, part=part)
        elif item["type"] == "reasoning":
            self._thinking = None
            part = item["content"][0]
            out += self._event("response.reasoning_text.done", **common, text=part["text"])
            out += self._event("response.content_part.done", **common, part=part)
        else:
            out += self._event(
                "response.function_call_arguments.done",
                item_id=item["id"],
                output_index=index,
                name=item["name"],
                arguments=item["arguments"],
            )
        return out + self._event("response.output_item.done", output_index=index, item=item)

    def _close_all(self) -> bytes:
        return b"".join(self._close(i) for i in sorted(self._open))

    def close(self) -> tuple[bytes, JSON]:
        """The answer ended: the items' done events, and the final Response (to store, then `completed`)."""
        frames = self._close_all()
        status, incomplete = status_of(self.finish)
        return frames, self.snapshot(status, output=self.output, usage=self.usage, incomplete=incomplete)

    def completed(self, response: JSON) -> bytes:
        kind = "response.incomplete" if response["status"] == "incomplete" else "response.completed"
        return self._event(kind, response=response)

    def failed(self, err: KeelError) -> bytes:
        """An error after the first byte: an `error` event, then `response.failed` — never a completion."""
        error = error_json(err)
        frame = self._event("error", code=error["code"], message=err.message, param=err.param)
        failed = self.snapshot("failed", output=self.output, usage=self.usage, error=error)
        return frame + self._event("response.failed", response=failed)


def _without_text(item: JSON) -> JSON:
    return {**item, "content": []}
