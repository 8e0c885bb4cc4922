"""Trace rows and their usage rollups over any SQL dialect (`TraceStore`).

A batch goes in one transaction: the rows not stored yet (`Session.insert_new`, the one step whose
strategy differs per backend), then the rollups of exactly those rows (keel.store.sql.usage).
"""

from __future__ import annotations

from collections.abc import Sequence
from operator import attrgetter

from keel.store.protocols import TraceQuery, UnstorableRecords, UsageQuery, UsageRow
from keel.store.sql import usage
from keel.store.sql.dialect import Database
from keel.store.sql.rows import TRACE_COLUMNS, TRACE_JSON, trace_from_row, trace_rows, trace_where
from keel.types import TraceRecord

_TRACES = ", ".join(TRACE_COLUMNS)
_by_id = attrgetter("id")


class SqlTraces:
    _db: Database

    def append_traces(self, records: Sequence[TraceRecord]) -> None:
        if not records:
            return
        db = self._db
        d = db.dialect
        # in id order where several processes write: writers of overlapping batches (a spill reloaded
        # by another process) lock the same ids in the same order, so they wait instead of deadlocking
        rows, stored = trace_rows(sorted(records, key=_by_id) if d.ordered else records)
        try:
            with db.transaction() as s:
                inserted = [stored[i] for i in s.insert_new("traces", TRACE_COLUMNS, rows, TRACE_JSON)]
                for sql, values in usage.upserts(inserted, d.mark, d.least, d.greatest, ordered=d.ordered):
                    s.executemany(sql, values)
        except Exception as exc:
            if db.refused(exc):
                raise UnstorableRecords(f"{type(exc).__name__}: {exc}") from exc
            raise

    def list_traces(self, query: TraceQuery) -> list[TraceRecord]:
        mark = self._db.dialect.mark
        where, params = trace_where(query, mark)
        sql = f"SELECT {_TRACES} FROM traces WHERE {where} ORDER BY started_at DESC LIMIT {mark}"
        with self._db.session() as s:
            rows = s.fetchall(sql, (*params, query.limit))
        return [trace_from_row(r) for r in rows]

    def get_trace(self, trace_id: str) -> TraceRecord | None:
        with self._db.session() as s:
            r = s.fetchone(f"SELECT {_TRACES} FROM traces WHERE id = {self._db.dialect.mark}", (trace_id,))
        return trace_from_row(r) if r else None

    def count_traces(self, since: float, until: float) -> int:
        mark = self._db.dialect.mark
        with self._db.session() as s:
            r = s.fetchone(
                f"SELECT count(*) FROM traces WHERE started_at >= {mark} AND started_at < {mark}", (since, until)
            )
        return int(r[0]) if r else 0

    def usage(self, query: UsageQuery) -> list[UsageRow]:
        d = self._db.dialect
        with self._db.session() as s:
            return usage.read(query, s.fetchall, d.mark, d.total)
