"""The agents' and audit log's admin routes: `/api/audit` (admin token) and, for tools, secrets, runs and
approvals, `/api/agents/…` (the admin token, naming a tenant, or a tenant's virtual key for its own)."""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from keel.api.openai import JSON_TYPE, bearer, error_response
from keel.audit.log import AuditLog, entry_json, parse_instant
from keel.errors import AuthError, InvalidRequest, KeelError, PermissionDenied
from keel.runtime.components import Runtime

MAX_AUDIT_PAGE = 1000


def _json(data: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status, media_type=JSON_TYPE)


def _int(params: Any, name: str, default: int, low: int, high: int) -> int:
    text = params.get(name)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise InvalidRequest(f"'{name}' must be an integer from {low} to {high}.", name)
    return value


class AgentsAdmin:
    def __init__(self, runtime: Runtime) -> None:
        self._rt = runtime
        self._audit = runtime.get(AuditLog)
        self._token = (runtime.config.admin_token or "").encode()

    def routes(self) -> list[Route]:
        return [
            Route("/api/audit", self._admin(self.list_audit), methods=["GET"]),
            Route("/api/audit/verify", self._admin(self.verify_audit), methods=["GET"]),
        ]

    def _admin(self, handler: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Any]:
        async def endpoint(request: Request) -> Response:
            try:
                if not self._token:
                    raise PermissionDenied("The admin API is disabled: set admin_token in keel.yaml.")
                if not hmac.compare_digest((bearer(request) or "").encode(), self._token):
                    raise AuthError("Invalid admin token.")
                for value in request.query_params.values():
                    if "\x00" in value:
                        raise InvalidRequest("Parameters must not contain NUL.", None)
                return await handler(request)
            except KeelError as err:
                return error_response(err)

        return endpoint

    async def list_audit(self, request: Request) -> Response:
        """?since=&until=&tenant=&after=<seq>&limit= — entries in chain order with their hashes."""
        q = request.query_params
        bounds: dict[str, float | None] = {}
        for name in ("since", "until"):
            try:
                bounds[name] = None if q.get(name) is None else parse_instant(q[name], name)
            except ValueError as exc:
                raise InvalidRequest(str(exc), name) from None
        after = _int(q, "after", 0, 0, 2**62)
        limit = _int(q, "limit", 100, 1, MAX_AUDIT_PAGE)
        tenant = q.get("tenant")
        store = self._rt.store
        rows = await asyncio.to_thread(
            lambda: store.list_audit(
                after_seq=after, since=bounds["since"], until=bounds["until"], tenant=tenant, limit=limit
            )
        )
        data = [entry_json(e) for e in rows]
        return _json({"data": data, "next_after": rows[-1].seq if len(rows) == limit else None})

    async def verify_audit(self, request: Request) -> Response:
        verdict = await asyncio.to_thread(self._audit.verify)
        return _json(verdict.json(), 200 if verdict.ok else 409)
