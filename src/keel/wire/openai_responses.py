"""OpenAI Responses API requests at Keel's edge → Keel's `ChatRequest`, with no I/O.

`parse_request` checks a `POST /v1/responses` body and normalises its input items (a string becomes
one user message; string contents become `input_text`/`output_text` parts); `chat_request` turns
those items, after the stored conversation's, into Keel's `ChatRequest`, so any provider answers
through its own codec. The answer goes back through `openai_responses_reply`.

Mapping: `instructions` → a leading system message (never carried over from a previous response);
`message` items → messages; `function_call` items → the assistant's `tool_calls`, merged into the
assistant message before them; `function_call_output` → `tool` messages; `item_reference` items
are replaced by the stored items they name (`referenced`, `resolve`: the edge reads them); `reasoning`
items are dropped (another model cannot read them); function tools, `tool_choice` (incl. `allowed_tools`),
`text.format` → `response_format`, `max_output_tokens` → `max_tokens`, `reasoning.effort` →
`reasoning_effort`, `text.verbosity`, `parallel_tool_calls` (with tools), `service_tier`,
`safety_identifier` and `prompt_cache_key` ride as chat fields. What Keel cannot honour (hosted
tools, `background`, `conversation`, `prompt`, logprobs, unknown parameters) is a 400 naming the
field, like OpenAI's own "Unknown parameter".
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from keel.errors import InvalidRequest, NotFound
from keel.types import (
    JSON,
    ChatRequest,
    Message,
    ToolCall,
)
from keel.wire.base import MAX_TOKENS
from keel.wire.openai_chat import require_model

# Accepted and passed on or echoed; anything else is refused ("Unknown parameter").
_KNOWN = frozenset(
    {"model", "input", "instructions", "tools", "tool_choice", "text", "max_output_tokens", "reasoning"}
    | {"metadata", "store", "previous_response_id", "parallel_tool_calls", "temperature", "top_p", "user"}
    | {"stream", "stream_options", "include", "truncation", "background", "service_tier", "safety_identifier"}
    | {"prompt_cache_key", "prompt_cache_retention", "conversation", "prompt", "top_logprobs", "max_tool_calls"}
    | {"context_management", "prompt_cache_options", "moderation"}
)
# Known, but needing what Keel does not have (a server-side conversation, stored prompts, background
# runs, logprobs): refused when given a value.
_UNSUPPORTED = {
    "conversation": "use previous_response_id",
    "prompt": "send the prompt's text as instructions/input",
    "background": "Keel answers in the foreground; leave it false",
    "top_logprobs": "Keel does not return logprobs",
    "max_tool_calls": "it limits hosted tools, which Keel does not run",
    "context_management": "Keel does not compact context",
}
_PASSED = ("service_tier", "safety_identifier", "prompt_cache_key", "prompt_cache_retention")
_EFFORTS = frozenset({"none", "minimal", "low", "medium", "high", "xhigh"})
_ROLES = frozenset({"user", "system", "developer", "assistant"})
_INPUT_PARTS = frozenset({"input_text", "input_image", "input_file"})
_OUTPUT_PARTS = frozenset({"output_text", "refusal"})
_CHOICES = frozenset({"auto", "none", "required"})
_DROPPED_ITEMS = frozenset({"reasoning"})


@dataclass(frozen=True, slots=True)
class ResponsesRequest:
    """A checked Responses body: its own input items (normalised) and what the Response echoes."""

    model: str
    items: tuple[JSON, ...]
    instructions: str | None = None
    previous_response_id: str | None = None
    store: bool = True
    stream: bool = False
    tools: tuple[JSON, ...] = ()  # Responses-shaped function tools, as sent
    tool_choice: str | JSON = "auto"
    parallel_tool_calls: bool = True
    text: JSON = field(default_factory=lambda: {"format": {"type": "text"}})
    reasoning: JSON | None = None
    max_output_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    user: str | None = None
    metadata: JSON | None = None
    truncation: str = "disabled"
    extra: JSON = field(default_factory=dict)  # chat fields for the upstream (reasoning_effort, verbosity, …)


# ---- client JSON -> ResponsesRequest ----------------------------------------------------------


def parse_request(body: Any) -> ResponsesRequest:
    """Validate a Responses body; raise InvalidRequest naming the offending field."""
    model = require_model(body)
    for key in body:
        if key not in _KNOWN:
            raise InvalidRequest(f"Unknown parameter: '{key[:64]}'.", key[:64])
    for key, fix in _UNSUPPORTED.items():
        if body.get(key) not in (None, False, 0):
            raise InvalidRequest(f"'{key}' is not supported by Keel: {fix}.", key)
    items = _input(body.get("input"))
    tools = tuple(_tool(t, i) for i, t in enumerate(_typed(body, "tools", list) or ()))
    extra: JSON = {k: body[k] for k in _PASSED if body.get(k) is not None}
    text = _text(body.get("text"), extra)
    reasoning = _reasoning(body.get("reasoning"), extra)
    parallel = _typed(body, "parallel_tool_calls", bool)
    truncation = body.get("truncation") or "disabled"
    if truncation not in ("auto", "disabled"):
        raise InvalidRequest("'truncation' must be 'auto' or 'disabled'.", "truncation")
    include = _typed(body, "include", list) or []
    if not all(isinstance(v, str) for v in include):
        raise InvalidRequest("'include' must be an array of strings.", "include")
    return ResponsesRequest(
        model=model,
        items=items,
        instructions=_instructions(body.get("instructions")),
        previous_response_id=_typed(body, "previous_response_id", str),
        store=_typed(body, "store", bool) is not False,
        stream=_typed(body, "stream", bool) is True,
        tools=tools,
        tool_choice=_tool_choice(body.get("tool_choice"), tools),
        parallel_tool_calls=parallel is not False,
        text=text,
        reasoning=reasoning,
        max_output_tokens=_tokens(body.get("max_output_tokens")),
        temperature=_number(body, "temperature", 2),
        top_p=_number(body, "top_p", 1),
        user=_typed(body, "user", str),
        metadata=_metadata(body.get("metadata")),
        truncation=truncation,
        extra=extra,
    )


def _one_of(value: Any, options: Collection[str]) -> bool:
    """`value` is one of the strings `options` (a list or an object never is: no TypeError on hashing)."""
    return isinstance(value, str) and value in options


def _typed(body: JSON, key: str, kind: type) -> Any:
    value = body.get(key)
    if value is not None and not isinstance(value, kind):
        name = {bool: "a boolean", list: "an array", str: "a string", dict: "an object"}[kind]
        raise InvalidRequest(f"'{key}' must be {name}.", key)
    return value


def _number(body: JSON, key: str, most: float) -> float | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= most:
        raise InvalidRequest(f"'{key}' must be a number between 0 and {most:g}.", key)
    return float(value)


def _tokens(value: Any) -> int | None:
    if value is not None and (type(value) is not int or not 1 <= value <= MAX_TOKENS):
        raise InvalidRequest(f"'max_output_tokens' must be an integer from 1 to {MAX_TOKENS}.", "max_output_tokens")
    return value


def _metadata(value: Any) -> JSON | None:
    if value is None:
        return None
    if not isinstance(value, dict) or len(value) > 16:
        raise InvalidRequest("'metadata' must be an object of at most 16 string values.", "metadata")
    for key, v in value.items():
        if not isinstance(v, str) or len(key) > 64 or len(v) > 512:
            raise InvalidRequest("Metadata keys hold at most 64 characters, values are strings of at most 512.", key)
    return value


def _instructions(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value or None
    raise InvalidRequest("'instructions' must be a string.", "instructions")


def _text(value: Any, extra: JSON) -> JSON:
    if value is None:
        return {"format": {"type": "text"}}
    if not isinstance(value, dict):
        raise InvalidRequest("'text' must be an object.", "text")
    fmt = value.get("format") or {"type": "text"}
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind == "json_schema":
        if not isinstance(fmt.get("name"), str) or not fmt["name"]:
            raise InvalidRequest("A json_schema format needs a 'name'.", "text.format.name")
        if not isinstance(fmt.get("schema"), dict):
            raise InvalidRequest("A json_schema format needs a 'schema' object.", "text.format.schema")
    elif kind not in ("text", "json_object"):
        raise InvalidRequest("'text.format.type' must be 'text', 'json_schema' or 'json_object'.", "text.format.type")
    verbosity = value.get("verbosity")
    if verbosity is not None:
        if verbosity not in ("low", "medium", "high"):
            raise InvalidRequest("'text.verbosity' must be 'low', 'medium' or 'high'.", "text.verbosity")
        extra["verbosity"] = verbosity
    return {**value, "format": fmt}


def _reasoning(value: Any, extra: JSON) -> JSON | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InvalidRequest("'reasoning' must be an object.", "reasoning")
    effort = value.get("effort")
    if effort is not None:
        if not _one_of(effort, _EFFORTS):
            raise InvalidRequest(
                f"'reasoning.effort' must be one of {', '.join(sorted(_EFFORTS))}.", "reasoning.effort"
            )
        extra["reasoning_effort"] = effort
    return value


def _tool(tool: Any, i: int) -> JSON:
    where = f"tools[{i}]"
    if not isinstance(tool, dict):
        raise InvalidRequest("Each tool must be an object.", where)
    if tool.get("type") != "function":
        kind = str(tool.get("type"))[:40]
        raise InvalidRequest(f"Keel routes function tools only, not '{kind}' (a hosted tool).", f"{where}.type")
    if not isinstance(tool.get("name"), str) or not tool["name"]:
        raise InvalidRequest("A function tool needs a string 'name'.", f"{where}.name")
    if tool.get("parameters") is not None and not isinstance(tool["parameters"], dict):
        raise InvalidRequest("A tool's 'parameters' must be a JSON Schema object.", f"{where}.parameters")
    if tool.get("description") is not None and not isinstance(tool["description"], str):
        raise InvalidRequest("A tool's 'description' must be a string.", f"{where}.description")
    return tool


def _tool_choice(value: Any, tools: tuple[JSON, ...]) -> str | JSON:
    if value is None:
        return "auto"
    if isinstance(value, str) and value in _CHOICES:
        return value
    if not isinstance(value, dict):
        raise InvalidRequest(
            "'tool_choice' must be 'auto', 'none', 'required', a function or allowed_tools.", "tool_choice"
        )
    choice: JSON = value
    kind = choice.get("type")
    names = {t["name"] for t in tools}
    if kind == "function":
        if not _one_of(choice.get("name"), names):
            raise InvalidRequest("tool_choice names a function that is not in 'tools'.", "tool_choice.name")
        return choice
    if kind == "allowed_tools":
        allowed = choice.get("tools")
        if choice.get("mode") not in ("auto", "required") or not isinstance(allowed, list):
            raise InvalidRequest("allowed_tools needs 'mode' (auto or required) and 'tools'.", "tool_choice")
        for j, t in enumerate(allowed):
            if not isinstance(t, dict) or t.get("type") != "function" or not _one_of(t.get("name"), names):
                raise InvalidRequest("Each allowed tool must be a function in 'tools'.", f"tool_choice.tools[{j}]")
        return choice
    raise InvalidRequest(
        "'tool_choice' must be 'auto', 'none', 'required', a function or allowed_tools.", "tool_choice"
    )


# ---- input items --------------------------------------------------------------------------------


def _input(value: Any) -> tuple[JSON, ...]:
    if isinstance(value, str):
        return ({"type": "message", "role": "user", "content": [{"type": "input_text", "text": value}]},)
    if not isinstance(value, list):
        raise InvalidRequest("'input' must be a string or an array of input items.", "input")
    items = (_item(item, f"input[{i}]") for i, item in enumerate(value))
    return tuple(item for item in items if item is not None)


def _item(item: Any, where: str) -> JSON | None:
    if not isinstance(item, dict):
        raise InvalidRequest("Each input item must be an object.", where)
    kind = item.get("type") or ("message" if "role" in item else "item_reference" if "id" in item else None)
    check = _ITEMS.get(kind) if isinstance(kind, str) else None
    if check is not None:
        return check(item, where)
    if _one_of(kind, _DROPPED_ITEMS):
        return None
    hint = "message, function_call, function_call_output, item_reference or reasoning"
    raise InvalidRequest(
        f"Keel does not accept input items of type '{str(kind)[:40]}'; it takes {hint}.", f"{where}.type"
    )


def _call(item: JSON, where: str) -> JSON:
    for key in ("call_id", "name", "arguments"):
        if not isinstance(item.get(key), str):
            raise InvalidRequest(f"A function_call item needs a string '{key}'.", f"{where}.{key}")
    out: JSON = {"type": "function_call"} | {k: item[k] for k in ("call_id", "name", "arguments")}
    return out | ({"id": item["id"]} if isinstance(item.get("id"), str) else {})


def _call_output(item: JSON, where: str) -> JSON:
    if not isinstance(item.get("call_id"), str):
        raise InvalidRequest("A function_call_output item needs a string 'call_id'.", f"{where}.call_id")
    output = item.get("output")
    if isinstance(output, list):
        output = [_part(p, f"{where}.output[{j}]", _INPUT_PARTS) for j, p in enumerate(output)]
    elif not isinstance(output, str):
        raise InvalidRequest("'output' must be a string or an array of content parts.", f"{where}.output")
    out: JSON = {"type": "function_call_output", "call_id": item["call_id"], "output": output}
    return out | ({"id": item["id"]} if isinstance(item.get("id"), str) else {})


def _reference(item: JSON, where: str) -> JSON:
    if not isinstance(item.get("id"), str) or not item["id"]:
        raise InvalidRequest("An item_reference needs a string 'id'.", f"{where}.id")
    return {"type": "item_reference", "id": item["id"]}


def _message(item: JSON, where: str) -> JSON:
    role = item.get("role")
    if not _one_of(role, _ROLES):
        raise InvalidRequest("A message needs a 'role': user, assistant, system or developer.", f"{where}.role")
    allowed = _OUTPUT_PARTS if role == "assistant" else _INPUT_PARTS
    content = item.get("content")
    if isinstance(content, str):
        text_part: JSON = {"type": "output_text", "text": content, "annotations": []}
        parts = [text_part if role == "assistant" else {"type": "input_text", "text": content}]
    elif isinstance(content, list):
        parts = [_part(p, f"{where}.content[{j}]", allowed) for j, p in enumerate(content)]
    else:
        raise InvalidRequest("'content' must be a string or an array of content parts.", f"{where}.content")
    out: JSON = {"type": "message", "role": role, "content": parts}
    if isinstance(item.get("id"), str):
        out["id"] = item["id"]
    return out


def _part(part: Any, where: str, allowed: frozenset[str]) -> JSON:
    kind = part.get("type") if isinstance(part, dict) else None
    if not _one_of(kind, allowed):
        raise InvalidRequest(f"Content parts here must be of type {', '.join(sorted(allowed))}.", f"{where}.type")
    if kind in ("input_text", "output_text") and not isinstance(part.get("text"), str):
        raise InvalidRequest("A text part needs a string 'text'.", f"{where}.text")
    if kind == "refusal" and not isinstance(part.get("refusal"), str):
        raise InvalidRequest("A refusal part needs a string 'refusal'.", f"{where}.refusal")
    if kind == "input_image" and not isinstance(part.get("image_url"), str):
        raise InvalidRequest(
            "Keel takes images by 'image_url' (a URL or a data URL), not file_id.", f"{where}.image_url"
        )
    if kind == "input_file" and part.get("file_url") is not None:
        raise InvalidRequest("Keel takes files as 'file_data' (base64), not by URL.", f"{where}.file_url")
    return dict(part)


_ITEMS: dict[str, Callable[[JSON, str], JSON]] = {
    "message": _message,
    "function_call": _call,
    "function_call_output": _call_output,
    "item_reference": _reference,
}


def with_ids(items: Sequence[JSON], prefix: str) -> list[JSON]:
    """The items as stored and listed (`input_items`): each with an id and a status."""
    out = []
    for n, item in enumerate(items):
        tag = {"message": "msg", "function_call": "fc", "function_call_output": "fco", "reasoning": "rs"}[item["type"]]
        out.append({"id": item.get("id") or f"{tag}_{prefix}_in{n}", **item, "status": "completed"})
    return out


# ---- item references ------------------------------------------------------------------------------

MAX_REFERENCED = 100  # stored responses one request's item references may name


def referenced(r: ResponsesRequest) -> set[str]:
    """The stored responses r's item references point into: Keel's item ids carry their response's id
    (`msg_<trace id>_0` belongs to `resp_<trace id>`). An id of another shape is not Keel's: not found."""
    out = set()
    for item in r.items:
        if item["type"] == "item_reference":
            tag, _, rest = item["id"].partition("_")
            trace = rest.rpartition("_")[0]
            if tag in ("msg", "fc", "fco", "rs") and trace:
                out.add(f"resp_{trace}")
    if len(out) > MAX_REFERENCED:
        raise InvalidRequest(f"Item references may point into at most {MAX_REFERENCED} responses.", "input")
    return out


