"""The job pool through a database outage (PostgreSQL: its connections killed by the server): claims
fail, the pool says so (`trouble`, keel_jobs_claiming_up), keeps trying on its own, and runs the jobs
queued meanwhile once the database answers again — without the worker seam's long restart backoff."""

from __future__ import annotations

import asyncio
import secrets
import time
from typing import Any

import psycopg
import pytest

from keel.config import JobsConfig
from keel.jobs import JobQueue, JobRegistry
from keel.jobs.pool import JobPool
from keel.store.open import open_store
from keel.store.protocols import Job, JobContext, JobSpec

pytestmark = pytest.mark.postgres


def test_the_pool_keeps_claiming_through_killed_connections(
    pg_schema_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    app = "keel_jobs_outage_" + secrets.token_hex(4)
    url = f"{pg_schema_url}&application_name={app}"
    base = pg_schema_url.split("?", 1)[0]
    ran: list[int] = []

    async def work(job: Job, ctx: JobContext) -> Any:
        ran.append(job.payload)

    async def main() -> None:
        store, producer = open_store(url), open_store(pg_schema_url, migrate=False)
        queue = JobQueue(store, JobsConfig(poll_s=0.05, lease_s=2.0), threads=4)
        registry = JobRegistry()
        registry.register("work", work)
        pool = JobPool(queue, registry, queues=["default"], concurrency=2)
        task = asyncio.create_task(pool.run())
        producer.enqueue_jobs([JobSpec("work", 1)], time.time())
        while ran != [1]:
            await asyncio.sleep(0.01)

        with psycopg.connect(base, autocommit=True) as admin:  # the outage: every connection of the pool's store
            killed = admin.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = %s", (app,)
            ).fetchone()
        assert killed is not None and killed[0] >= 1
        producer.enqueue_jobs([JobSpec("work", 2)], time.time())

        async with asyncio.timeout(15):
            while ran != [1, 2]:
                await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await queue.aclose()
        store.close()
        producer.close()
        assert pool.trouble is None

    with caplog.at_level("WARNING", logger="keel.jobs"):
        asyncio.run(main())
    assert "jobs: claiming failed" in caplog.text  # the outage was met, and said so
