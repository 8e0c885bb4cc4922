"""Datasets and eval runs over any SQL dialect (`SqlEvals`, the `EvalStore`); tables of migration 0014.

A dataset version is written in one transaction at MAX(version) + 1; two writers racing for the number
conflict on the primary key and the loser tries the next. Results are keyed (run_id, item, rep):
recording one again does nothing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from keel.store.protocols.evals import Dataset, DatasetItem, EvalResult, EvalRun
from keel.store.sql.dialect import Database

RUN_COLUMNS = tuple(f.name for f in dataclasses.fields(EvalRun))
_RUN_JSON = frozenset({"spec", "summary"})
_RUN_FIXED = frozenset({"id", "tenant", "key_id", "suite", "created_at", "spec"})
RESULT_COLUMNS = (
    "run_id", "item", "rep", "passed", "score", "output", "trace_id", "latency_ms", "cost_usd", "verdicts", "error",
)  # fmt: skip
_PUT_TRIES = 20


def _dataset(r: Sequence[Any]) -> Dataset:
    return Dataset(r[0], r[1], r[2], r[3], r[4], r[5])


def _item(body: str, trace_id: str | None) -> DatasetItem:
    d = orjson.loads(body)
    return DatasetItem(
        d.get("input") or {}, d.get("expected"), tuple(d.get("context") or ()), d.get("metadata") or {}, trace_id
    )


def _run(r: Sequence[Any]) -> EvalRun:
    v = dict(zip(RUN_COLUMNS, r, strict=True))
    for name in _RUN_JSON:
        if isinstance(v[name], str):
            v[name] = orjson.loads(v[name])
    return EvalRun(**v)


def _result(r: Sequence[Any]) -> EvalResult:
    verdicts = tuple(orjson.loads(r[9]))
    return EvalResult(r[0], r[1], r[2], bool(r[3]), r[4], r[5], r[6], r[7], r[8], verdicts, r[10])


class SqlEvals:
    _db: Database

    def put_dataset(
        self, tenant: str, name: str, items: Sequence[DatasetItem], *, note: str | None, now: float
    ) -> Dataset:
        d = self._db.dialect
        m = d.mark
        top = f"SELECT MAX(version) FROM datasets WHERE tenant = {m} AND name = {m}"
        head = f"INSERT INTO datasets (tenant, name, version, items, note, created_at) VALUES ({d.marks(6)})"
        body = f"INSERT INTO dataset_items (tenant, name, version, idx, body, trace_id) VALUES ({d.marks(6)})"
        for _ in range(_PUT_TRIES):
            try:
                with self._db.transaction() as s:
                    row = s.fetchone(top, (tenant, name))
                    version = (row[0] if row is not None and row[0] is not None else 0) + 1
                    s.execute(head, (tenant, name, version, len(items), note, now))
                    rows = [
                        (tenant, name, version, i, orjson.dumps(it.json()).decode(), it.trace_id)
                        for i, it in enumerate(items)
                    ]
                    if rows:
                        s.executemany(body, rows)
                return Dataset(tenant, name, version, len(items), note, now)
            except self._db.duplicate:
                continue
        raise RuntimeError(f"dataset '{name}': {_PUT_TRIES} concurrent writers took every version number tried")

    def get_dataset(self, tenant: str, name: str, version: int | None = None) -> Dataset | None:
        m = self._db.dialect.mark
        cols = "tenant, name, version, items, note, created_at"
        if version is None:
            sql = f"SELECT {cols} FROM datasets WHERE tenant = {m} AND name = {m} ORDER BY version DESC LIMIT 1"
            params: tuple[Any, ...] = (tenant, name)
        else:
            sql = f"SELECT {cols} FROM datasets WHERE tenant = {m} AND name = {m} AND version = {m}"
            params = (tenant, name, version)
        with self._db.session() as s:
            row = s.fetchone(sql, params)
        return None if row is None else _dataset(row)

    def list_datasets(self, tenant: str | None = None) -> list[Dataset]:
        m = self._db.dialect.mark
        where, params = (f" WHERE tenant = {m}", (tenant,)) if tenant is not None else ("", ())
        sql = (
            f"SELECT tenant, name, version, items, note, created_at FROM datasets{where} ORDER BY tenant, name, version"
        )
        with self._db.session() as s:
            return [_dataset(r) for r in s.fetchall(sql, params)]

    def dataset_items(self, tenant: str, name: str, version: int) -> list[DatasetItem]:
        m = self._db.dialect.mark
        sql = (
            f"SELECT body, trace_id FROM dataset_items WHERE tenant = {m} AND name = {m} AND version = {m} ORDER BY idx"
        )
        with self._db.session() as s:
            return [_item(r[0], r[1]) for r in s.fetchall(sql, (tenant, name, version))]

    def create_eval_run(self, run: EvalRun) -> None:
        d = self._db.dialect
        values = [
            orjson.dumps(v).decode() if c in _RUN_JSON and v is not None else v
            for c, v in zip(RUN_COLUMNS, dataclasses.astuple(run), strict=True)
        ]
        with self._db.transaction() as s:
            s.execute(f"INSERT INTO eval_runs ({', '.join(RUN_COLUMNS)}) VALUES ({d.marks(len(values))})", values)

    def get_eval_run(self, tenant: str | None, run_id: str) -> EvalRun | None:
        m = self._db.dialect.mark
        sql = f"SELECT {', '.join(RUN_COLUMNS)} FROM eval_runs WHERE id = {m}"
        params: list[Any] = [run_id]
        if tenant is not None:
            sql += f" AND tenant = {m}"
            params.append(tenant)
        with self._db.session() as s:
            row = s.fetchone(sql, params)
        return None if row is None else _run(row)

    def list_eval_runs(
        self, tenant: str | None = None, *, suite: str | None = None, label: str | None = None, limit: int = 50
    ) -> list[EvalRun]:
        m = self._db.dialect.mark
        clauses = [(c, v) for c, v in (("tenant", tenant), ("suite", suite), ("label", label)) if v is not None]
        where = " WHERE " + " AND ".join(f"{c} = {m}" for c, _ in clauses) if clauses else ""
        sql = f"SELECT {', '.join(RUN_COLUMNS)} FROM eval_runs{where} ORDER BY created_at DESC, id DESC LIMIT {int(limit)}"
        with self._db.session() as s:
            return [_run(r) for r in s.fetchall(sql, [v for _, v in clauses])]

    def update_eval_run(self, run_id: str, changes: Mapping[str, Any]) -> EvalRun | None:
        wrong = sorted(set(changes) - set(RUN_COLUMNS) | (set(changes) & _RUN_FIXED))
        if wrong:
            raise ValueError(f"update_eval_run cannot change {wrong}")
        m = self._db.dialect.mark
        sets = ", ".join(f"{c} = {m}" for c in changes)
        values = [orjson.dumps(v).decode() if c in _RUN_JSON and v is not None else v for c, v in changes.items()]
        with self._db.transaction() as s:
            if changes:
                s.execute(f"UPDATE eval_runs SET {sets} WHERE id = {m}", [*values, run_id])
            row = s.fetchone(f"SELECT {', '.join(RUN_COLUMNS)} FROM eval_runs WHERE id = {m}", (run_id,))
        return None if row is None else _run(row)

    def record_eval_results(self, results: Sequence[EvalResult]) -> int:
        if not results:
            return 0
        d = self._db.dialect
        rows = [
            (r.run_id, r.item, r.repeat, r.passed, r.score, r.output, r.trace_id, r.latency_ms, r.cost_usd,
             orjson.dumps(list(r.verdicts)).decode(), r.error)
            for r in results
        ]  # fmt: skip
        if d.ordered:
            rows.sort(key=lambda r: (r[0], r[1], r[2]))
        insert = (
            f"INSERT INTO eval_results ({', '.join(RESULT_COLUMNS)}) VALUES ({d.marks(len(RESULT_COLUMNS))})"
            " ON CONFLICT (run_id, item, rep) DO NOTHING"
        )
        count = f"SELECT COUNT(*) FROM eval_results WHERE run_id = {d.mark}"
        run_ids = {r.run_id for r in results}
        if len(run_ids) != 1:
            raise ValueError("record_eval_results takes the results of one run at a time")
        with self._db.transaction() as s:
            before = s.fetchone(count, (results[0].run_id,))
            s.executemany(insert, rows)
            after = s.fetchone(count, (results[0].run_id,))
        return int(after[0] if after else 0) - int(before[0] if before else 0)

    def eval_results(self, run_id: str) -> list[EvalResult]:
        m = self._db.dialect.mark
        sql = f"SELECT {', '.join(RESULT_COLUMNS)} FROM eval_results WHERE run_id = {m} ORDER BY item, rep"
        with self._db.session() as s:
            return [_result(r) for r in s.fetchall(sql, (run_id,))]

    def recorded_eval_keys(self, run_id: str) -> set[tuple[str, int]]:
        m = self._db.dialect.mark
        with self._db.session() as s:
            rows = s.fetchall(f"SELECT item, rep FROM eval_results WHERE run_id = {m}", (run_id,))
        return {(r[0], int(r[1])) for r in rows}
