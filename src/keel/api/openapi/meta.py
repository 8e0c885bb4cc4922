"""The document itself (served by api/app.py): public, like /healthz, so tools can read it without a token."""

from __future__ import annotations

from keel.api.openapi.spec import OBJ, PUBLIC, Op

META: tuple[Op, ...] = (
    Op("GET", "/api/openapi.json", "This OpenAPI document", {200: OBJ}, security=PUBLIC, errors=()),
)
