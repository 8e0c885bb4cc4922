"""The vocabulary of the admin API's OpenAPI document: an `Op` per route, as data, and JSON Schema shorthands.

Each admin area lists its operations in a module beside this one (`AREA: tuple[Op, ...]`); document.py
assembles them. An `Op` names its route exactly as the app serves it (Starlette's path, `{id:path}`
included), so a test can hold the spec and the app's routes to each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

Schema = dict[str, Any]

# Security requirements (OpenAPI: any one of the listed entries suffices). Every scheme is a bearer token.
# the admin token, a person's personal access token or SSO JWT (as their roles allow), or a tenant's virtual key
ADMIN: tuple[str, ...] = ("adminToken", "personalAccessToken", "jwtBearer")
EITHER: tuple[str, ...] = (*ADMIN, "virtualKey")
KEY: tuple[str, ...] = ("virtualKey",)
PUBLIC: tuple[str, ...] = ()

# Errors every authenticated JSON route can answer: bad input, no or wrong token, refused, unknown, too large.
COMMON_ERRORS: tuple[int, ...] = (400, 401, 403, 404, 413)


@dataclass(frozen=True, slots=True)
class Param:
    name: str
    schema: Schema
    description: str = ""
    required: bool = False
    where: str = "query"


@dataclass(frozen=True, slots=True)
class Op:
    method: str  # GET, POST, …
    path: str  # the app's route path, e.g. "/api/keys/{key_id}/revoke" or ".../{id:path}"
    summary: str
    ok: dict[int, Schema]  # success status → the JSON body's schema
    body: Schema | None = None  # the JSON request body's schema (None: no body)
    body_required: bool = True
    query: tuple[Param, ...] = ()
    path_params: dict[str, Schema] = field(default_factory=dict)  # only where a path parameter is not a plain string
    security: tuple[str, ...] = ADMIN
    errors: tuple[int, ...] = COMMON_ERRORS
    extra_content: dict[str, Schema] = field(default_factory=dict)  # more request media types (multipart …)
    streams: bool = False  # a 200 may be text/event-stream (`"stream": true`)
    media: tuple[str, ...] = ("application/json",)  # the success answers' media types (an export: ndjson, csv)
    description: str = ""


# ---- JSON Schema shorthands ------------------------------------------------------------------------------

STR: Schema = {"type": "string"}
INT: Schema = {"type": "integer"}
NUM: Schema = {"type": "number"}
BOOL: Schema = {"type": "boolean"}
ANY: Schema = {}
OBJ: Schema = {"type": "object"}  # any object
TIME: Schema = {"type": "number", "description": "Unix time, seconds"}


SLUG: Schema = {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"}  # names and ids in paths
WINDOW_EDGE: Schema = {
    "type": "string",
    "pattern": "^[1-9][0-9]{0,2}[smhd]$",
    "description": "a duration back from now (15m, 24h, 7d); unix seconds are accepted too",
}


def limit(most: int) -> Schema:
    return {"type": "integer", "minimum": 1, "maximum": most}


def closed(schema: Schema) -> Schema:
    """`schema` refusing unknown properties (the handler names an unknown field in a 400)."""
    return {**schema, "additionalProperties": False}


def null(schema: Schema) -> Schema:
    """`schema` or null."""
    t = schema.get("type")
    if isinstance(t, str) and set(schema) <= {"type", "description", "format", "minimum", "maximum"}:
        return {**schema, "type": [t, "null"]}
    return {"anyOf": [schema, {"type": "null"}]}


def arr(items: Schema, **more: Any) -> Schema:
    return {"type": "array", "items": items, **more}


def obj(required: tuple[str, ...] = (), **props: Schema) -> Schema:
    """An object with these properties (more are allowed: answers grow fields); `required` must be present."""
    schema: Schema = {"type": "object", "properties": props}
    if required:
        schema["required"] = list(required)
    return schema


def page(items: Schema, **more: Schema) -> Schema:
    """The admin API's list answer: `{"data": [...]}` plus paging fields."""
    return obj(("data",), data=arr(items), **more)


def enum(*values: str) -> Schema:
    return {"type": "string", "enum": list(values)}


def q(name: str, schema: Schema = STR, description: str = "", required: bool = False) -> Param:
    return Param(name, schema, description, required)


USER_SCHEMES = ADMIN  # the admin API's people
TENANT_Q = q("tenant", SLUG, "the tenant (admin token); a virtual key acts on its own tenant")
