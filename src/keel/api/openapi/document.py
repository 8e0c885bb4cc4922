"""The admin API's OpenAPI 3.1 document, assembled once from the areas' `Op` tuples.

To document a new admin route: add an `Op` to its area's tuple (or a new area module, listed in AREAS).
tests/e2e/test_openapi.py fails while a route under /api has no `Op`, or an `Op` names no route.
"""

from __future__ import annotations

import functools
import re
from typing import Any

import orjson

from keel import __version__
from keel.api.openapi import agents, core, evals, jobs, prompts, rag, tenancy
from keel.api.openapi.agents import AGENTS
from keel.api.openapi.core import CORE
from keel.api.openapi.evals import EVALS
from keel.api.openapi.jobs import JOBS
from keel.api.openapi.meta import META
from keel.api.openapi.prompts import PROMPTS
from keel.api.openapi.rag import RAG
from keel.api.openapi.spec import SLUG, STR, Op, Schema, null, obj
from keel.api.openapi.tenancy import TENANCY

AREAS: dict[str, tuple[Op, ...]] = {
    "admin": CORE,
    "jobs": JOBS,
    "prompts": PROMPTS,
    "evals": EVALS,
    "rag": RAG,
    "agents": AGENTS,
    "tenancy": TENANCY,
    "meta": META,
}

# Shapes shown by name under components/schemas (each area's NAMED): where an Op uses that very schema
# object, the document refers to it by name instead of repeating it.
NAMED: dict[str, Schema] = {
    name: schema for area in (core, jobs, prompts, evals, rag, agents, tenancy) for name, schema in area.NAMED.items()
}
ERROR: Schema = obj(
    ("error",),
    error=obj(("message", "type", "param", "code"), message=STR, type=STR, param=null(STR), code=null(STR)),
)
# OpenAPI 3.1: a text/event-stream `schema` describes each event (3.2 would call it `itemSchema`)
SSE_EVENT: Schema = obj(("data",), event=STR, data=STR, id=STR, retry={"type": "integer"})
_BEARER = "Authorization: Bearer <token>."
SECURITY_SCHEMES: dict[str, Schema] = {
    "adminToken": {"type": "http", "scheme": "bearer", "description": "The admin token (`admin_token`). " + _BEARER},
    "virtualKey": {"type": "http", "scheme": "bearer", "description": "A tenant's virtual key. " + _BEARER},
    "personalAccessToken": {
        "type": "http",
        "scheme": "bearer",
        "description": "A user's personal access token. " + _BEARER,
    },
    "jwtBearer": {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": "A JWT from the tenant's OIDC issuer, checked against its JWKS. " + _BEARER,
    },
}
_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(?::[a-z]+)?\}")
_REASONS = {
    400: "Invalid request",
    401: "Missing or invalid token",
    403: "Not allowed, or the admin API is disabled",
    404: "Not found",
    409: "Conflict",
    413: "Body too large",
    415: "Unsupported media type",
    429: "Rate limited",
    502: "Upstream failed",
    503: "Unavailable; retry",
    504: "Deadline passed",
}


def openapi_path(route_path: str) -> str:
    """Starlette's `{id:path}` is OpenAPI's `{id}`."""
    return _PARAM.sub(r"{\1}", route_path)


def refs(schema: Any, names: dict[int, str], top: bool = False) -> Any:
    """`schema` with every named sub-schema replaced by a $ref to it (a named schema itself when `top`)."""
    if isinstance(schema, dict):
        if not top and id(schema) in names:
            return {"$ref": f"#/components/schemas/{names[id(schema)]}"}
        return {k: refs(v, names) for k, v in schema.items()}
    if isinstance(schema, list):
        return [refs(v, names) for v in schema]
    return schema


def operation(op: Op, tag: str) -> dict[str, Any]:
    params: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": op.path_params.get(name, SLUG)}
        for name in _PARAM.findall(op.path)
    ]
    params += [
        {"name": p.name, "in": p.where, "required": p.required, "schema": p.schema}
        | ({"description": p.description} if p.description else {})
        for p in op.query
    ]
    responses: dict[str, Any] = {}
    for status, schema in sorted(op.ok.items()):
        content: dict[str, Any] = {media: {"schema": schema} for media in op.media}
        if op.streams and status == 200:
            content["text/event-stream"] = {"schema": SSE_EVENT}
        responses[str(status)] = {"description": "OK" if status < 300 else "Conflict", "content": content}
    for status in op.errors:
        responses.setdefault(str(status), {"$ref": f"#/components/responses/E{status}"})
    out: dict[str, Any] = {
        "operationId": f"{op.method.lower()}_{re.sub(r'[^A-Za-z0-9]+', '_', openapi_path(op.path)).strip('_')}",
        "summary": op.summary,
        "tags": [tag],
        "security": [{name: []} for name in op.security],
        "responses": responses,
    }
    if op.description:
        out["description"] = op.description
    if params:
        out["parameters"] = params
    if op.body is not None:
        media = {"application/json": {"schema": op.body}} | {k: {"schema": v} for k, v in op.extra_content.items()}
        out["requestBody"] = {"required": op.body_required, "content": media}
    return out


@functools.cache
def document() -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for tag, ops in AREAS.items():
        for op in ops:
            paths.setdefault(openapi_path(op.path), {})[op.method.lower()] = operation(op, tag)
    names = {id(schema): name for name, schema in NAMED.items()}
    schemas = {name: refs(schema, names, top=True) for name, schema in sorted(NAMED.items())}
    error = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Keel admin API",
            "version": __version__,
            "description": "Keel's admin API under /api. Errors use OpenAI's error format. Every token is "
            "sent as `Authorization: Bearer`.",
        },
        "tags": [{"name": tag} for tag in AREAS],
        "paths": refs(paths, names),
        "components": {
            "schemas": {**schemas, "Error": ERROR},
            "responses": {f"E{s}": {"description": reason, "content": error} for s, reason in sorted(_REASONS.items())},
            "securitySchemes": SECURITY_SCHEMES,
        },
    }


@functools.cache
def document_bytes() -> bytes:
    return orjson.dumps(document())


def routes() -> set[tuple[str, str]]:
    """(method, route path) of every documented operation, as the app names them."""
    return {(op.method, op.path) for ops in AREAS.values() for op in ops}
