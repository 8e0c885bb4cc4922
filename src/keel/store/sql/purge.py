"""Deleting traces, rollups and a tenant's rows over any SQL dialect (`TraceDeletion`).

Every delete touches at most `limit` rows (a subquery with LIMIT picks them), so each statement is
a short transaction beside the trace writer's. `mark` is the dialect's placeholder (? or %s);
`lock` lets PostgreSQL skip rows another sweeper holds (FOR UPDATE SKIP LOCKED).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from keel.store.protocols import DeletedTraces
from keel.store.sql.dialect import Database

ROLLUP_TABLES = ("usage_minute", "usage_hour", "usage_day")
_ROLLUP_KEY = "(dim, bucket, tenant, value)"
IN_CHUNK = 500  # ids or sessions per IN (...) list
_DELETE_BATCH = 1000  # rollup rows per DELETE statement


def trace_delete(
    mark: str,
    *,
    limit: int,
    tenant: str | None,
    user: str | None,
    before: float | None,
    exclude: Sequence[str],
    lock: str = "",
) -> tuple[str, list[Any]]:
    """DELETE of at most `limit` matching traces, returning each one's blob key, session and id."""
    if user is not None and tenant is None:
        raise ValueError("a user's traces are deleted within one tenant: give the tenant")
    if tenant is None and before is None:
        raise ValueError("refusing to delete every trace: give a tenant or a cut-off time")
    where, params = scope_where(mark, tenant=tenant, user=user, before=before, exclude=exclude)
    pick = f"SELECT id FROM traces WHERE {where} LIMIT {mark}{lock}"
    return f"DELETE FROM traces WHERE id IN ({pick}) RETURNING payload_blob, session, id", [*params, limit]


def scope_where(
    mark: str,
    *,
    tenant: str | None,
    before: float | None,
    exclude: Sequence[str],
    user: str | None = None,
    at: str = "started_at",
) -> tuple[str, list[Any]]:
    """The WHERE of a bounded delete: one tenant (and user), else every tenant not in `exclude`, with time
    column `at` before `before`. Callers refuse the scope with neither a tenant nor a cut-off."""
    clauses: list[str] = []
    params: list[Any] = []
    if tenant is not None:
        clauses.append(f"tenant = {mark}")
        params.append(tenant)
    elif exclude:
        clauses.append(f"(tenant IS NULL OR tenant NOT IN ({', '.join([mark] * len(exclude))}))")
        params.extend(exclude)
    if user is not None:
        clauses.append(f"user_id = {mark}")
        params.append(user)
    if before is not None:
        clauses.append(f"{at} < {mark}")
        params.append(before)
    return " AND ".join(clauses), params


Statement = tuple[str, list[Any], bool]  # sql, params, bounded (repeat until a round deletes < limit)


def rollup_deletes(mark: str, tenant: str, user: str | None, sessions: Sequence[str], limit: int) -> list[Statement]:
    """DELETEs of rollup rows; the bounded ones are to be repeated (see `repeat`).

    A whole tenant: every rollup row of it. A user: the rows of dimension `user` with their id as the
    value, and the whole-session rows of `sessions` (their sessions; a session shared with other
    users goes with them). Other dimensions hold no user id and keep the tenant's totals right.
    """
    out: list[Statement] = []
    for table in ROLLUP_TABLES:
        where, params = f"tenant = {mark}", [tenant]
        if user is not None:
            where, params = f"tenant = {mark} AND dim = 'user' AND value = {mark}", [tenant, user]
        pick = f"SELECT dim, bucket, tenant, value FROM {table} WHERE {where} LIMIT {mark}"
        out.append((f"DELETE FROM {table} WHERE {_ROLLUP_KEY} IN ({pick})", [*params, limit], True))
    if user is None:
        pick = f"SELECT tenant, session FROM usage_sessions WHERE tenant = {mark} LIMIT {mark}"
        out.append((f"DELETE FROM usage_sessions WHERE (tenant, session) IN ({pick})", [tenant, limit], True))
        return out
    for chunk in chunks(sorted(set(sessions)), IN_CHUNK):
        marks = ", ".join([mark] * len(chunk))
        sql = f"DELETE FROM usage_sessions WHERE tenant = {mark} AND session IN ({marks})"
        out.append((sql, [tenant, *chunk], False))
    return out


def deleted(rows: Sequence[Sequence[Any]]) -> DeletedTraces:
    """What `trace_delete`'s returned rows (blob key, session, id) say was deleted."""
    return DeletedTraces(
        len(rows), tuple(b for b, _, _ in rows if b), tuple({s for _, s, _ in rows if s}), tuple(i for _, _, i in rows)
    )


def present_query(mark: str, ids: Sequence[str]) -> tuple[str, list[Any]]:
    return f"SELECT id FROM traces WHERE id IN ({', '.join([mark] * len(ids))})", list(ids)


def chunks(items: Sequence[str], size: int) -> Iterable[Sequence[str]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def run_all(run: Callable[[str, list[Any]], int], statements: Sequence[Statement], limit: int) -> int:
    """Run each statement, a bounded one until a round deletes fewer than `limit` rows; the total deleted."""
    total = 0
    for sql, params, bounded in statements:
        while True:
            n = run(sql, params)
            total += n
            if not bounded or n < limit:
                break
    return total


class SqlPurge:
    _db: Database

    def delete_traces(
        self,
        *,
        limit: int,
        tenant: str | None = None,
        user: str | None = None,
        before: float | None = None,
        exclude: Sequence[str] = (),
    ) -> DeletedTraces:
        d = self._db.dialect
        # PostgreSQL's SKIP LOCKED: two sweeping processes take different rows instead of waiting on each other
        sql, params = trace_delete(
            d.mark, limit=limit, tenant=tenant, user=user, before=before, exclude=exclude, lock=d.skip_locked
        )
        with self._db.session() as s:
            rows = s.fetchall(sql, params)  # fetchall: the statement runs to completion
        return deleted(rows)

    def delete_rollups(self, tenant: str, user: str | None = None, sessions: Sequence[str] = ()) -> int:
        statements = rollup_deletes(self._db.dialect.mark, tenant, user, sessions, _DELETE_BATCH)
        with self._db.session() as s:
            return run_all(s.execute, statements, _DELETE_BATCH)

    def trace_ids_present(self, ids: Sequence[str]) -> set[str]:
        found: set[str] = set()
        with self._db.session() as s:
            for chunk in chunks(list(ids), IN_CHUNK):
                found.update(r[0] for r in s.fetchall(*present_query(self._db.dialect.mark, chunk)))
        return found