def resolve(r: ResponsesRequest, found: Mapping[str, JSON]) -> ResponsesRequest:
    """r with each item reference replaced by the stored item `found` holds under its id; 404 when none."""
    if not any(item["type"] == "item_reference" for item in r.items):
        return r
    items = []
    for item in r.items:
        if item["type"] == "item_reference":
            stored = found.get(item["id"])
            if stored is None:
                err = NotFound(f"Item with id '{item['id'][:100]}' not found.")
                err.param = "input"
                raise err
            item = {k: v for k, v in stored.items() if k != "status"}
        items.append(item)
    return replace(r, items=tuple(items))


# ---- items -> ChatRequest ------------------------------------------------------------------------


def chat_request(r: ResponsesRequest, history: Sequence[JSON] = ()) -> ChatRequest:
    """Keel's request for `r`: the instructions, then the stored conversation's items, then r's own."""
    messages: list[Message] = [Message("system", r.instructions)] if r.instructions else []
    messages += to_messages([*history, *r.items])
    if not messages:
        raise InvalidRequest("'input' holds nothing to answer.", "input")
    tools, choice = _chat_tools(r.tools, r.tool_choice)
    extra = dict(r.extra)
    if tools and not r.parallel_tool_calls:
        extra["parallel_tool_calls"] = False
    return ChatRequest(
        model=r.model,
        messages=tuple(messages),
        stream=r.stream,
        include_usage=True,
        max_tokens=r.max_output_tokens,
        temperature=r.temperature,
        top_p=r.top_p,
        tools=tools,
        tool_choice=choice if tools else None,
        response_format=_response_format(r.text.get("format")),
        user=r.user,
        metadata=r.metadata,
        extra=extra,
    )


