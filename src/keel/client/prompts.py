"""Render a prompt version fetched from `GET /api/prompts/{name}` the way the gateway renders it.

For applications that render themselves (a prompt shown to a person, a call to a model Keel does not
route): the same `{{ name }}` language (keel.prompts.render), the same checks (a missing or extra
variable, the version's variables schema), the same order (the version's messages, then the call's).

    version = httpx.get(f"{keel}/api/prompts/support", params={"label": "production"}, headers=auth).json()
    call = render(version, {"customer": "Ada"}, messages=[{"role": "user", "content": "hi"}])
    openai.OpenAI(...).chat.completions.create(**call)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from keel.prompts.render import TemplateError, check_variables, compile_messages, render_messages

__all__ = ["TemplateError", "render"]


def render(
    version: Mapping[str, Any], variables: Mapping[str, Any], *, messages: Sequence[Mapping[str, Any]] = ()
) -> dict[str, Any]:
    """The chat call a version stands for, as keyword arguments of `chat.completions.create`: `model`
    (the version's alias), `messages`, the version's parameters, tools and response format."""
    compiled, names = compile_messages(version["messages"])
    values = check_variables(names, variables)
    schema = version.get("variables")
    if schema is not None:
        import jsonschema  # type: ignore[import-untyped]

        error = next(iter(jsonschema.validators.validator_for(schema)(schema).iter_errors(dict(variables))), None)
        if error is not None:
            path = ".".join(str(p) for p in error.absolute_path)
            raise TemplateError(f"Prompt variables: {error.message}", "variables" + (f".{path}" if path else ""))
    call: dict[str, Any] = {**(version.get("params") or {})}
    if version.get("alias"):
        call["model"] = version["alias"]
    call["messages"] = [*render_messages(compiled, values), *(dict(m) for m in messages)]
    if version.get("tools"):
        call["tools"] = list(version["tools"])
    if version.get("response_format") is not None:
        call["response_format"] = version["response_format"]
    return call
