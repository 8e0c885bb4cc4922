"""Anthropic Messages request bodies → Keel's OpenAI-shaped `ChatRequest`, for `POST /v1/messages`.

The reverse of the encoder in providers/anthropic_messages.py: `system` becomes a system message,
`tool_use` blocks become `tool_calls`, `tool_result` blocks become `tool` messages placed before the
rest of their user turn, images become `image_url` parts, and `cache_control` survives on content
parts and tools, `document` blocks stay whole as parts. The request is in the Anthropic dialect
(keel/wire/translate.py): unknown top-level fields, `thinking`, `top_k` and `output_config` ride in
`extra` as sent, `thinking` blocks echoed back in assistant turns and `tool_result.is_error` in
`Message.extra`, so an Anthropic upstream gets them intact and another wire translates or drops them.
The structured-output format (`output_config.format`, or the older `output_format`) is also given as
OpenAI's `response_format`, and the `anthropic-beta` header's values as `betas`.
Every refusal is an InvalidRequest naming the field in Anthropic's dotted style (`messages.0.content`).
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from keel.errors import InvalidRequest
from keel.types import IS_ERROR, JSON, THINKING, ChatRequest, Message, ToolCall
from keel.wire.base import MAX_TOKENS
from keel.wire.openai_chat import require_model
from keel.wire.translate import ANTHROPIC

_KNOWN = frozenset(
    {"model", "messages", "system", "max_tokens", "temperature", "top_p", "top_k", "stop_sequences"}
    | {"stream", "tools", "tool_choice", "metadata"}
)
_CHOICES = {"auto": "auto", "any": "required", "none": "none"}
_THINKING_BLOCKS = frozenset({"thinking", "redacted_thinking"})


def parse_request(body: Any, betas: str | None = None) -> ChatRequest:
    """Validate an Anthropic Messages body (and the `anthropic-beta` header's value); raise
    InvalidRequest naming the offending field."""
    model = require_model(body)
    prompted = "prompt" in body  # Keel's prompt slot renders the messages (and may set max_tokens)
    if body.get("max_tokens") is None and not prompted:
        raise InvalidRequest("'max_tokens' is required.", "max_tokens")
    raw_messages = body.get("messages", [] if prompted else None)
    if not isinstance(raw_messages, list) or not (raw_messages or prompted):
        raise InvalidRequest("'messages' is required and must be a non-empty array.", "messages")
    messages = _system(body.get("system"))
    for i, m in enumerate(raw_messages):
        messages.extend(_turn(m, f"messages.{i}"))
    tools = _tools(body.get("tools"))
    extra = {k: v for k, v in body.items() if k not in _KNOWN}
    top_k = _integer(body, "top_k", 0)
    if top_k is not None:
        extra["top_k"] = top_k
    tool_choice, serial = _tool_choice(body.get("tool_choice"))
    if not tools:  # OpenAI-compatible servers refuse tool_choice without tools
        tool_choice, serial = None, False
    if serial:
        extra["parallel_tool_calls"] = False
    return ChatRequest(
        model=model,
        messages=tuple(messages),
        stream=_flag(body, "stream"),
        max_tokens=_integer(body, "max_tokens", 1, MAX_TOKENS),
        temperature=_number(body, "temperature"),
        top_p=_number(body, "top_p"),
        stop=_stop_sequences(body.get("stop_sequences")),
        tools=tools,
        tool_choice=tool_choice,
        response_format=_response_format(body),
        user=_user_id(body.get("metadata")),
        extra=extra,
        dialect=ANTHROPIC,
        betas=_betas(betas),
    )


def _response_format(body: JSON) -> JSON | None:
    """The structured-output format as OpenAI's `response_format` (for routing and for other wires)."""
    config = body.get("output_config")
    if config is not None and not isinstance(config, dict):
        raise InvalidRequest("'output_config' must be an object.", "output_config")
    where, fmt = ("output_config.format", config.get("format")) if config else ("output_format", None)
    if fmt is None:
        where, fmt = "output_format", body.get("output_format")
    if fmt is None:
        return None
    schema = fmt.get("schema") if isinstance(fmt, dict) else None
    if not isinstance(fmt, dict) or fmt.get("type") != "json_schema" or not isinstance(schema, dict):
        raise InvalidRequest("The output format must be {type: json_schema, schema: {...}}.", where)
    return {"type": "json_schema", "json_schema": {"name": "output", "schema": schema, "strict": True}}


def _betas(header: str | None) -> tuple[str, ...]:
    names = tuple(b.strip() for b in (header or "").split(",") if b.strip())
    if any(not re.fullmatch(r"[A-Za-z0-9._-]{1,100}", b) for b in names):
        raise InvalidRequest("'anthropic-beta' must be a comma-separated list of beta names.", "anthropic-beta")
    return names


# ---- scalar fields ----------------------------------------------------------------------------


def _flag(body: JSON, key: str) -> bool:
    value = body.get(key)
    if value is not None and not isinstance(value, bool):
        raise InvalidRequest(f"'{key}' must be a boolean.", key)
    return bool(value)


def _integer(body: JSON, key: str, least: int, most: int = 2**63 - 1) -> int | None:
    value = body.get(key)
    if value is not None and (type(value) is not int or not least <= value <= most):
        raise InvalidRequest(f"'{key}' must be an integer from {least} to {most}.", key)
    return value


def _number(body: JSON, key: str) -> float | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise InvalidRequest(f"'{key}' must be a number between 0 and 1.", key)
    return float(value)


def _stop_sequences(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
        raise InvalidRequest("'stop_sequences' must be an array of strings.", "stop_sequences")
    return tuple(value)


def _user_id(metadata: Any) -> str | None:
    """Anthropic's metadata carries `user_id` only; a `keel.*` key there is refused like a tag would be."""
    if metadata is None:
        return None
    user = metadata.get("user_id") if isinstance(metadata, dict) else None
    if not isinstance(metadata, dict) or (user is not None and not isinstance(user, str)):
        raise InvalidRequest("'metadata' must be an object whose 'user_id' is a string.", "metadata.user_id")
    for key in metadata:
        if key.startswith("keel."):
            raise InvalidRequest(f"'{key[:64]}' is reserved: keel.* tags are Keel's own.", f"metadata.{key[:64]}")
    return user


# ---- messages ---------------------------------------------------------------------------------


def _system(raw: Any) -> list[Message]:
    if raw is None or raw == "":
        return []
    if isinstance(raw, str):
        return [Message("system", raw)]
    if not isinstance(raw, list):
        raise InvalidRequest("'system' must be a string or an array of text blocks.", "system")
    parts = []
    for j, block in enumerate(raw):
        where = f"system.{j}"
        if _kind(block, where) != "text":
            raise InvalidRequest("System blocks must be text blocks.", f"{where}.type")
        parts.append(_part(block, where))
    return [Message("system", _content(parts))] if parts else []


def _turn(raw: Any, where: str) -> list[Message]:
    if not isinstance(raw, dict):
        raise InvalidRequest("Each message must be an object.", where)
    role = raw.get("role")
    if role not in ("user", "assistant"):
        raise InvalidRequest("Each message needs a 'role': 'user' or 'assistant'.", f"{where}.role")
    content = raw.get("content")
    if isinstance(content, str):
        return [Message(role, content)]
    if not isinstance(content, list) or not content:
        raise InvalidRequest("'content' must be a string or a non-empty array of content blocks.", f"{where}.content")
    blocks = [(block, f"{where}.content.{j}") for j, block in enumerate(content)]
    return [_assistant(blocks)] if role == "assistant" else _user(blocks)


def _user(blocks: list[tuple[Any, str]]) -> list[Message]:
    """Tool results become `tool` messages, in order, ahead of the turn's remaining content."""
    messages: list[Message] = []
    parts: list[JSON] = []
    for block, where in blocks:
        if _kind(block, where) == "tool_result":
            messages.append(_tool_result(block, where))
        else:
            parts.append(_part(block, where))
    if parts:
        messages.append(Message("user", _content(parts)))
    return messages


def _assistant(blocks: list[tuple[Any, str]]) -> Message:
    parts: list[JSON] = []
    calls: list[ToolCall] = []
    thinking: list[JSON] = []
    for block, where in blocks:
        kind = _kind(block, where)
        if kind == "tool_use":
            calls.append(_tool_use(block, where))
        elif kind in _THINKING_BLOCKS:
            thinking.append(block)
        else:
            parts.append(_part(block, where))
    extra = {THINKING: thinking} if thinking else None
    return Message("assistant", _content(parts) if parts else None, tool_calls=tuple(calls), extra=extra)


def _kind(block: Any, where: str) -> str:
    kind = block.get("type") if isinstance(block, dict) else None
    if not isinstance(kind, str):
        raise InvalidRequest("Each content block must be an object with a 'type'.", f"{where}.type")
    return kind


def _part(block: Any, where: str) -> JSON:
    """A text or image block as an OpenAI content part; `cache_control` rides along."""
    kind = _kind(block, where)
    if kind == "text":
        if not isinstance(block.get("text"), str):
            raise InvalidRequest("A text block needs a string 'text'.", f"{where}.text")
        part: JSON = {"type": "text", "text": block["text"]}
    elif kind == "image":
        part = {"type": "image_url", "image_url": {"url": _image_url(block.get("source"), f"{where}.source")}}
    elif kind == "document":
        return dict(block)  # kept whole (source, title, context, citations): keel.wire.translate reads it for OpenAI
    else:
        hint = "text, image and document blocks, plus tool_use in assistant turns and tool_result in user turns"
        raise InvalidRequest(f"Keel does not accept '{kind}' blocks here; it takes {hint}.", f"{where}.type")
    if "cache_control" in block:
        part["cache_control"] = block["cache_control"]
    return part


def _image_url(source: Any, where: str) -> str:
    source = source if isinstance(source, dict) else {}
    kind, media_type, data, url = (source.get(k) for k in ("type", "media_type", "data", "url"))
    if kind == "base64" and isinstance(media_type, str) and isinstance(data, str):
        return f"data:{media_type};base64,{data}"
    if kind == "url" and isinstance(url, str):
        return url
    raise InvalidRequest("An image 'source' must be {type: base64, media_type, data} or {type: url, url}.", where)


def _content(parts: list[JSON]) -> str | list[JSON]:
    """A lone plain text part becomes a string, the form every OpenAI-compatible server accepts."""
    if len(parts) == 1 and parts[0].keys() == {"type", "text"} and parts[0]["type"] == "text":
        return str(parts[0]["text"])
    return parts


def _tool_use(block: JSON, where: str) -> ToolCall:
    call_id, name, arguments = block.get("id"), block.get("name"), block.get("input", {})
    if not isinstance(call_id, str) or not call_id:
        raise InvalidRequest("A tool_use block needs a string 'id'.", f"{where}.id")
    if not isinstance(name, str) or not name:
        raise InvalidRequest("A tool_use block needs a string 'name'.", f"{where}.name")
    if not isinstance(arguments, dict):
        raise InvalidRequest("A tool_use block's 'input' must be an object.", f"{where}.input")
    return ToolCall(call_id, name, orjson.dumps(arguments).decode())


def _tool_result(block: JSON, where: str) -> Message:
    call_id = block.get("tool_use_id")
    if not isinstance(call_id, str) or not call_id:
        raise InvalidRequest("A tool_result block needs a string 'tool_use_id'.", f"{where}.tool_use_id")
    raw = block.get("content", "")
    if isinstance(raw, str):
        parts: list[JSON] = [{"type": "text", "text": raw}]
    elif isinstance(raw, list):
        parts = [_part(b, f"{where}.content.{k}") for k, b in enumerate(raw)]
    else:
        raise InvalidRequest("A tool_result's 'content' must be a string or an array of blocks.", f"{where}.content")
    if parts and "cache_control" in block:  # Anthropic marks the result block; OpenAI parts carry it
        parts[-1] = {**parts[-1], "cache_control": block["cache_control"]}
    is_error = block.get("is_error")
    if is_error is not None and not isinstance(is_error, bool):
        raise InvalidRequest("A tool_result's 'is_error' must be a boolean.", f"{where}.is_error")
    extra = {IS_ERROR: True} if is_error else None
    return Message("tool", _content(parts) if parts else "", tool_call_id=call_id, extra=extra)


# ---- tools ------------------------------------------------------------------------------------


def _tools(raw: Any) -> tuple[JSON, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise InvalidRequest("'tools' must be an array.", "tools")
    return tuple(_tool(t, f"tools.{i}") for i, t in enumerate(raw))


def _tool(tool: Any, where: str) -> JSON:
    if not isinstance(tool, dict):
        raise InvalidRequest("Each tool must be an object.", where)
    if tool.get("type") not in (None, "custom"):
        raise InvalidRequest(
            f"Keel routes custom tools only (name + input_schema), not '{tool['type']}'.", f"{where}.type"
        )
    name, schema = tool.get("name"), tool.get("input_schema")
    if not isinstance(name, str) or not name:
        raise InvalidRequest("Each tool needs a string 'name'.", f"{where}.name")
    if not isinstance(schema, dict):
        raise InvalidRequest("Each tool needs an 'input_schema' object.", f"{where}.input_schema")
    function: JSON = {"name": name}
    if isinstance(tool.get("description"), str):
        function["description"] = tool["description"]
    function["parameters"] = schema
    if isinstance(tool.get("strict"), bool):
        function["strict"] = tool["strict"]
    out: JSON = {"type": "function", "function": function}
    # cache_control and Anthropic's other tool fields (input_examples, defer_loading, ...) ride beside it
    out.update((k, v) for k, v in tool.items() if k not in _TOOL_FIELDS)
    return out


_TOOL_FIELDS = frozenset({"type", "name", "description", "input_schema", "strict"})


def _tool_choice(raw: Any) -> tuple[str | JSON | None, bool]:
    """OpenAI's tool_choice, and whether parallel tool use was disabled."""
    if raw is None:
        return None, False
    raw = raw if isinstance(raw, dict) else {}
    kind = raw.get("type")
    if kind == "tool":
        name = raw.get("name")
        if not isinstance(name, str) or not name:
            raise InvalidRequest("tool_choice of type 'tool' needs a 'name'.", "tool_choice.name")
        choice: str | JSON = {"type": "function", "function": {"name": name}}
    elif kind in _CHOICES:
        choice = _CHOICES[kind]
    else:
        raise InvalidRequest("'tool_choice.type' must be 'auto', 'any', 'tool' or 'none'.", "tool_choice.type")
    return choice, raw.get("disable_parallel_tool_use") is True