def to_messages(items: Sequence[JSON]) -> list[Message]:
    messages: list[Message] = []
    for item in items:
        kind = item["type"]
        if kind == "message":
            messages.append(_chat_message(item))
        elif kind == "function_call":
            call = ToolCall(item["call_id"], item["name"], item["arguments"])
            last = messages[-1] if messages else None
            if last is not None and last.role == "assistant":
                messages[-1] = Message("assistant", last.content, tool_calls=(*last.tool_calls, call))
            else:
                messages.append(Message("assistant", None, tool_calls=(call,)))
        elif kind == "function_call_output":
            output = item["output"]
            content = output if isinstance(output, str) else _compact([_chat_part(p) for p in output])
            messages.append(Message("tool", content, tool_call_id=item["call_id"]))
    return messages


def _chat_message(item: JSON) -> Message:
    if item["role"] == "assistant":
        text = "".join(p.get("text") or p.get("refusal") or "" for p in item["content"])
        return Message("assistant", text)
    return Message(item["role"], _compact([_chat_part(p) for p in item["content"]]))


def _chat_part(part: JSON) -> JSON:
    kind = part["type"]
    if kind in ("input_text", "output_text"):
        return {"type": "text", "text": part["text"]}
    if kind == "input_image":
        image: JSON = {"url": part["image_url"]}
        if part.get("detail") in ("low", "high"):
            image["detail"] = part["detail"]
        return {"type": "image_url", "image_url": image}
    file = {k: part[k] for k in ("file_data", "file_id", "filename") if part.get(k) is not None}
    return {"type": "file", "file": file}


