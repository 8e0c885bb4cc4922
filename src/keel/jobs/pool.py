"""`JobPool`: a loop worker that claims jobs and runs their handlers, up to `concurrency` at once.

Each running job has its handler task and a keeper beside it: the keeper renews the lease every
`jobs.heartbeat_s`, passes a cancel request on to the handler (`ctx.cancelled`), ends an attempt past
its timeout, and stops the handler when the lease is lost (another worker may have the job now; this
attempt must not write). Per-kind limits (`jobs.kinds.<kind>.concurrency`) hold in this process.

Stopping (the runtime cancels the loop, on SIGTERM) drains: no new claims; running jobs may finish
within `jobs.grace_s`; the rest are cancelled and handed back (`released`: queued again at once, the
attempt not counted), so another worker takes them without waiting for the lease to expire.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from keel.jobs.errors import Cancelled, LeaseLost, Permanent
from keel.jobs.queue import JobQueue
from keel.jobs.registry import JobRegistry
from keel.store.protocols import Job, Outcome, Progress

log = logging.getLogger("keel.jobs")
RELEASE_WAIT_S = 5.0  # handing back the unfinished jobs on stop: at most this long
STORE_RETRY_MAX_S = 5.0  # claims failing (the store is down): the longest wait between tries


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class RunContext:
    """A handler's `ctx` (keel.store.protocols.JobContext)."""

    def __init__(self, queue: JobQueue, job: Job) -> None:
        self._queue = queue
        self.job = job
        self.cancelled = False
        self.lost = False
        self._progress = Progress()

    async def progress(self, done: int | None = None, total: int | None = None, message: str | None = None) -> None:
        p = self._progress
        self._progress = Progress(
            p.done if done is None else done,
            p.total if total is None else total,
            p.message if message is None else message,
        )
        await self._beat(self._progress)

    async def heartbeat(self) -> None:
        await self._beat(None)

    async def _beat(self, progress: Progress | None) -> None:
        beat = await self._queue.beat(self.job, progress)
        if beat is None:
            self.lost = True
            raise LeaseLost(f"job {self.job.id}: lease lost")
        self.cancelled = self.cancelled or beat.cancel_requested


@dataclass
class _Running:
    job: Job
    task: asyncio.Task[None]
    handing_back: bool = False
    handler: asyncio.Task[Any] | None = field(default=None)


