"""The job queue over any SQL dialect (`JobStore`), each statement written once.

A claim is one WITH pick (… LIMIT n) UPDATE … RETURNING: on PostgreSQL the pick locks its rows
`FOR UPDATE SKIP LOCKED`, so concurrent claimers take different jobs without waiting on each other;
on SQLite the statement holds the database's write lock, so claims are serialised (one statement,
no read-then-write gap). Every later write of an attempt names its claim token and `state = 'running'`,
so a worker whose lease expired (and whose job went back to the queue) changes nothing.
PostgreSQL wakes listeners with NOTIFY (the dialect's `notify`) in the transaction that queued jobs.
"""

from __future__ import annotations

import itertools
import secrets
from collections.abc import Sequence
from typing import Any

import orjson

from keel.store.protocols.jobs import (
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_TIMEOUT_S,
    Beat,
    Job,
    JobQuery,
    JobSpec,
    Outcome,
    Progress,
    QueueDepth,
    Recovered,
)
from keel.store.sql.dialect import Database, Row, Session

JOB_COLUMNS = (
    "id", "kind", "queue", "payload", "tenant", "priority", "state", "run_at", "attempts", "max_attempts",
    "timeout_s", "created_at", "idempotency_key", "started_at", "finished_at", "lease_until", "worker",
    "claim", "cancel_requested", "expiries", "progress_done", "progress_total", "progress_message",
    "result", "error",
)  # fmt: skip
_COLS = ", ".join(JOB_COLUMNS)
_JOBS_COLS = ", ".join(f"jobs.{c}" for c in JOB_COLUMNS)
_FINISH_CHUNK = 200  # jobs per batched finish statement (3 parameters each)
_INSERTED = (*JOB_COLUMNS[:13], "cancel_requested", "expiries")
_RUNNING = "state = 'running'"


_SEQUENCE = itertools.count()


def new_job_id(now: float) -> str:
    """`job_` + milliseconds + a per-process sequence + randomness (hex): ids sort by creation time, and
    in creation order within one process."""
    return f"job_{int(now * 1000):011x}{next(_SEQUENCE) & 0xFFFFFF:06x}{secrets.token_hex(6)}"


