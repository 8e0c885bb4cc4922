"""The durable job queue: jobs as rows, claimed under a lease, finished once.

A job is queued, claimed by one worker at a time (`running`, under a lease its worker renews by
heartbeat), and ends `succeeded`, `dead` (its last attempt failed, or an operator gave up) or
`cancelled`. A lease that expires puts the job back in the queue (counted in `expiries`); a worker
that finds its lease gone stops writing (every write names its claim token). Execution is therefore
at least once: a handler's effect happens exactly once only when its write is idempotent on the job id.

`JobStore` is synchronous and thread-safe like every SQL store (decision 0001); keel.jobs runs it off
the event loop. Times are wall-clock seconds (`time.time()`), passed in by the caller.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

JobState = Literal["queued", "running", "succeeded", "dead", "cancelled"]
JOB_STATES: tuple[JobState, ...] = ("queued", "running", "succeeded", "dead", "cancelled")
FINAL_STATES: frozenset[str] = frozenset({"succeeded", "dead", "cancelled"})
DEFAULT_MAX_ATTEMPTS = 5
DEFAULT_TIMEOUT_S = 300.0


@dataclass(frozen=True, slots=True)
class JobSpec:
    """What to enqueue. `payload` and a handler's result are JSON values."""

    kind: str
    payload: Any = None
    queue: str = "default"
    tenant: str = ""  # "" for platform work that belongs to no tenant
    priority: int = 0  # higher runs first
    run_at: float | None = None  # not before (None: now)
    max_attempts: int | None = None  # None: the queue's default for the kind (config `jobs`)
    timeout_s: float | None = None  # one attempt's bound; past it the attempt fails
    idempotency_key: str | None = None  # per tenant: the same key returns the job it made first


@dataclass(frozen=True, slots=True)
class Job:
    id: str
    kind: str
    queue: str
    payload: Any
    tenant: str
    priority: int
    state: JobState
    run_at: float
    attempts: int  # attempts started (a hand-back on shutdown does not count)
    max_attempts: int
    timeout_s: float
    created_at: float
    idempotency_key: str | None = None
    started_at: float | None = None  # the latest attempt's start
    finished_at: float | None = None
    lease_until: float | None = None
    worker: str | None = None  # who holds (or last held) it
    claim: str | None = None  # the running attempt's token; every write of the attempt names it
    cancel_requested: bool = False
    expiries: int = 0  # leases expired since its last progress report
    progress_done: int | None = None
    progress_total: int | None = None
    progress_message: str | None = None
    result: Any = None
    error: str | None = None

    def stuck(self, after: int) -> bool:
        """Its lease expired `after` times or more with no progress in between, and it is not finished."""
        return self.expiries >= after and self.state not in FINAL_STATES


@dataclass(frozen=True, slots=True)
class Beat:
    """A heartbeat's answer: the lease holds; whether someone asked the job to stop."""

    cancel_requested: bool


@dataclass(frozen=True, slots=True)
class JobQuery:
    state: JobState | None = None
    kind: str | None = None
    tenant: str | None = None
    queue: str | None = None
    stuck_after: int | None = None  # only jobs stuck by this count (`Job.stuck`)
    limit: int = 100
    before: str | None = None  # a page: jobs created before this job (by id order)


@dataclass(frozen=True, slots=True)
class QueueDepth:
    """One (queue, state) group: how many jobs, and the oldest one's age in seconds (by run_at)."""

    queue: str
    state: str
    count: int
    oldest_s: float
    stuck: int = 0


@dataclass(frozen=True, slots=True)
class Recovered:
    requeued: list[str] = field(default_factory=list)  # expired leases back in the queue
    dead: list[str] = field(default_factory=list)  # expired on their last attempt


class JobStore(Protocol):
    def enqueue_jobs(self, specs: Sequence[JobSpec], now: float) -> list[Job]:
        """Insert the jobs, in one transaction; one Job per spec, in order. A spec whose (tenant,
        idempotency_key) exists already returns that job, as stored, and inserts nothing."""
        ...

    def claim_jobs(
        self, *, worker: str, queues: Sequence[str], kinds: Sequence[str], limit: int, lease_s: float, now: float
    ) -> list[Job]:
        """Take up to `limit` queued jobs due by `now` of `queues` and `kinds` (highest priority, then
        earliest run_at), mark them running under a fresh claim token and a lease until now + lease_s.
        Concurrent claimers never get the same job."""
        ...

    def beat_job(
        self, job_id: str, claim: str, *, lease_until: float, now: float, progress: Progress | None = None
    ) -> Beat | None:
        """Renew the lease (and record progress, which also clears `expiries`); None when the claim is
        no longer the job's (the lease expired and it went back to the queue, or it finished)."""
        ...

    def finish_job(self, job_id: str, claim: str, outcome: Outcome, now: float) -> Job | None:
        """End the running attempt under `claim`; None (nothing written) when the claim is lost."""
        ...

    def finish_jobs(self, ends: Sequence[tuple[str, str, Outcome]], now: float) -> list[Job | None]:
        """`finish_job` for each (job id, claim, outcome), in one transaction (one commit for many
        workers' results); one answer per item, in order."""
        ...

    def recover_jobs(self, now: float) -> Recovered:
        """Running jobs whose lease ended before `now`: back to queued (expiries + 1), or dead when that
        was their last attempt."""
        ...

    def get_job(self, job_id: str) -> Job | None: ...

    def list_jobs(self, query: JobQuery) -> list[Job]:
        """Newest first."""
        ...

    def cancel_job(self, job_id: str, now: float) -> Job | None:
        """Queued → cancelled; running → cancel requested (its handler sees it on its next heartbeat).
        A finished job is returned unchanged; None when there is no such job."""
        ...

    def retry_job(self, job_id: str, now: float) -> Job | None:
        """A dead or cancelled job → queued again with its attempts reset; others unchanged."""
        ...

    def job_depths(self, now: float, stuck_after: int) -> list[QueueDepth]:
        """Unfinished jobs per (queue, state)."""
        ...

    def delete_finished_jobs(self, before: float, limit: int) -> int:
        """Delete up to `limit` finished jobs that finished before `before`; how many went."""
        ...


@dataclass(frozen=True, slots=True)
class Progress:
    done: int | None = None
    total: int | None = None
    message: str | None = None


@dataclass(frozen=True, slots=True)
class Outcome:
    """How an attempt ended: `succeeded` (with a result), `queued` again at `retry_at` after a failure,
    `dead` (no attempts left, or not retryable) or `cancelled` (on request); or `released`: handed back
    unstarted in effect (shutdown), not counted as an attempt."""

    state: Literal["succeeded", "queued", "dead", "cancelled", "released"]
    result: Any = None
    error: str | None = None
    retry_at: float | None = None


class JobWakeups(Protocol):
    """Cross-process news that jobs were queued (PostgreSQL LISTEN/NOTIFY). Blocking; one thread."""

    def wait(self, timeout_s: float) -> bool:
        """Block until a notification arrives (True) or `timeout_s` passes (False)."""
        ...

    def close(self) -> None: ...


class JobContext(Protocol):
    """What a handler gets beside its job: progress (which also renews the lease), a heartbeat for long
    silent steps, and whether cancellation was requested."""

    @property
    def cancelled(self) -> bool: ...

    async def progress(self, done: int | None = None, total: int | None = None, message: str | None = None) -> None: ...

    async def heartbeat(self) -> None: ...


JobHandler = Callable[[Job, JobContext], Coroutine[Any, Any, Any]]  # an `async def`