class JobPool:
    def __init__(
        self,
        queue: JobQueue,
        registry: JobRegistry,
        *,
        queues: Sequence[str],
        concurrency: int,
        name: str | None = None,
    ) -> None:
        self.queue = queue
        self.registry = registry
        self.queues = tuple(queues)
        self.concurrency = concurrency
        self.name = name or worker_name()
        self.running: dict[str, _Running] = {}
        self.stopping = False
        self.trouble: str | None = None  # why claims fail now (the store does not answer), else None
        self.finished: dict[str, int] = {}  # attempts ended in this process, by outcome (lost: lease lost)
        self._limits = {k: c.concurrency for k, c in queue.config.kinds.items() if c.concurrency is not None}

    async def run(self) -> None:
        """Claim and run jobs until cancelled; then drain."""
        if self.registry.kinds:  # nothing to run here: no connection held for news of jobs
            self.queue.listen()
        poll = self.queue.config.poll_s
        failures = 0
        try:
            while True:
                self.queue.wakeup.clear()
                try:
                    full = await self._claim_round()
                    failures = 0
                except Exception as exc:  # the store did not answer: try again soon, not at the seam's backoff
                    failures += 1
                    self.trouble = f"claims failing ({_describe(exc)})"
                    if failures == 1:
                        log.warning("jobs: claiming failed (%s); retrying", _describe(exc))
                    await asyncio.sleep(min(STORE_RETRY_MAX_S, poll * 2 ** min(failures, 10)))
                    continue
                self.trouble = None
                if full:
                    continue  # a whole batch: more may be waiting
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(poll):
                        await self.queue.wakeup.wait()
        except asyncio.CancelledError:
            await self.drain()
            raise

    async def _claim_round(self) -> bool:
        """Claim for the free slots, kind by kind where a kind has a limit. True: every slot asked for came."""
        free = self.concurrency - len(self.running)
        if free <= 0:
            return False
        per_kind: dict[str, int] = {}
        for r in self.running.values():
            per_kind[r.job.kind] = per_kind.get(r.job.kind, 0) + 1
        kinds = self.registry.kinds
        groups: list[tuple[list[str], int]] = [([k for k in kinds if k not in self._limits], free)]
        groups += [([k], self._limits[k] - per_kind.get(k, 0)) for k in kinds if k in self._limits]
        asked = got = 0
        for group, room in groups:
            n = min(room, self.concurrency - len(self.running))
            if not group or n <= 0:
                continue
            claiming = asyncio.ensure_future(
                self.queue.claim(worker=self.name, queues=self.queues, kinds=group, limit=n)
            )
            try:
                jobs = await asyncio.shield(claiming)
            except asyncio.CancelledError:  # stopping mid-claim: what the store gave us goes back at once
                with contextlib.suppress(Exception):
                    for job in await asyncio.wait_for(claiming, RELEASE_WAIT_S):
                        await self.queue.finish(job, Outcome("released"))
                raise
            asked, got = asked + n, got + len(jobs)
            for job in jobs:
                self._start(job)
        return asked > 0 and got == asked

    def _start(self, job: Job) -> None:
        task = asyncio.create_task(self._run(job), name=f"keel-job-{job.id}")
        self.running[job.id] = _Running(job, task)
        task.add_done_callback(lambda _: self._done(job.id))

    def _done(self, job_id: str) -> None:
        self.running.pop(job_id, None)
        self.queue.wakeup.set()  # a slot is free

    async def _run(self, job: Job) -> None:
        try:
            outcome = await self._attempt(job)
            key = "lost" if outcome is None else ("retried" if outcome.state == "queued" else outcome.state)
            self.finished[key] = self.finished.get(key, 0) + 1
            if outcome is not None:
                await self.queue.finish(job, outcome)
        except Exception:
            log.exception("job %s (%s): could not record its outcome; its lease will expire", job.id, job.kind)

    async def _attempt(self, job: Job) -> Outcome | None:
        """Run the handler beside its keeper; the outcome to write, or None when the lease is lost."""
        handler = self.registry.get(job.kind)
        if handler is None:  # claimed by kind, so only a registry changed under us
            return Outcome("released")
        ctx = RunContext(self.queue, job)
        task = asyncio.create_task(handler(job, ctx))
        running = self.running[job.id]
        running.handler = task
        timed_out = await self._keep(job, ctx, task)
        if ctx.lost:
            task.cancel()
            return None
        if running.handing_back:
            return Outcome("released")
        if timed_out:
            return self.queue.retry_outcome(job, f"timed out after {job.timeout_s:g} s")
        try:
            result = task.result()
        except (Cancelled, asyncio.CancelledError):
            return Outcome("cancelled", error="cancelled on request")
        except LeaseLost:
            return None
        except Permanent as exc:
            return Outcome("dead", error=_describe(exc))
        except Exception as exc:
            if ctx.cancelled:
                return Outcome("cancelled", error=f"cancelled on request ({_describe(exc)})")
            return self.queue.retry_outcome(job, _describe(exc))
        return Outcome("succeeded", result=result)

    async def _keep(self, job: Job, ctx: RunContext, task: asyncio.Task[Any]) -> bool:
        """Heartbeats until the handler ends. True when it ran past its timeout (and was cancelled)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + job.timeout_s
        every = self.queue.config.beat_s
        while not task.done():
            left = deadline - loop.time()
            if left <= 0:
                task.cancel()
                await asyncio.wait({task})
                return True
            await asyncio.wait({task}, timeout=min(every, left))
            if task.done() or loop.time() >= deadline:
                continue
            try:
                await ctx.heartbeat()
            except LeaseLost:
                pass
            except Exception as exc:  # the store did not answer: beat again next time; the lease may lapse
                log.warning("job %s: heartbeat failed (%s); retrying", job.id, _describe(exc))
            if ctx.lost:
                task.cancel()
                await asyncio.wait({task})
                return False
        return False

    async def drain(self) -> None:
        """Let running jobs finish within the grace period; hand back the rest."""
        self.stopping = True
        running = list(self.running.values())
        if not running:
            return
        grace = self.queue.config.grace_s
        log.info("jobs: draining %d running job(s), up to %g s", len(running), grace)
        _, pending = await asyncio.wait({r.task for r in running}, timeout=grace)
        late = [r for r in running if r.task in pending]
        for r in late:
            r.handing_back = True
            if r.handler is not None:
                r.handler.cancel()
        if late:
            log.warning("jobs: handing back %d job(s) still running after %g s", len(late), grace)
            await asyncio.wait({r.task for r in late}, timeout=RELEASE_WAIT_S)


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
