"""The prompt template language: `{{ name }}` substitution and nothing else.

A template is plain text with placeholders `{{ name }}` (spaces inside the braces optional; a name is a
letter then letters, digits or `_`). There are no expressions, attribute or item access, filters,
loops or calls: the renderer never evaluates anything, so a template cannot reach Python objects.
`{{{{` writes a literal `{{` and `}}}}` a literal `}}`; a lone `}}` is literal text too (JSON examples
in prompts), while a `{{` that does not open a valid placeholder is an error at push time.

Templates are compiled once (when a version is loaded) into literal and variable parts; rendering joins
the parts with the values. A value is inserted as text (a string as it is, anything else as compact
JSON) and is never rendered again, so a variable whose value holds `{{x}}` arrives as those characters.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

_TOKEN = re.compile(r"\{\{\{\{|\}\}\}\}|\{\{\s*([A-Za-z][A-Za-z0-9_]*)\s*\}\}|\{\{")
NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*\Z")


class TemplateError(ValueError):
    """A template that cannot be compiled, or variables that do not fit it. `where` names the place
    (a message path or `variables.<name>`)."""

    def __init__(self, message: str, where: str) -> None:
        super().__init__(message)
        self.message = message
        self.where = where


@dataclass(frozen=True, slots=True)
class Var:
    name: str


Part = str | Var


@dataclass(frozen=True, slots=True)
class Template:
    parts: tuple[Part, ...]

    @property
    def names(self) -> frozenset[str]:
        return frozenset(p.name for p in self.parts if isinstance(p, Var))

    def render(self, values: Mapping[str, str]) -> str:
        """`values` holds every name as text (see `as_text`); a missing one is a KeyError."""
        if len(self.parts) == 1 and isinstance(self.parts[0], str):
            return self.parts[0]
        return "".join(p if isinstance(p, str) else values[p.name] for p in self.parts)


def compile_template(text: str, where: str = "template") -> Template:
    parts: list[Part] = []
    literal: list[str] = []
    at = 0
    for m in _TOKEN.finditer(text):
        literal.append(text[at : m.start()])
        at = m.end()
        token = m.group(0)
        if m.group(1) is not None:
            parts += ["".join(literal), Var(m.group(1))]
            literal = []
        elif token == "{{{{":
            literal.append("{{")
        elif token == "}}}}":
            literal.append("}}")
        else:  # a `{{` that opens no valid placeholder
            snippet = text[m.start() : m.start() + 24]
            raise TemplateError(
                f"{where}: '{snippet}' at offset {m.start()} is not a placeholder: write {{{{ name }}}} with a name of"
                " letters, digits and _ (no expressions, attributes or filters), or {{{{ for a literal {{.",
                where,
            )
    literal.append(text[at:])
    parts.append("".join(literal))
    kept = tuple(p for p in parts if p != "")
    return Template(kept or ("",))


def as_text(value: Any) -> str:
    """A variable's value as inserted: a string unchanged, anything else as compact JSON."""
    if isinstance(value, str):
        return value
    return orjson.dumps(value).decode()


@dataclass(frozen=True, slots=True)
class CompiledMessage:
    """One chat message of a version: its fields, with `content` (a string, or the text of each text
    part) compiled."""

    message: dict[str, Any]  # the stored message, as pushed
    content: Template | tuple[Template | None, ...] | None  # per content part: None when not a text part


def compile_messages(messages: Sequence[Mapping[str, Any]]) -> tuple[tuple[CompiledMessage, ...], frozenset[str]]:
    """Compile every message's text; return them and the set of variable names they use."""
    out: list[CompiledMessage] = []
    names: set[str] = set()
    for i, m in enumerate(messages):
        content = m.get("content")
        compiled: Template | tuple[Template | None, ...] | None
        if isinstance(content, str):
            compiled = compile_template(content, f"messages[{i}].content")
            names |= compiled.names
        elif isinstance(content, list):
            parts: list[Template | None] = []
            for j, part in enumerate(content):
                if isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str):
                    t = compile_template(part["text"], f"messages[{i}].content[{j}].text")
                    names |= t.names
                    parts.append(t)
                else:
                    parts.append(None)
            compiled = tuple(parts)
        else:
            compiled = None
        out.append(CompiledMessage(dict(m), compiled))
    return tuple(out), frozenset(names)


def check_variables(names: frozenset[str], variables: Mapping[str, Any]) -> dict[str, str]:
    """The values as text, after checking they name exactly the template's variables."""
    for name in sorted(names):
        if name not in variables:
            raise TemplateError(f"Prompt variable '{name}' is missing.", f"variables.{name}")
    for name in sorted(variables):
        if name not in names:
            raise TemplateError(f"Prompt variable '{name}' is not used by this prompt version.", f"variables.{name}")
    return {name: as_text(variables[name]) for name in names}


def render_messages(messages: Sequence[CompiledMessage], values: Mapping[str, str]) -> list[dict[str, Any]]:
    """The messages with their text rendered (each a fresh dict; the compiled ones are not changed)."""
    out = []
    for cm in messages:
        m = dict(cm.message)
        c = cm.content
        if isinstance(c, Template):
            m["content"] = c.render(values)
        elif isinstance(c, tuple):
            parts = m["content"]
            m["content"] = [p if t is None else {**p, "text": t.render(values)} for p, t in zip(parts, c, strict=True)]
        out.append(m)
    return out


def render(messages: Sequence[Mapping[str, Any]], variables: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Compile and render in one go (clients that render themselves; keel.client.prompts)."""
    compiled, names = compile_messages(messages)
    return render_messages(compiled, check_variables(names, variables))
