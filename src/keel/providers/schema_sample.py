"""A value that fits a JSON schema, made deterministically: what the simulated provider answers when a
request names tools or a `response_format` schema, so structured-output clients (the openai SDK's
`parse`, instructor, pydantic-ai) work on the quick start without a model.

Covers what those clients send: types (and type lists), `enum`/`const`, `required` and every listed
property, nested objects and arrays (`items`, `minItems`/`maxItems`), `$ref` into `$defs`/`definitions`,
`anyOf`/`oneOf` (the first non-null choice), `allOf` (merged), string `format`s and length bounds,
numeric bounds. The same schema always gives the same value; deep down only required properties and
the fewest items allowed are made, so a recursive schema (a tree) ends.
"""

from __future__ import annotations

from typing import Any

_MAX_DEPTH = 12  # past it: None (only a schema nesting this deep without end reaches it)
_SHALLOW = 4  # past it: only required properties and the fewest items allowed, so recursive schemas end
_FORMATS = {
    "date-time": "2025-01-01T00:00:00Z",
    "date": "2025-01-01",
    "time": "00:00:00",
    "email": "simulated@example.com",
    "uri": "https://example.com/simulated",
    "url": "https://example.com/simulated",
    "uuid": "00000000-0000-4000-8000-000000000000",
    "ipv4": "192.0.2.1",
    "ipv6": "2001:db8::1",
    "hostname": "example.com",
    "duration": "P1D",
}


def sample(schema: Any, root: Any = None, *, name: str = "value", depth: int = 0) -> Any:
    """A value valid for `schema` (`root` holds `$defs` for `$ref`; defaults to `schema` itself)."""
    root = schema if root is None else root
    if not isinstance(schema, dict) or depth > _MAX_DEPTH:
        return None if depth > _MAX_DEPTH else f"simulated {name}"
    if "$ref" in schema:
        return sample(_resolve(schema["$ref"], root), root, name=name, depth=depth + 1)
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    if "default" in schema and depth > 0:
        return schema["default"]
    for key in ("anyOf", "oneOf"):
        choices = schema.get(key)
        if isinstance(choices, list) and choices:
            pick = next((c for c in choices if not _is_null(c)), choices[0])
            return sample(pick, root, name=name, depth=depth + 1)
    if isinstance(schema.get("allOf"), list):
        merged: dict[str, Any] = {}
        for part in schema["allOf"]:
            part = _resolve(part["$ref"], root) if isinstance(part, dict) and "$ref" in part else part
            if isinstance(part, dict):
                merged = _merge(merged, part)
        return sample(_merge(merged, {k: v for k, v in schema.items() if k != "allOf"}), root, name=name, depth=depth)
    return _typed(schema, _type_of(schema), root, name, depth)


def _typed(schema: dict[str, Any], kind: str, root: Any, name: str, depth: int) -> Any:
    if kind == "object":
        props = schema.get("properties")
        if not isinstance(props, dict):
            return {}
        if depth > _SHALLOW:
            required = schema.get("required")
            required = required if isinstance(required, list) else []
            props = {k: v for k, v in props.items() if k in required}
        return {key: sample(sub, root, name=key, depth=depth + 1) for key, sub in props.items()}
    if kind == "array":
        items = schema.get("items")
        if isinstance(schema.get("prefixItems"), list):
            return [sample(s, root, name=name, depth=depth + 1) for s in schema["prefixItems"]]
        count = int(schema.get("minItems", 0 if depth > _SHALLOW else 1))
        count = count if depth > _SHALLOW else max(1, count)
        count = min(count, int(schema.get("maxItems", count)))
        return [sample(items, root, name=f"{name} {i + 1}", depth=depth + 1) for i in range(count)]
    if kind in ("integer", "number"):
        return _number(schema, kind)
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return _string(schema, name)


def _type_of(schema: dict[str, Any]) -> str:
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if isinstance(kind, str):
        return kind
    if "properties" in schema:
        return "object"
    if "items" in schema:
        return "array"
    return "string"


def _string(schema: dict[str, Any], name: str) -> str:
    text = _FORMATS.get(str(schema.get("format")), f"simulated {name}")
    low, high = int(schema.get("minLength", 0)), schema.get("maxLength")
    if len(text) < low:
        text = text + "x" * (low - len(text))
    if isinstance(high, int) and len(text) > high:
        text = text[:high]
    return text


def _number(schema: dict[str, Any], kind: str) -> int | float:
    low = schema.get("minimum", schema.get("exclusiveMinimum"))
    high = schema.get("maximum", schema.get("exclusiveMaximum"))
    value: float = 1
    if isinstance(low, int | float):
        value = low + (1 if "exclusiveMinimum" in schema and "minimum" not in schema else 0)
    if isinstance(high, int | float) and value > high:
        value = high - (1 if "exclusiveMaximum" in schema and "maximum" not in schema else 0)
    return int(value) if kind == "integer" else float(value)


def _is_null(schema: Any) -> bool:
    return isinstance(schema, dict) and schema.get("type") == "null"


def _resolve(ref: Any, root: Any) -> Any:
    """`#/$defs/Name` (or any `#/a/b` pointer) inside `root`; an unknown reference is an empty schema."""
    node = root
    if not isinstance(ref, str) or not ref.startswith("#"):
        return {}
    for part in ref[1:].split("/"):
        if not part:
            continue
        part = part.replace("~1", "/").replace("~0", "~")
        node = node.get(part) if isinstance(node, dict) else None
    return node if isinstance(node, dict) else {}


def _merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    merged = {**a, **b}
    if isinstance(a.get("properties"), dict) and isinstance(b.get("properties"), dict):
        merged["properties"] = {**a["properties"], **b["properties"]}
    if isinstance(a.get("required"), list) and isinstance(b.get("required"), list):
        merged["required"] = [*a["required"], *b["required"]]
    return merged
