"""A prompt version's content from JSON (an admin body, a YAML file), checked and hashed.

Checks run at push time, so a stored version always compiles: messages are chat messages whose text
compiles as templates (render.py), the variables schema is a valid JSON schema, the parameters are JSON
the call could have sent itself. The hash is sha256 over the canonical JSON (sorted keys, no spaces)
of the content alone: the commit message and the author are not content.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

from keel.errors import InvalidRequest
from keel.prompts.render import NAME, TemplateError, compile_messages
from keel.store.protocols import PromptContent
from keel.wire.openai_chat import parse_request

ROLES = frozenset({"system", "developer", "user", "assistant", "tool"})
# Call fields a version's params may not set: they are the call itself, not its parameters.
NOT_PARAMS = frozenset({"model", "messages", "prompt", "stream", "stream_options", "tools", "response_format"})
MAX_NAME = 256


class ContentError(ValueError):
    """Content that cannot be a version; `field` names the offending place."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


def check_name(value: Any, field: str = "name") -> str:
    """A prompt or label name: 1 to 256 characters of letters, digits, `_ - .`, starting with a letter
    or digit (it appears in URLs, file names and `NAME@label`)."""
    ok = type(value) is str and 0 < len(value) <= MAX_NAME and value[0].isalnum()
    if not ok or any(not (c.isascii() and (c.isalnum() or c in "_-.")) for c in value):
        raise ContentError(
            f"'{field}' must be 1 to {MAX_NAME} ASCII letters, digits or _ - . starting with a letter or digit.", field
        )
    return value  # type: ignore[no-any-return]


def content_of(body: dict[str, Any]) -> PromptContent:
    """The content fields of `body`, checked; ContentError names the first bad one."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ContentError("'messages' must be a non-empty array of chat messages.", "messages")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or m["role"] not in ROLES:
            raise ContentError(f"Each message needs a 'role': {', '.join(sorted(ROLES))}.", f"messages[{i}].role")
        if not isinstance(m.get("content"), str | list):
            raise ContentError("'content' must be a string or an array of content parts.", f"messages[{i}].content")
    try:
        _, names = compile_messages(messages)
    except TemplateError as err:
        raise ContentError(err.message, err.where) from None
    variables = _optional(body, "variables", dict, "a JSON schema object")
    if variables is not None:
        _check_schema(variables, names)
    alias = _optional(body, "alias", str, "a model alias")
    params = _optional(body, "params", dict, "an object of call parameters")
    for key in params or {}:
        if key in NOT_PARAMS:
            raise ContentError(f"'params.{key}' cannot be a prompt parameter.", f"params.{key}")
    tools = _optional(body, "tools", list, "an array of tool definitions") or []
    if not all(isinstance(t, dict) for t in tools):
        raise ContentError("'tools' must be an array of tool definitions (objects).", "tools")
    fmt = _optional(body, "response_format", dict, "an object")
    call = {**(params or {}), "model": alias or "prompt", "messages": messages, "tools": tools, "response_format": fmt}
    try:  # the call the version makes must be one a client could send: the same checks, the same messages
        parse_request({k: v for k, v in call.items() if v is not None})
    except InvalidRequest as err:
        field = err.param or "params"
        raise ContentError(
            err.message, field if field.startswith(("messages", "tools")) else f"params.{field}"
        ) from None
    return PromptContent(tuple(messages), variables, alias, params or None, tuple(tools), fmt)


def _optional(body: dict[str, Any], field: str, kind: type | tuple[type, ...], what: str) -> Any:
    value = body.get(field)
    if value is not None and not isinstance(value, kind):
        raise ContentError(f"'{field}' must be {what}.", field)
    return value


def _check_schema(schema: dict[str, Any], names: frozenset[str]) -> None:
    import jsonschema  # type: ignore[import-untyped]  # push and load time only, never per call

    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as err:
        raise ContentError(f"'variables' is not a valid JSON schema: {err.message}", "variables") from None
    declared = schema.get("properties")
    if isinstance(declared, dict):
        for key in declared:
            if not NAME.match(key) or key not in names:
                raise ContentError(f"'variables.properties.{key}' names no variable of the messages.", "variables")


def content_hash(content: PromptContent) -> str:
    return hashlib.sha256(orjson.dumps(content.json(), option=orjson.OPT_SORT_KEYS)).hexdigest()
