"""A JSON Schema as Anthropic's structured outputs take it, for an OpenAI client's `response_format`.

Anthropic constrains decoding to a subset of JSON Schema: objects closed (`additionalProperties:
false`), `oneOf` read as `anyOf`, string formats from a fixed list, `minItems` 0 or 1 only, and no
numeric or length bounds. The `anthropic` SDK rewrites a schema so before sending it (its
`transform_schema`); an OpenAI client's schema has not been, so Keel does the same: what the subset
cannot say moves into the node's description, where the model still reads it. Pure, no I/O.
"""

from __future__ import annotations

from typing import Any

from keel.types import JSON

_FORMATS = frozenset({"date-time", "time", "date", "duration", "email", "hostname", "uri", "ipv4", "ipv6", "uuid"})
_DEPTH = 64  # deeper nodes go as they are (a schema that deep is refused upstream, never a crash here)


def anthropic_schema(schema: JSON, depth: int = 0) -> JSON:
    """`schema` rewritten into the subset; a node it cannot read (no type, no variants) stays as it is."""
    if depth > _DEPTH:
        return schema
    rest = dict(schema)
    out: JSON = {}
    defs = rest.pop("$defs", None)
    if isinstance(defs, dict):
        out["$defs"] = {name: _node(d, depth) for name, d in defs.items()}
    if "$ref" in rest:
        return {**out, "$ref": rest.pop("$ref")}
    kind = rest.pop("type", None)
    variants = {k: rest.pop(k) for k in ("anyOf", "oneOf", "allOf") if k in rest}
    for key in ("enum", "const"):
        if key in rest and _literal(rest[key]):
            out[key] = rest.pop(key)
            kind = None
    if variants:
        key, items = next(iter(variants.items()))
        out["allOf" if key == "allOf" else "anyOf"] = [_node(v, depth) for v in items if isinstance(v, dict)]
    elif kind is not None:
        out["type"] = kind
    elif "enum" not in out and "const" not in out:
        return schema
    out.update((key, rest.pop(key)) for key in ("description", "title") if key in rest)
    _typed(kind, rest, out, depth)
    if rest:  # what the subset cannot say, said in words
        said = "{" + ", ".join(f"{k}: {v}" for k, v in rest.items()) + "}"
        out["description"] = f"{out['description']}\n\n{said}" if "description" in out else said
    return out


def _typed(kind: Any, rest: JSON, out: JSON, depth: int) -> None:
    """The keywords of an object, string or array node that the subset keeps, moved from `rest`."""
    if kind == "object":
        properties = rest.pop("properties", {})
        out["properties"] = {k: _node(v, depth) for k, v in properties.items()} if isinstance(properties, dict) else {}
        rest.pop("additionalProperties", None)
        out["additionalProperties"] = False
        if "required" in rest:
            out["required"] = rest.pop("required")
    elif kind == "string" and rest.get("format") in _FORMATS:
        out["format"] = rest.pop("format")
    elif kind == "array":
        if isinstance(rest.get("items"), dict):
            out["items"] = _node(rest.pop("items"), depth)
        if rest.get("minItems") in (0, 1):
            out["minItems"] = rest.pop("minItems")


def _node(value: Any, depth: int) -> Any:
    return anthropic_schema(value, depth + 1) if isinstance(value, dict) else value


def _literal(value: Any) -> bool:
    primitive = (str, int, float, bool, type(None))
    return isinstance(value, primitive) or (
        isinstance(value, list) and bool(value) and all(isinstance(v, primitive) for v in value)
    )
