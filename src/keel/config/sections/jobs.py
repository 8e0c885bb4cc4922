"""`jobs:`: the durable job queue's workers, leases, retries and retention (keel.jobs).

`keel serve` runs `workers` job workers in its process unless `enabled: false`; `keel worker` runs
them alone. Leases, heartbeats and polling are per process; the queue itself is the store's.
"""

from __future__ import annotations

from pydantic import Field

from keel.config.parts import Model, Outline
from keel.errors import ConfigIssue


class JobKindConfig(Model):
    concurrency: int | None = Field(None, ge=1)  # at most this many of the kind at once in one process
    max_attempts: int | None = Field(None, ge=1)  # default for jobs of this kind enqueued without one
    timeout_s: float | None = Field(None, gt=0)


class JobsConfig(Model):
    enabled: bool = True  # keel serve runs workers in its process
    workers: int = Field(4, ge=1, le=1024)  # jobs run at once per process
    queues: list[str] = ["default"]  # the queues this process's workers take from
    lease_s: float = Field(30.0, gt=0, le=3600)  # a claim holds this long unless renewed
    heartbeat_s: float | None = Field(None, gt=0)  # renew every…; default lease_s / 3
    poll_s: float = Field(
        1.0, gt=0, le=60
    )  # look for due jobs at least this often (SQLite: the wake-up across processes)
    max_attempts: int = Field(5, ge=1, le=1000)
    timeout_s: float = Field(300.0, gt=0)  # one attempt's bound, unless the job sets its own
    backoff_s: float = Field(2.0, ge=0)  # first retry after about this; doubling per attempt, ±25 % jitter
    backoff_max_s: float = Field(600.0, ge=0)
    grace_s: float = Field(20.0, ge=0, le=600)  # on SIGTERM running jobs may finish this long, then are handed back
    stuck_after: int = Field(2, ge=1)  # leases expired in a row without progress: the job shows as stuck
    retention_days: float = Field(7.0, gt=0)  # finished jobs are deleted this long after they finish
    kinds: dict[str, JobKindConfig] = {}
    plugins: list[str] = []  # extra capability builders, "module:attr" (e.g. a test's job kinds)

    @property
    def beat_s(self) -> float:
        return self.heartbeat_s if self.heartbeat_s is not None else self.lease_s / 3


def check(jobs: JobsConfig, outline: Outline) -> list[ConfigIssue]:
    """A heartbeat inside the lease, plugins written as module:attr."""
    issues: list[ConfigIssue] = []
    if jobs.heartbeat_s is not None and jobs.heartbeat_s >= jobs.lease_s and "jobs.lease_s" not in outline.rejected:
        message = (
            f"{jobs.heartbeat_s:g} s is not below lease_s ({jobs.lease_s:g} s): every lease would lapse between beats"
        )
        fix = "set jobs.heartbeat_s below jobs.lease_s, or leave it out (a third of the lease)"
        issues.append(ConfigIssue("jobs.heartbeat_s", message, fix))
    for i, spec in enumerate(jobs.plugins):
        module, _, attr = spec.partition(":")
        if not module or not attr:
            fix = "write the builder as module:attr, e.g. mypackage.jobs:build"
            issues.append(ConfigIssue(f"jobs.plugins[{i}]", f"{spec!r} is not module:attr", fix))
    return issues