def _json(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


def _loads(text: str | None) -> Any:
    return None if text is None else orjson.loads(text)


def job_from_row(r: Row) -> Job:
    return Job(
        id=r[0], kind=r[1], queue=r[2], payload=_loads(r[3]), tenant=r[4], priority=r[5], state=r[6],
        run_at=r[7], attempts=r[8], max_attempts=r[9], timeout_s=r[10], created_at=r[11],
        idempotency_key=r[12], started_at=r[13], finished_at=r[14], lease_until=r[15], worker=r[16],
        claim=r[17], cancel_requested=bool(r[18]), expiries=r[19], progress_done=r[20],
        progress_total=r[21], progress_message=r[22], result=_loads(r[23]), error=r[24],
    )  # fmt: skip


def _spec_row(spec: JobSpec, job_id: str, now: float) -> tuple[Any, ...]:
    run_at = now if spec.run_at is None else spec.run_at
    attempts = DEFAULT_MAX_ATTEMPTS if spec.max_attempts is None else spec.max_attempts
    timeout_s = DEFAULT_TIMEOUT_S if spec.timeout_s is None else spec.timeout_s
    return (
        job_id, spec.kind, spec.queue, _json(spec.payload), spec.tenant, spec.priority, "queued", run_at, 0,
        attempts, timeout_s, now, spec.idempotency_key, False, 0,
    )  # fmt: skip


class SqlJobs:
    _db: Database

    def _notify(self, s: Session, queues: Sequence[str]) -> None:
        notify = self._db.dialect.notify
        if notify is not None:
            for queue in sorted(set(queues)):
                s.execute(notify, (queue,))

    def enqueue_jobs(self, specs: Sequence[JobSpec], now: float) -> list[Job]:
        d = self._db.dialect
        rows = [_spec_row(spec, new_job_id(now), now) for spec in specs]
        insert = f"INSERT INTO jobs ({', '.join(_INSERTED)}) VALUES ({d.marks(len(_INSERTED))}) ON CONFLICT DO NOTHING"
        keyed = f"SELECT {_COLS} FROM jobs WHERE tenant = {d.mark} AND idempotency_key = {d.mark}"
        with self._db.transaction() as s:
            s.executemany(insert, rows)
            jobs = []
            for spec, row in zip(specs, rows, strict=True):
                if spec.idempotency_key is None:
                    jobs.append(_fresh(spec, row))
                    continue
                found = s.fetchone(keyed, (spec.tenant, spec.idempotency_key))
                assert found is not None, "the insert or an earlier job holds this key"
                jobs.append(job_from_row(found))
            self._notify(s, [job.queue for job in jobs if job.state == "queued"])
        return jobs

    def claim_jobs(
        self, *, worker: str, queues: Sequence[str], kinds: Sequence[str], limit: int, lease_s: float, now: float
    ) -> list[Job]:
        if not queues or not kinds or limit <= 0:
            return []
        d = self._db.dialect
        pick = (
            f"SELECT id FROM jobs WHERE state = 'queued' AND run_at <= {d.mark}"
            f" AND queue IN ({d.marks(len(queues))}) AND kind IN ({d.marks(len(kinds))})"
            f" ORDER BY priority DESC, run_at, id LIMIT {d.mark}{d.skip_locked}"
        )
        # The pick is materialised: inlined as a semi-join, PostgreSQL may run it more than once and
        # exceed its LIMIT.
        sql = (
            f"WITH picked AS MATERIALIZED ({pick})"
            f" UPDATE jobs SET state = 'running', attempts = attempts + 1, started_at = {d.mark},"
            f" lease_until = {d.mark}, worker = {d.mark}, claim = {d.mark}"
            f" WHERE id IN (SELECT id FROM picked) AND state = 'queued' RETURNING {_COLS}"
        )
        claim = secrets.token_hex(8)
        params = (now, *queues, *kinds, limit, now, now + lease_s, worker, claim)
        with self._db.session() as s:
            rows = s.fetchall(sql, params)
        jobs = [job_from_row(r) for r in rows]
        jobs.sort(key=lambda j: (-j.priority, j.run_at, j.id))
        return jobs

    def beat_job(
        self, job_id: str, claim: str, *, lease_until: float, now: float, progress: Progress | None = None
    ) -> Beat | None:
        d = self._db.dialect
        sets = f"lease_until = {d.mark}"
        params: list[Any] = [lease_until]
        if progress is not None:
            sets += f", progress_done = {d.mark}, progress_total = {d.mark}, progress_message = {d.mark}, expiries = 0"
            params += [progress.done, progress.total, progress.message]
        sql = (
            f"UPDATE jobs SET {sets} WHERE id = {d.mark} AND claim = {d.mark} AND {_RUNNING} RETURNING cancel_requested"
        )
        with self._db.session() as s:
            row = s.fetchone(sql, (*params, job_id, claim))
        return None if row is None else Beat(bool(row[0]))

    def finish_job(self, job_id: str, claim: str, outcome: Outcome, now: float) -> Job | None:
        return self.finish_jobs([(job_id, claim, outcome)], now)[0]

    def finish_jobs(self, ends: Sequence[tuple[str, str, Outcome]], now: float) -> list[Job | None]:
        d = self._db.dialect
        done: dict[int, Job | None] = {}
        succeeded = [i for i, (_, _, o) in enumerate(ends) if o.state == "succeeded"]
        with self._db.transaction() as s:
            for i in range(0, len(succeeded), _FINISH_CHUNK):  # the common case: one statement for many
                chunk = succeeded[i : i + _FINISH_CHUNK]
                sql = (
                    f"WITH ended(id, claim, result) AS (VALUES {', '.join([f'({d.marks(3)})'] * len(chunk))})"
                    f" UPDATE jobs SET state = 'succeeded', result = ended.result, error = NULL, finished_at = {d.mark},"
                    f" lease_until = NULL FROM ended WHERE jobs.id = ended.id AND jobs.claim = ended.claim"
                    f" AND jobs.state = 'running' RETURNING {_JOBS_COLS}"
                )
                params = [v for j in chunk for v in (ends[j][0], ends[j][1], _json(ends[j][2].result))]
                found = {r[0]: job_from_row(r) for r in s.fetchall(sql, (*params, now))}
                done.update((j, found.get(ends[j][0])) for j in chunk)
            for i, (job_id, claim, outcome) in enumerate(ends):
                if i in done:
                    continue
                sets, values = self._finish_sets(outcome, now)
                sql = (
                    f"UPDATE jobs SET {sets} WHERE id = {d.mark} AND claim = {d.mark} AND {_RUNNING} RETURNING {_COLS}"
                )
                row = s.fetchone(sql, (*values, job_id, claim))
                done[i] = None if row is None else job_from_row(row)
            self._notify(s, [j.queue for j in done.values() if j is not None and j.state == "queued"])
        return [done[i] for i in range(len(ends))]

    def _finish_sets(self, outcome: Outcome, now: float) -> tuple[str, tuple[Any, ...]]:
        m = self._db.dialect.mark
        ended = f"finished_at = {m}, lease_until = NULL"
        if outcome.state == "succeeded":
            return f"state = 'succeeded', result = {m}, error = NULL, {ended}", (_json(outcome.result), now)
        if outcome.state in ("dead", "cancelled"):
            return f"state = '{outcome.state}', error = {m}, {ended}", (outcome.error, now)
        if outcome.state == "queued":
            retry_at = now if outcome.retry_at is None else outcome.retry_at
            sets = f"state = 'queued', run_at = {m}, error = {m}, lease_until = NULL, claim = NULL"
            return sets, (retry_at, outcome.error)
        # released: handed back, not an attempt
        return f"state = 'queued', run_at = {m}, attempts = attempts - 1, lease_until = NULL, claim = NULL", (now,)

    def recover_jobs(self, now: float) -> Recovered:
        m = self._db.dialect.mark
        expired = f"{_RUNNING} AND lease_until < {m}"
        dead = (
            f"UPDATE jobs SET state = 'dead', error = 'lease expired on the last attempt', finished_at = {m},"
            f" lease_until = NULL, expiries = expiries + 1 WHERE {expired} AND attempts >= max_attempts RETURNING id"
        )
        requeue = (
            f"UPDATE jobs SET state = 'queued', run_at = {m}, error = 'lease expired', lease_until = NULL,"
            f" claim = NULL, expiries = expiries + 1 WHERE {expired} RETURNING id, queue"
        )
        with self._db.transaction() as s:
            gone = [r[0] for r in s.fetchall(dead, (now, now))]
            back = s.fetchall(requeue, (now, now))
            self._notify(s, [r[1] for r in back])
        return Recovered(requeued=[r[0] for r in back], dead=gone)

    def get_job(self, job_id: str) -> Job | None:
        with self._db.session() as s:
            row = s.fetchone(f"SELECT {_COLS} FROM jobs WHERE id = {self._db.dialect.mark}", (job_id,))
        return None if row is None else job_from_row(row)

    def list_jobs(self, query: JobQuery) -> list[Job]:
        m = self._db.dialect.mark
        where: list[str] = []
        params: list[Any] = []
        for column in ("state", "kind", "tenant", "queue"):
            value = getattr(query, column)
            if value is not None:
                where.append(f"{column} = {m}")
                params.append(value)
        if query.stuck_after is not None:
            where.append(f"expiries >= {m} AND state IN ('queued', 'running')")
            params.append(query.stuck_after)
        if query.before is not None:
            where.append(f"id < {m}")
            params.append(query.before)
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        sql = f"SELECT {_COLS} FROM jobs{clause} ORDER BY id DESC LIMIT {m}"
        with self._db.session() as s:
            rows = s.fetchall(sql, (*params, query.limit))
        return [job_from_row(r) for r in rows]

    def cancel_job(self, job_id: str, now: float) -> Job | None:
        m = self._db.dialect.mark
        with self._db.transaction() as s:
            s.execute(
                f"UPDATE jobs SET state = 'cancelled', finished_at = {m} WHERE id = {m} AND state = 'queued'",
                (now, job_id),
            )
            s.execute(f"UPDATE jobs SET cancel_requested = {m} WHERE id = {m} AND {_RUNNING}", (True, job_id))
            row = s.fetchone(f"SELECT {_COLS} FROM jobs WHERE id = {m}", (job_id,))
        return None if row is None else job_from_row(row)

    def retry_job(self, job_id: str, now: float) -> Job | None:
        m = self._db.dialect.mark
        sql = (
            f"UPDATE jobs SET state = 'queued', run_at = {m}, attempts = 0, expiries = 0, error = NULL, result = NULL,"
            f" cancel_requested = {m}, finished_at = NULL, lease_until = NULL, claim = NULL"
            f" WHERE id = {m} AND state IN ('dead', 'cancelled') RETURNING queue"
        )
        with self._db.transaction() as s:
            back = s.fetchone(sql, (now, False, job_id))
            if back is not None:
                self._notify(s, [back[0]])
            row = s.fetchone(f"SELECT {_COLS} FROM jobs WHERE id = {m}", (job_id,))
        return None if row is None else job_from_row(row)

    def job_depths(self, now: float, stuck_after: int) -> list[QueueDepth]:
        m = self._db.dialect.mark
        sql = (
            f"SELECT queue, state, COUNT(*), MIN(CASE WHEN state = 'running' THEN started_at ELSE run_at END),"
            f" SUM(CASE WHEN expiries >= {m} THEN 1 ELSE 0 END)"
            " FROM jobs WHERE state IN ('queued', 'running', 'dead') GROUP BY queue, state ORDER BY queue, state"
        )
        with self._db.session() as s:
            rows = s.fetchall(sql, (stuck_after,))
        out = []
        for queue, state, count, oldest, stuck in rows:
            age = 0.0 if state == "dead" or oldest is None else max(0.0, now - float(oldest))
            out.append(QueueDepth(queue, state, int(count), age, 0 if state == "dead" else int(stuck or 0)))
        return out

    def delete_finished_jobs(self, before: float, limit: int) -> int:
        m = self._db.dialect.mark
        pick = (
            f"SELECT id FROM jobs WHERE finished_at < {m} AND state IN ('succeeded', 'dead', 'cancelled')"
            f" LIMIT {m}{self._db.dialect.skip_locked}"
        )
        with self._db.session() as s:
            return s.execute(f"DELETE FROM jobs WHERE id IN ({pick})", (before, limit))


def _fresh(spec: JobSpec, row: tuple[Any, ...]) -> Job:
    """The Job a new row holds, without reading it back."""
    return Job(
        id=row[0], kind=spec.kind, queue=spec.queue, payload=spec.payload, tenant=spec.tenant,
        priority=spec.priority, state="queued", run_at=row[7], attempts=0, max_attempts=row[9],
        timeout_s=row[10], created_at=row[11],
    )  # fmt: skip