def _compact(parts: list[JSON]) -> str | list[JSON]:
    if len(parts) == 1 and parts[0]["type"] == "text":
        return str(parts[0]["text"])
    return parts


def _chat_tools(tools: tuple[JSON, ...], choice: str | JSON) -> tuple[tuple[JSON, ...], str | JSON]:
    if isinstance(choice, dict) and choice["type"] == "allowed_tools":
        allowed = {t["name"] for t in choice["tools"]}
        tools, choice = tuple(t for t in tools if t["name"] in allowed), choice["mode"]
    out = []
    for t in tools:
        fn = {"name": t["name"]}
        fn |= {k: t[k] for k in ("description", "parameters", "strict") if t.get(k) is not None}
        out.append({"type": "function", "function": fn})
    if isinstance(choice, dict):
        return tuple(out), {"type": "function", "function": {"name": choice["name"]}}
    return tuple(out), choice


def _response_format(fmt: JSON | None) -> JSON | None:
    kind = (fmt or {}).get("type")
    if kind == "json_object":
        return {"type": "json_object"}
    if kind != "json_schema":
        return None
    assert fmt is not None
    schema = {k: fmt[k] for k in ("name", "schema", "description", "strict") if fmt.get(k) is not None}
    return {"type": "json_schema", "json_schema": schema}
