"""Stored Responses API responses over any SQL dialect (`ResponseStore`).

One row per response in table `responses`, keyed by its id; every read and delete filters on the
tenant. A conversation (`previous_response_id`) is read in one round trip: a recursive CTE follows
`previous_id` from the newest response back, within the tenant and at most `limit` rows. Deletes for
retention and purges are bounded like the traces' (keel.store.sql.purge): at most `limit` rows each.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import orjson

from keel.store.protocols import StoredResponse, UnstorableRecords
from keel.store.protocols.responses import MAX_CHAIN
from keel.store.sql.dialect import Database, Dialect
from keel.store.sql.purge import scope_where

COLUMNS = ("id", "tenant", "user_id", "created_at", "previous_id", "trace_id", "input_items", "response")
_JSON = frozenset({"input_items", "response"})
_SELECT = ", ".join(f"r.{c}" for c in COLUMNS)


def _json_text(value: Any) -> str:
    """JSON text every store takes: PostgreSQL's jsonb refuses the escape of NUL, so it becomes U+FFFD."""
    text = orjson.dumps(value).decode()
    return text.replace("\\u0000", "\\ufffd") if "\\u0000" in text else text


def to_row(r: StoredResponse) -> tuple[Any, ...]:
    items, response = _json_text(r.input_items), _json_text(r.response)
    return (r.id, r.tenant, r.user, float(r.created_at), r.previous_id, r.trace_id, items, response)


def from_row(row: Sequence[Any]) -> StoredResponse:
    rid, tenant, user, created_at, previous_id, trace_id, items, response = row
    items = orjson.loads(items) if isinstance(items, str) else items
    response = orjson.loads(response) if isinstance(response, str) else response
    return StoredResponse(rid, tenant, float(created_at), response, items, previous_id, user, trace_id)


# ---- statements ---------------------------------------------------------------------------------


@functools.cache
def insert_sql(d: Dialect) -> str:
    return (
        f"INSERT INTO responses ({', '.join(COLUMNS)}) VALUES ({d.values(COLUMNS, _JSON)}) ON CONFLICT (id) DO NOTHING"
    )


@functools.cache
def chain_sql(mark: str) -> str:
    """The conversation ending at one response: (tenant, id, tenant, limit) → rows, oldest first."""
    return (
        "WITH RECURSIVE chain(id, previous_id, depth) AS ("
        f" SELECT id, previous_id, 0 FROM responses WHERE tenant = {mark} AND id = {mark}"
        " UNION ALL"
        " SELECT p.id, p.previous_id, c.depth + 1 FROM responses p JOIN chain c ON p.id = c.previous_id"
        f" WHERE p.tenant = {mark} AND c.depth + 1 < {mark})"
        f" SELECT {_SELECT} FROM responses r JOIN chain c ON r.id = c.id ORDER BY c.depth DESC"
    )


def delete_where(
    mark: str,
    *,
    limit: int,
    tenant: str | None,
    user: str | None,
    before: float | None,
    exclude: Sequence[str],
    lock: str = "",
) -> tuple[str, list[Any]]:
    """DELETE of at most `limit` responses of `tenant` (and `user`), else of any tenant not in `exclude`,
    created before `before`."""
    if user is not None and tenant is None:
        raise ValueError("a user's responses are deleted within one tenant: give the tenant")
    if tenant is None and before is None:
        raise ValueError("refusing to delete every response: give a tenant or a cut-off time")
    where, params = scope_where(mark, tenant=tenant, user=user, before=before, exclude=exclude, at="created_at")
    pick = f"SELECT id FROM responses WHERE {where} LIMIT {mark}{lock}"
    return f"DELETE FROM responses WHERE id IN ({pick})", [*params, limit]


class SqlResponses:
    """`ResponseStore` over any SQL dialect."""

    _db: Database

    def put_response(self, row: StoredResponse) -> None:
        db = self._db
        try:
            with db.session() as s:
                s.execute(insert_sql(db.dialect), to_row(row))
        except Exception as exc:
            if db.refused(exc):
                raise UnstorableRecords(f"{type(exc).__name__}: {exc}") from exc
            raise

    def get_response(self, tenant: str, response_id: str) -> StoredResponse | None:
        mark = self._db.dialect.mark
        sql = f"SELECT {_SELECT} FROM responses r WHERE r.tenant = {mark} AND r.id = {mark}"
        with self._db.session() as s:
            row = s.fetchone(sql, (tenant, response_id))
        return None if row is None else from_row(row)

    def response_chain(self, tenant: str, response_id: str, limit: int = MAX_CHAIN) -> list[StoredResponse]:
        with self._db.session() as s:
            rows = s.fetchall(chain_sql(self._db.dialect.mark), (tenant, response_id, tenant, limit))
        return [from_row(r) for r in rows]

    def delete_response(self, tenant: str, response_id: str) -> bool:
        mark = self._db.dialect.mark
        with self._db.session() as s:
            return s.execute(f"DELETE FROM responses WHERE tenant = {mark} AND id = {mark}", (tenant, response_id)) > 0

    def delete_responses(
        self,
        *,
        limit: int,
        tenant: str | None = None,
        user: str | None = None,
        before: float | None = None,
        exclude: Sequence[str] = (),
    ) -> int:
        d = self._db.dialect
        sql, params = delete_where(
            d.mark, limit=limit, tenant=tenant, user=user, before=before, exclude=exclude, lock=d.skip_locked
        )
        with self._db.session() as s:
            return s.execute(sql, params)
