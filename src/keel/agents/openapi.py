"""Tools from an OpenAPI 3 document: one `http` tool per operation.

An operation's path and query parameters and its JSON request body's properties become the tool's
parameters (one JSON-schema object, `required` kept); path parameters fill the URL template (OpenAPI's
`{name}` is Keel's), query parameters go to the query string (`http.query`), the rest is the JSON body.
Local `$ref`s (`#/components/...`) are inlined (a cycle becomes an open schema). Header and cookie
parameters, non-JSON bodies and a body that is not an object are refused for that operation, by name,
rather than guessed. Reads (GET) get the policy `allow`, other methods `writes` (default `approve`: a
tool that changes something waits for a person until its policy says otherwise).
"""

from __future__ import annotations

import re
from typing import Any

METHODS = ("get", "post", "put", "patch", "delete")
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")
MAX_DEPTH = 24


class OpenApiError(ValueError):
    pass


def tool_name(op: dict[str, Any], method: str, path: str) -> str:
    raw = op.get("operationId") or f"{method} {path}"
    return _UNSAFE.sub("_", str(raw)).strip("_")[:64] or method


def _resolve(doc: dict[str, Any], node: Any, depth: int = 0, seen: tuple[str, ...] = ()) -> Any:
    if depth > MAX_DEPTH:
        return {}
    if isinstance(node, list):
        return [_resolve(doc, x, depth + 1, seen) for x in node]
    if not isinstance(node, dict):
        return node
    ref = node.get("$ref")
    if isinstance(ref, str):
        if not ref.startswith("#/") or ref in seen:
            return {}  # a remote or cyclic reference: any value
        target: Any = doc
        for part in ref[2:].split("/"):
            part = part.replace("~1", "/").replace("~0", "~")
            if not isinstance(target, dict) or part not in target:
                raise OpenApiError(f"{ref} does not resolve")
            target = target[part]
        return _resolve(doc, target, depth + 1, (*seen, ref))
    return {k: _resolve(doc, v, depth + 1, seen) for k, v in node.items() if k not in ("example", "examples", "xml")}


def _operation(
    doc: dict[str, Any], base: str, path: str, method: str, op: dict[str, Any], shared: list[Any], writes: str
) -> dict[str, Any]:
    name = tool_name(op, method, path)
    props: dict[str, Any] = {}
    required: list[str] = []
    query: list[str] = []
    for p in [*shared, *op.get("parameters", [])]:
        p = _resolve(doc, p)
        where, pname = p.get("in"), p.get("name")
        if where not in ("path", "query") or not isinstance(pname, str):
            raise OpenApiError(f"{name}: parameter {pname!r} in {where} is not supported (path and query only)")
        schema = dict(p.get("schema") or {"type": "string"})
        if p.get("description"):
            schema.setdefault("description", str(p["description"])[:500])
        props[pname] = schema
        if where == "query":
            query.append(pname)
        if p.get("required") or where == "path":
            required.append(pname)
    for pname in re.findall(r"\{([^}/]+)\}", path):  # a path template's names, declared or not
        props.setdefault(pname, {"type": "string"})
        required.append(pname)
    if op.get("requestBody"):
        required += _body(name, _resolve(doc, op["requestBody"]), props)
    description = str(op.get("summary") or op.get("description") or f"{method.upper()} {path}")[:4096]
    parameters: dict[str, Any] = {"type": "object", "properties": props}
    if required:
        parameters["required"] = sorted(set(required))
    return {
        "name": name, "kind": "http", "description": description, "parameters": parameters,
        "http": {"method": method.upper(), "url": base.rstrip("/") + path, "query": query},
        "policy": {"default": "allow" if method == "get" else writes},
    }  # fmt: skip


def _body(name: str, body: dict[str, Any], props: dict[str, Any]) -> list[str]:
    """Add a JSON object body's properties to `props`; the required ones, when the body is required."""
    content = body.get("content") or {}
    json_type = next((t for t in content if t.split(";")[0].strip().endswith("json")), None)
    if json_type is None:
        raise OpenApiError(f"{name}: a request body of {sorted(content)} is not supported (JSON only)")
    schema = content[json_type].get("schema") or {}
    if schema.get("type", "object") != "object":
        raise OpenApiError(f"{name}: a request body that is not a JSON object is not supported")
    for key, sub in (schema.get("properties") or {}).items():
        if key in props:
            raise OpenApiError(f"{name}: body property {key!r} has the name of a parameter")
        props[key] = sub
    return [r for r in schema.get("required", []) if r in props] if body.get("required", False) else []


def tools_from_openapi(
    doc: Any, *, base_url: str | None = None, only: list[str] | None = None, writes: str = "approve"
) -> list[dict[str, Any]]:
    """Tool specs (for `parse_spec`) for the document's operations, or those named in `only`."""
    if not isinstance(doc, dict) or not str(doc.get("openapi", "")).startswith("3"):
        raise OpenApiError("not an OpenAPI 3 document (its 'openapi' field must be 3.x)")
    servers = doc.get("servers") or []
    base = base_url or (servers[0].get("url") if servers and isinstance(servers[0], dict) else None)
    if not isinstance(base, str) or not re.match(r"^https?://", base):
        raise OpenApiError("no http(s) server URL: give --base-url (the document's servers[0].url is not one)")
    specs: list[dict[str, Any]] = []
    for path, item in (doc.get("paths") or {}).items():
        if not isinstance(item, dict):
            continue
        shared = item.get("parameters") or []
        for method in METHODS:
            op = item.get(method)
            if not isinstance(op, dict):
                continue
            if only is not None and tool_name(op, method, path) not in only:
                continue
            specs.append(_operation(doc, base, path, method, op, shared, writes))
    if only is not None:
        missing = sorted(set(only) - {s["name"] for s in specs})
        if missing:
            raise OpenApiError(f"no operation named {', '.join(missing)} in the document")
    if not specs:
        raise OpenApiError("the document has no operations")
    return specs
