"""The jobs capability's builder: the queue (offered to later builders and the edges), the registry
every builder's `Contribution.jobs` fills, and its workers: the pool (unless `jobs.enabled: false`),
the lease sweep and the retention sweep.
"""

from __future__ import annotations

from keel.gateway.capability import Context, Contribution, Worker
from keel.jobs.pool import JobPool
from keel.jobs.queue import JobQueue
from keel.jobs.registry import JobRegistry
from keel.store.open import open_job_wakeups

RETENTION_EVERY_S = 3600.0


def build(ctx: Context) -> Contribution:
    jc = ctx.config.jobs
    url = ctx.store.url
    sqlite = url.startswith("sqlite:")
    queue = JobQueue(ctx.store, jc, threads=1 if sqlite else 4, wakeups=None if sqlite else open_job_wakeups(url))
    registry = JobRegistry()
    ctx.add(queue)
    ctx.add(registry)
    workers = [
        Worker("jobs-leases", queue.recover, every_s=jc.lease_s / 2),
        Worker("jobs-retention", queue.sweep, every_s=RETENTION_EVERY_S, first_s=60.0),
    ]
    if jc.enabled:
        pool = JobPool(queue, registry, queues=jc.queues, concurrency=jc.workers)
        ctx.add(pool)
        workers.insert(0, Worker("jobs", pool.run))
    return Contribution(workers=workers, close=[queue.aclose])
