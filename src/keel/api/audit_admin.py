"""The audit log's admin routes, behind the admin guard with `audit.read` (a tenant's people: their tenant's entries).

- `GET /api/audit`: entries in chain order, filtered (since, until, tenant, actor, action prefix, target),
  a page at a time: `after` is the cursor (a seq), `next_after` the next page's.
- `GET /api/audit/verify`: the whole chain; 409 naming the first entry that does not hold.
- `GET /api/audit/export?since=&until=&format=jsonl|csv`: the range streamed page by page (memory bounded
  by a page), up to the head as it was when the export began; JSONL ends with a trailer that lets
  `keel audit verify --file` check the file alone (keel.audit.export).
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from keel.api.guard import Guard
from keel.api.openai import JSON_TYPE
from keel.audit.export import FORMATS, AuditQuery, QueryError, Snapshot, csv_header, csv_lines, jsonl_lines
from keel.audit.log import AuditLog, entry_json
from keel.errors import InvalidRequest
from keel.runtime.components import Runtime
from keel.tenancy.actor import Actor

MAX_PAGE = 1000
KNOWN = frozenset({"since", "until", "tenant", "actor", "action", "target", "after", "limit", "format"})


def _json(data: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status, media_type=JSON_TYPE)


def _query(request: Request, tenant: str | None) -> AuditQuery:
    """The request's filters; `tenant`, when the caller is bound to one, replaces the query's."""
    params = request.query_params
    for name, value in params.multi_items():
        if name not in KNOWN:
            raise InvalidRequest(f"Unknown parameter '{name}'; known: {', '.join(sorted(KNOWN))}.", name)
        if "\x00" in value or len(value) > 512:
            raise InvalidRequest("Parameters must be at most 512 characters, without NUL.", name)
    try:
        query = AuditQuery.parse({k: params.get(k) for k in KNOWN})
    except QueryError as exc:
        raise InvalidRequest(f"{exc}.", exc.param) from None
    return query if tenant is None else dataclasses.replace(query, tenant=tenant)


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


class AuditAdmin:
    def __init__(self, runtime: Runtime, guard: Guard) -> None:
        self._store = runtime.store
        self._audit = runtime.get(AuditLog)
        self._guard = guard

    def routes(self) -> list[Route]:
        def r(path: str, handler: Callable[[Request, str | None], Awaitable[Response]]) -> Route:
            async def scoped(request: Request, who: Actor) -> Response:
                return await handler(request, who.scope(request.query_params.get("tenant")))

            return self._guard.route(path, scoped, ["GET"], "audit.read")

        return [
            r("/api/audit", self.list_audit),
            r("/api/audit/verify", self.verify_audit),
            r("/api/audit/export", self.export_audit),
        ]

    async def list_audit(self, request: Request, scope: str | None) -> Response:
        query = _query(request, scope)
        after = _int(request.query_params, "after", 0, 0, 2**62)
        limit = _int(request.query_params, "limit", 100, 1, MAX_PAGE)
        rows = await asyncio.to_thread(query.page, self._store, after, limit)
        data = [entry_json(e) for e in rows]
        return _json({"data": data, "next_after": rows[-1].seq if len(rows) == limit else None})

    async def verify_audit(self, request: Request, scope: str | None) -> Response:
        """The whole chain (a verdict, no entry's content), whoever asks."""
        verdict = await asyncio.to_thread(self._audit.verify)
        return _json(verdict.json(), 200 if verdict.ok else 409)

    async def export_audit(self, request: Request, scope: str | None) -> Response:
        query = _query(request, scope)
        fmt = request.query_params.get("format", "jsonl")
        if fmt not in FORMATS:
            raise InvalidRequest(f"'format' must be one of {', '.join(FORMATS)}.", "format")
        snap = await asyncio.to_thread(Snapshot.begin, self._store, query)
        store = self._store

        async def body() -> AsyncIterator[bytes]:
            if fmt == "csv":
                yield csv_header()
            while page := await asyncio.to_thread(snap.next_page, store):
                yield csv_lines(page) if fmt == "csv" else jsonl_lines(page)
            if fmt == "jsonl":
                yield snap.trailer()

        media = "text/csv; charset=utf-8" if fmt == "csv" else "application/x-ndjson"
        name = f"keel-audit.{fmt}"
        return StreamingResponse(
            body(), media_type=media, headers={"content-disposition": f'attachment; filename="{name}"'}
        )
