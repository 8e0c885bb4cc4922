"""Wire bodies of the fake upstream's OpenAI Responses API (`POST /v1/responses`), JSON and SSE.

Written by hand from OpenAI's Responses API reference, independent of Keel's own codecs (as
fake_wire is). A Responses body is first seen as a chat body (`as_chat`) so the fake's one planner
decides the answer; these functions put that answer in the Responses shape.
"""

from __future__ import annotations

import json
import time
from typing import Any

from .fake_wire import Answer, Frame, FrameKind, new_id, pieces

Json = dict[str, Any]


def as_chat(body: Json) -> Json:
    """The body as the planner reads chat bodies: instructions and input items as messages."""
    messages: list[Json] = []
    if isinstance(body.get("instructions"), str):
        messages.append({"role": "system", "content": body["instructions"]})
    raw = body.get("input")
    items = [{"role": "user", "content": raw}] if isinstance(raw, str) else raw if isinstance(raw, list) else []
    for item in items:
        if not isinstance(item, dict):
            continue
        if item.get("type") == "function_call_output":
            messages.append({"role": "tool", "content": item.get("output")})
        elif "role" in item:
            messages.append({"role": item["role"], "content": item.get("content")})
    return {"model": body.get("model"), "messages": messages, "tools": body.get("tools"), "stream": body.get("stream")}


def _usage(a: Answer) -> Json:
    u = a.usage
    return {
        "input_tokens": u["prompt_tokens"],
        "input_tokens_details": {"cached_tokens": u["cached_tokens"]},
        "output_tokens": u["completion_tokens"],
        "output_tokens_details": {"reasoning_tokens": u["reasoning_tokens"]},
        "total_tokens": u["prompt_tokens"] + u["completion_tokens"],
    }


def _items(a: Answer) -> list[Json]:
    items: list[Json] = []
    if a.thinking:
        content = [{"type": "reasoning_text", "text": a.thinking}]
        items.append({"id": new_id("rs_"), "type": "reasoning", "summary": [], "content": content})
    if a.tool_name:
        call = {"id": new_id("fc_"), "type": "function_call", "status": "completed", "call_id": new_id("call_")}
        items.append(call | {"name": a.tool_name, "arguments": a.arguments})
    else:
        part = {"type": "output_text", "text": a.text, "annotations": []}
        items.append(
            {"id": new_id("msg_"), "type": "message", "status": "completed", "role": "assistant", "content": [part]}
        )
    return items


def response(a: Answer, rid: str | None = None, status: str = "completed", output: list[Json] | None = None) -> Json:
    return {
        "id": rid or new_id("resp_"),
        "object": "response",
        "created_at": int(time.time()),
        "status": status,
        "error": None,
        "incomplete_details": None,
        "model": a.model,
        "output": _items(a) if output is None else output,
        "usage": _usage(a) if status == "completed" else None,
    }


def frames(a: Answer) -> list[Frame]:
    """The Responses event stream: created, each item added/deltas/done, completed. No end marker."""
    rid, seq = new_id("resp_"), iter(range(10**6))

    def event(kind: FrameKind, name: str, **fields: Any) -> Frame:
        return Frame(kind, json.dumps({"type": name, "sequence_number": next(seq), **fields}), name)

    out = [event("head", "response.created", response=response(a, rid, "in_progress", []))]
    for index, item in enumerate(_items(a)):
        start = {**item, "status": "in_progress"}
        if item["type"] == "message":
            start["content"] = []
        elif item["type"] == "function_call":
            start["arguments"] = ""
        out.append(event("head", "response.output_item.added", output_index=index, item=start))
        at: Json = {"item_id": item["id"], "output_index": index}
        if item["type"] == "reasoning":
            for part in pieces(a.thinking or ""):
                out.append(event("content", "response.reasoning_text.delta", **at, content_index=0, delta=part))
        elif item["type"] == "function_call":
            for part in pieces(a.arguments):
                out.append(event("content", "response.function_call_arguments.delta", **at, delta=part))
            out.append(event("tail", "response.function_call_arguments.done", **at, arguments=a.arguments))
        else:
            for part in pieces(a.text):
                out.append(event("content", "response.output_text.delta", **at, content_index=0, delta=part))
            out.append(event("tail", "response.output_text.done", **at, content_index=0, text=a.text))
        out.append(event("tail", "response.output_item.done", output_index=index, item=item))
    out.append(event("tail", "response.completed", response=response(a, rid)))
    return out
