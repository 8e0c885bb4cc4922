"""Files, batches and batch line results over any SQL dialect (`SqlBatches`, the `BatchStore`).

Tables `files`, `batches` and `batch_results` (migration 0011). Ids are time-ordered, so "newest
first" is `ORDER BY id DESC` and a page after a cursor is `id < cursor`. A line result is keyed
(batch_id, custom_id): recording it again (a worker that resumed after a crash) changes nothing.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from keel.store.protocols.batches import BatchRow, FileRow, LineResult
from keel.store.sql.dialect import Database, Dialect

FILE_COLUMNS = tuple(f.name for f in dataclasses.fields(FileRow))
BATCH_COLUMNS = tuple(f.name for f in dataclasses.fields(BatchRow))
RESULT_COLUMNS = ("batch_id", "custom_id", "line", "ok", "text")
_JSON = frozenset({"metadata", "errors"})
_FIXED = frozenset({"id", "tenant", "key_id", "endpoint", "input_file_id", "created_at"})  # never updated


def _batch_row(row: Sequence[Any]) -> BatchRow:
    v = dict(zip(BATCH_COLUMNS, row, strict=True))
    for name in _JSON:
        if isinstance(v[name], str):
            v[name] = orjson.loads(v[name])
    return BatchRow(**v)


def _param(name: str, value: Any) -> Any:
    return orjson.dumps(value).decode() if name in _JSON and value is not None else value


@functools.cache
def _insert_batch(d: Dialect) -> str:
    return f"INSERT INTO batches ({', '.join(BATCH_COLUMNS)}) VALUES ({d.values(BATCH_COLUMNS, _JSON)})"


@functools.cache
def _insert_results(d: Dialect) -> str:
    return (
        f"INSERT INTO batch_results ({', '.join(RESULT_COLUMNS)}) VALUES ({d.marks(len(RESULT_COLUMNS))})"
        " ON CONFLICT (batch_id, custom_id) DO NOTHING"
    )


def _scoped(mark: str, tenant: str | None, key: str) -> tuple[str, list[Any]]:
    if tenant is None:
        return f"id = {mark}", [key]
    return f"id = {mark} AND tenant = {mark}", [key, tenant]


class SqlBatches:
    """`BatchStore` over any SQL dialect."""

    _db: Database

    def put_file(self, row: FileRow) -> None:
        d = self._db.dialect
        with self._db.session() as s:
            s.execute(
                f"INSERT INTO files ({', '.join(FILE_COLUMNS)}) VALUES ({d.marks(len(FILE_COLUMNS))})",
                dataclasses.astuple(row),
            )

    def get_file(self, tenant: str | None, file_id: str) -> FileRow | None:
        where, params = _scoped(self._db.dialect.mark, tenant, file_id)
        with self._db.session() as s:
            row = s.fetchone(f"SELECT {', '.join(FILE_COLUMNS)} FROM files WHERE {where}", params)
        return None if row is None else FileRow(*row)

    def list_files(
        self, tenant: str, *, purpose: str | None = None, after: str | None = None, limit: int = 100
    ) -> list[FileRow]:
        m = self._db.dialect.mark
        where, params = [f"tenant = {m}"], [tenant]
        if purpose is not None:
            where.append(f"purpose = {m}")
            params.append(purpose)
        if after is not None:
            where.append(f"id < {m}")
            params.append(after)
        sql = f"SELECT {', '.join(FILE_COLUMNS)} FROM files WHERE {' AND '.join(where)} ORDER BY id DESC LIMIT {m}"
        with self._db.session() as s:
            rows = s.fetchall(sql, [*params, limit])
        return [FileRow(*r) for r in rows]

    def delete_file(self, tenant: str, file_id: str) -> FileRow | None:
        where, params = _scoped(self._db.dialect.mark, tenant, file_id)
        with self._db.transaction() as s:
            row = s.fetchone(f"SELECT {', '.join(FILE_COLUMNS)} FROM files WHERE {where}", params)
            if row is None:
                return None
            s.execute(f"DELETE FROM files WHERE {where}", params)
        return FileRow(*row)

    def create_batch(self, row: BatchRow) -> None:
        values = [_param(name, value) for name, value in zip(BATCH_COLUMNS, dataclasses.astuple(row), strict=True)]
        with self._db.session() as s:
            s.execute(_insert_batch(self._db.dialect), values)

    def get_batch(self, tenant: str | None, batch_id: str) -> BatchRow | None:
        where, params = _scoped(self._db.dialect.mark, tenant, batch_id)
        with self._db.session() as s:
            row = s.fetchone(f"SELECT {', '.join(BATCH_COLUMNS)} FROM batches WHERE {where}", params)
        return None if row is None else _batch_row(row)

    def list_batches(self, tenant: str, *, after: str | None = None, limit: int = 20) -> list[BatchRow]:
        m = self._db.dialect.mark
        where, params = f"tenant = {m}", [tenant]
        if after is not None:
            where, params = f"{where} AND id < {m}", [tenant, after]
        sql = f"SELECT {', '.join(BATCH_COLUMNS)} FROM batches WHERE {where} ORDER BY id DESC LIMIT {m}"
        with self._db.session() as s:
            rows = s.fetchall(sql, [*params, limit])
        return [_batch_row(r) for r in rows]

    def update_batch(
        self, batch_id: str, changes: Mapping[str, Any], *, when: Sequence[str] | None = None
    ) -> BatchRow | None:
        d = self._db.dialect
        unknown = set(changes) - (set(BATCH_COLUMNS) - _FIXED)
        if unknown or not changes:
            raise ValueError(f"cannot set batch fields {sorted(unknown) or '(none)'}")
        sets = ", ".join(f"{name} = {d.json_mark if name in _JSON else d.mark}" for name in changes)
        params = [_param(name, value) for name, value in changes.items()]
        sql = f"UPDATE batches SET {sets} WHERE id = {d.mark}"
        params.append(batch_id)
        if when is not None:
            sql += f" AND status IN ({d.marks(len(when))})"
            params.extend(when)
        with self._db.transaction() as s:
            if not s.execute(sql, params):
                return None
            row = s.fetchone(f"SELECT {', '.join(BATCH_COLUMNS)} FROM batches WHERE id = {d.mark}", (batch_id,))
        return None if row is None else _batch_row(row)

    def record_results(self, results: Sequence[LineResult]) -> int:
        if not results:
            return 0
        d = self._db.dialect
        rows = [(r.batch_id, r.custom_id, r.line, r.ok, r.text) for r in results]
        if d.ordered:
            rows.sort(key=lambda r: (r[0], r[1]))
        ids = (results[0].batch_id,)
        if any(r.batch_id != ids[0] for r in results):
            raise ValueError("record_results takes the results of one batch at a time")
        count = f"SELECT COUNT(*) FROM batch_results WHERE batch_id = {d.mark}"
        with self._db.transaction() as s:
            before = _count(s.fetchone(count, ids))
            s.executemany(_insert_results(d), rows)
            return _count(s.fetchone(count, ids)) - before

    def batch_results(self, batch_id: str) -> list[LineResult]:
        m = self._db.dialect.mark
        sql = f"SELECT {', '.join(RESULT_COLUMNS)} FROM batch_results WHERE batch_id = {m} ORDER BY line"
        with self._db.session() as s:
            rows = s.fetchall(sql, (batch_id,))
        return [LineResult(r[0], r[1], r[2], bool(r[3]), r[4]) for r in rows]

    def recorded_ids(self, batch_id: str) -> set[str]:
        m = self._db.dialect.mark
        with self._db.session() as s:
            rows = s.fetchall(f"SELECT custom_id FROM batch_results WHERE batch_id = {m}", (batch_id,))
        return {r[0] for r in rows}

    def count_results(self, batch_id: str) -> tuple[int, int]:
        m = self._db.dialect.mark
        sql = f"SELECT ok, COUNT(*) FROM batch_results WHERE batch_id = {m} GROUP BY ok"
        with self._db.session() as s:
            rows = s.fetchall(sql, (batch_id,))
        counts = {bool(ok): n for ok, n in rows}
        return counts.get(True, 0), counts.get(False, 0)


def _count(row: Sequence[Any] | None) -> int:
    return 0 if row is None else int(row[0])
