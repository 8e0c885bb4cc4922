"""Span storage shared by the SQL backends: one column order, the statements, rows to spans and back.

A trace's child spans live in table `spans`, keyed (trace_id, span_id): inserts are idempotent, so a
retried or reloaded batch never duplicates. Statements are written once over the `Dialect`
(`SqlSpans`, the `SpanStore` of every SQL backend). Deletes are bounded like the traces'
(keel.store.sql.purge): at most `limit` rows per statement.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import orjson

from keel.store.protocols import UnstorableRecords
from keel.store.sql.dialect import Database, Dialect
from keel.store.sql.purge import scope_where
from keel.store.sql.rows import storable_amount, storable_count
from keel.store.storable import storable_span
from keel.types import Span, Usage

SPAN_COLUMNS = (
    "trace_id", "span_id", "parent_id", "kind", "name", "tenant", "started_at", "ended_at", "status",
    "attributes", "input_tokens", "cached_input_tokens", "cache_write_tokens", "output_tokens",
    "reasoning_tokens", "cost_usd",
)  # fmt: skip
_USAGE = ("input_tokens", "cached_input_tokens", "cache_write_tokens", "output_tokens", "reasoning_tokens")
IN_CHUNK = 500  # trace ids per IN (...) list


def span_to_row(s: Span) -> tuple[Any, ...]:
    """The row of `s`, made storable first (text every store takes, attributes bounded)."""
    s = storable_span(s)
    u = s.usage
    counts = (None,) * 5 if u is None else tuple(storable_count(getattr(u, n)) for n in _USAGE)
    attributes = orjson.dumps(s.attributes, default=str).decode()
    head = (s.trace_id, s.span_id, s.parent_id, s.kind, s.name, s.tenant)
    times = (float(s.started_at), storable_amount(s.ended_at), s.status, attributes)
    return (*head, *times, *counts, storable_amount(s.cost_usd))


def span_from_row(row: Sequence[Any]) -> Span:
    v = dict(zip(SPAN_COLUMNS, row, strict=True))
    attributes = v.pop("attributes")
    counts = [v.pop(n) for n in _USAGE]
    usage = (
        None if all(c is None for c in counts) else Usage(**{n: c or 0 for n, c in zip(_USAGE, counts, strict=True)})
    )
    if isinstance(attributes, str):
        attributes = orjson.loads(attributes)
    return Span(**v, attributes=attributes or {}, usage=usage)


# ---- statements ---------------------------------------------------------------------------------


@functools.cache
def insert_sql(d: Dialect) -> str:
    marks = d.values(SPAN_COLUMNS, frozenset({"attributes"}))
    return f"INSERT INTO spans ({', '.join(SPAN_COLUMNS)}) VALUES ({marks}) ON CONFLICT (trace_id, span_id) DO NOTHING"


def select_sql(mark: str) -> str:
    """A trace's spans, in start order."""
    return f"SELECT {', '.join(SPAN_COLUMNS)} FROM spans WHERE trace_id = {mark} ORDER BY started_at, span_id"


def delete_of_traces(mark: str, trace_ids: Sequence[str]) -> list[tuple[str, list[Any]]]:
    """DELETEs of every span of `trace_ids`, `IN_CHUNK` traces per statement."""
    out = []
    for i in range(0, len(trace_ids), IN_CHUNK):
        chunk = list(trace_ids[i : i + IN_CHUNK])
        out.append((f"DELETE FROM spans WHERE trace_id IN ({', '.join([mark] * len(chunk))})", chunk))
    return out


def delete_where(
    mark: str,
    *,
    limit: int,
    tenant: str | None,
    before: float | None,
    exclude: Sequence[str],
    lock: str = "",
) -> tuple[str, list[Any]]:
    """DELETE of at most `limit` spans of `tenant` (else of any tenant not in `exclude`) started before `before`."""
    if tenant is None and before is None:
        raise ValueError("refusing to delete every span: give a tenant or a cut-off time")
    where, params = scope_where(mark, tenant=tenant, before=before, exclude=exclude)
    pick = f"SELECT trace_id, span_id FROM spans WHERE {where} LIMIT {mark}{lock}"
    return f"DELETE FROM spans WHERE (trace_id, span_id) IN ({pick})", [*params, limit]


class SqlSpans:
    """`SpanStore` over any SQL dialect."""

    _db: Database

    def append_spans(self, spans: Sequence[Span]) -> None:
        if not spans:
            return
        db = self._db
        d = db.dialect
        # in key order where several processes write, so overlapping batches wait instead of deadlocking
        ordered = sorted(spans, key=lambda s: (s.trace_id, s.span_id)) if d.ordered else spans
        try:
            with db.transaction() as s:
                s.executemany(insert_sql(d), [span_to_row(span) for span in ordered])
        except Exception as exc:
            if db.refused(exc):
                raise UnstorableRecords(f"{type(exc).__name__}: {exc}") from exc
            raise

    def trace_spans(self, trace_id: str) -> list[Span]:
        with self._db.session() as s:
            rows = s.fetchall(select_sql(self._db.dialect.mark), (trace_id,))
        return [span_from_row(r) for r in rows]

    def delete_trace_spans(self, trace_ids: Sequence[str]) -> int:
        with self._db.session() as s:
            return sum(s.execute(sql, params) for sql, params in delete_of_traces(self._db.dialect.mark, trace_ids))

    def delete_spans(
        self, *, limit: int, tenant: str | None = None, before: float | None = None, exclude: Sequence[str] = ()
    ) -> int:
        d = self._db.dialect
        sql, params = delete_where(
            d.mark, limit=limit, tenant=tenant, before=before, exclude=exclude, lock=d.skip_locked
        )
        with self._db.session() as s:
            return s.execute(sql, params)
