"""`JobQueue`: the job store seen from async code, and the wake-up its workers wait on.

Store calls run on the queue's own threads: one on SQLite (its writes take one lock anyway; a single
connection never waits in SQLite's busy handler against this process's other job calls), a few on
PostgreSQL. Enqueueing sets `wakeup` at once for this process's workers; other processes hear it by
LISTEN/NOTIFY (PostgreSQL, a listener thread) or find it on their next poll (SQLite, `jobs.poll_s`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import orjson

from keel.config import JobsConfig
from keel.store.protocols import (
    FINAL_STATES,
    Beat,
    Job,
    JobQuery,
    JobSpec,
    JobStore,
    JobWakeups,
    Outcome,
    Progress,
    QueueDepth,
)

T = TypeVar("T")
log = logging.getLogger("keel.jobs")


MAX_TEXT = 4000  # characters of an error or progress message kept


def storable_text(text: str) -> str:
    """Text every store takes (no NUL, no lone surrogate), bounded: an error message is not trusted."""
    clean = text.replace("\x00", "\ufffd").encode("utf-8", "replace").decode("utf-8")
    return clean if len(clean) <= MAX_TEXT else clean[: MAX_TEXT - 1] + "…"


def backoff_s(attempts: int, base_s: float, max_s: float, rand: Callable[[], float] = random.random) -> float:
    """The wait before retry number `attempts` (1: the first): base · 2^(attempts-1), capped, ±25 % jitter."""
    delay = min(max_s, base_s * 2 ** min(attempts - 1, 60))
    return float(delay * (0.75 + 0.5 * rand()))


class JobQueue:
    def __init__(
        self,
        store: JobStore,
        config: JobsConfig,
        *,
        threads: int = 1,
        wakeups: JobWakeups | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.config = config
        self.clock = clock
        self.wakeup = asyncio.Event()
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="keel-jobs")
        self._wakeups = wakeups
        self._listener: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = threading.Event()
        self._ends: list[tuple[str, str, Outcome, asyncio.Future[Job | None]]] = []
        self._writing: asyncio.Task[None] | None = None

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)` on the queue's threads."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def spec(self, kind: str, payload: Any = None, **fields: Any) -> JobSpec:
        """A JobSpec with the config's defaults for its kind filled in."""
        return self._defaults(JobSpec(kind, payload, **fields))

    def _defaults(self, spec: JobSpec) -> JobSpec:
        if spec.max_attempts is not None and spec.timeout_s is not None:
            return spec
        c = self.config
        kind = c.kinds.get(spec.kind)
        attempts = spec.max_attempts or (kind and kind.max_attempts) or c.max_attempts
        timeout = spec.timeout_s or (kind and kind.timeout_s) or c.timeout_s
        return dataclasses.replace(spec, max_attempts=attempts, timeout_s=timeout)

    async def enqueue(self, kind: str, payload: Any = None, **fields: Any) -> Job:
        """Queue one job (fields as JobSpec's: queue, tenant, priority, run_at, max_attempts, timeout_s,
        idempotency_key). With an idempotency key already used by the tenant: that job, unchanged."""
        return (await self.enqueue_many([JobSpec(kind, payload, **fields)]))[0]

    async def enqueue_many(self, specs: Sequence[JobSpec]) -> list[Job]:
        """Queue jobs in one transaction; one Job per spec, in order."""
        filled = [self._defaults(s) for s in specs]
        jobs = await self.call(self.store.enqueue_jobs, filled, self.clock())
        self.wakeup.set()
        return jobs

    async def get(self, job_id: str) -> Job | None:
        return await self.call(self.store.get_job, job_id)

    async def list_jobs(self, query: JobQuery) -> list[Job]:
        return await self.call(self.store.list_jobs, query)

    async def cancel(self, job_id: str) -> Job | None:
        return await self.call(self.store.cancel_job, job_id, self.clock())

    async def retry(self, job_id: str) -> Job | None:
        job = await self.call(self.store.retry_job, job_id, self.clock())
        self.wakeup.set()
        return job

    async def depths(self) -> list[QueueDepth]:
        return await self.call(self.store.job_depths, self.clock(), self.config.stuck_after)

    async def wait(self, job_id: str, timeout_s: float, poll_s: float = 0.02) -> Job:
        """The job once it is finished (succeeded, dead or cancelled); TimeoutError after `timeout_s`."""
        async with asyncio.timeout(timeout_s):
            while True:
                job = await self.get(job_id)
                if job is None:
                    raise LookupError(f"no job {job_id}")
                if job.state in FINAL_STATES:
                    return job
                await asyncio.sleep(poll_s)

    # ---- what workers do -------------------------------------------------------------------------

    async def claim(self, *, worker: str, queues: Sequence[str], kinds: Sequence[str], limit: int) -> list[Job]:
        store, lease = self.store, self.config.lease_s
        return await self.call(
            lambda: store.claim_jobs(
                worker=worker, queues=queues, kinds=kinds, limit=limit, lease_s=lease, now=self.clock()
            )
        )

    async def beat(self, job: Job, progress: Progress | None = None) -> Beat | None:
        assert job.claim is not None
        now = self.clock()
        store, lease, claim = self.store, self.config.lease_s, job.claim
        if progress is not None and progress.message is not None:
            progress = dataclasses.replace(progress, message=storable_text(progress.message))
        return await self.call(
            lambda: store.beat_job(job.id, claim, lease_until=now + lease, now=now, progress=progress)
        )

    async def finish(self, job: Job, outcome: Outcome) -> Job | None:
        """Record how an attempt ended; None when its claim was lost. Finishes that arrive while one
        is being written go together in the next transaction (one commit for many)."""
        assert job.claim is not None
        if outcome.state == "succeeded":
            try:  # here, not in the batch's transaction, where it would fail its neighbours too
                orjson.dumps(outcome.result)
            except TypeError as exc:
                outcome = Outcome("dead", error=f"the handler's result is not JSON: {exc}")
        if outcome.error is not None:
            outcome = dataclasses.replace(outcome, error=storable_text(outcome.error))
        done: asyncio.Future[Job | None] = asyncio.get_running_loop().create_future()
        self._ends.append((job.id, job.claim, outcome, done))
        if self._writing is None or self._writing.done():
            self._writing = asyncio.create_task(self._write_ends())
        return await done

    async def _write_ends(self) -> None:
        while self._ends:
            batch, self._ends = self._ends, []
            try:
                found = await self.call(self.store.finish_jobs, [(i, c, o) for i, c, o, _ in batch], self.clock())
            except Exception as exc:
                for *_, done in batch:
                    if not done.done():
                        done.set_exception(exc)
                continue
            for (*_, done), job in zip(batch, found, strict=True):
                if not done.done():
                    done.set_result(job)
            if any(o.state in ("queued", "released") for _, _, o, _ in batch):
                self.wakeup.set()

    async def recover(self) -> None:
        """Expired leases back to the queue (or dead on their last attempt); a pass of the sweep worker."""
        found = await self.call(self.store.recover_jobs, self.clock())
        if found.requeued:
            self.wakeup.set()
            log.warning(
                "jobs: %d lease(s) expired, queued again: %s", len(found.requeued), ", ".join(found.requeued[:20])
            )
        if found.dead:
            log.warning(
                "jobs: %d lease(s) expired on the last attempt, dead: %s", len(found.dead), ", ".join(found.dead[:20])
            )

    async def sweep(self) -> None:
        """A pass of the retention worker."""
        await self.purge()

    async def purge(self, batch: int = 1000) -> int:
        """Delete finished jobs older than `jobs.retention_days`, in bounded batches."""
        before = self.clock() - self.config.retention_days * 86400
        total = 0
        while (n := await self.call(self.store.delete_finished_jobs, before, batch)) > 0:
            total += n
            if n < batch:
                break
        return total

    def retry_outcome(self, job: Job, error: str) -> Outcome:
        """After a failed attempt: queued again after the backoff, or dead when it was the last."""
        if job.attempts >= job.max_attempts:
            return Outcome("dead", error=error)
        delay = backoff_s(job.attempts, self.config.backoff_s, self.config.backoff_max_s)
        return Outcome("queued", error=error, retry_at=self.clock() + delay)

    # ---- wake-ups from other processes -----------------------------------------------------------

    def listen(self) -> None:
        """Start the listener thread (PostgreSQL); it sets `wakeup` on each notification. Idempotent."""
        if self._wakeups is None or self._listener is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._listener = threading.Thread(target=self._listen, name="keel-jobs-listen", daemon=True)
        self._listener.start()

    def _listen(self) -> None:
        assert self._wakeups is not None and self._loop is not None
        while not self._closed.is_set():
            if self._wakeups.wait(0.5) and not self._closed.is_set():
                try:
                    self._loop.call_soon_threadsafe(self.wakeup.set)
                except RuntimeError:  # the loop closed
                    return

    async def aclose(self) -> None:
        self._closed.set()
        if self._listener is not None:
            await asyncio.to_thread(self._listener.join, 2.0)
        if self._wakeups is not None:
            self._wakeups.close()
        await asyncio.to_thread(self._pool.shutdown, True)
