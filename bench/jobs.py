"""The job queue's throughput and wake-up latency: `python bench/jobs.py [--jobs 20000] [--pg URL]`.

Prints, for SQLite (a temporary file) and PostgreSQL (a fresh schema at `--pg`, default
$KEEL_TEST_PG or the test server):
- enqueue: jobs/s through `enqueue_jobs` in batches of 500 (the batched API), and one job per call;
- claim + complete of no-op jobs: jobs/s with 4 worker processes, each a `JobPool` (concurrency 32; $BENCH_JOBS_CONCURRENCY)
  as `keel worker` runs it, from the first claim to the last finish;
- enqueue → start: p50/p90/p99 of (claim time − enqueue time) for single jobs sent 30 ms apart to an
  idle queue with one worker process (PostgreSQL: woken by NOTIFY; SQLite: its `jobs.poll_s` = 0.05 poll),
  and with the pool in the enqueueing process (an asyncio event: `keel serve`'s embedded pool).
A figure on a shared 2-core machine is indicative only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing as mp
import os
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from keel.config import JobsConfig
from keel.jobs import JobQueue, JobRegistry
from keel.jobs.pool import JobPool
from keel.store.open import open_job_wakeups, open_store
from keel.store.protocols import Job, JobContext, JobQuery, JobSpec

PG_DEFAULT = os.environ.get("KEEL_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
CONCURRENCY = int(os.environ.get("BENCH_JOBS_CONCURRENCY", "32"))  # per worker process
CONFIG = JobsConfig(lease_s=30.0, poll_s=0.05, workers=16)


async def noop(job: Job, ctx: JobContext) -> Any:
    return None


def worker_main(url: str, concurrency: int, ready: Any, stop: Any) -> None:
    async def main() -> None:
        store = open_store(url, migrate=False)
        queue = JobQueue(store, CONFIG, threads=1 if url.startswith("sqlite") else 4, wakeups=open_job_wakeups(url))
        registry = JobRegistry()
        registry.register("noop", noop)
        pool = JobPool(queue, registry, queues=["default"], concurrency=concurrency)
        task = asyncio.create_task(pool.run())
        ready.set()
        while not stop.is_set():
            await asyncio.sleep(0.05)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await queue.aclose()
        store.close()

    asyncio.run(main())


@contextmanager
def workers(url: str, n: int, concurrency: int) -> Iterator[None]:
    ctx = mp.get_context("spawn")
    stop = ctx.Event()
    readies = [ctx.Event() for _ in range(n)]
    procs = [ctx.Process(target=worker_main, args=(url, concurrency, r, stop)) for r in readies]
    for p in procs:
        p.start()
    for r in readies:
        r.wait(60)
    try:
        yield
    finally:
        stop.set()
        for p in procs:
            p.join(30)


def bench_enqueue(url: str, n: int) -> tuple[float, float]:
    store = open_store(url)
    try:
        started = time.perf_counter()
        for i in range(0, n, 500):
            store.enqueue_jobs([JobSpec("bench.enqueue", {"i": j}) for j in range(i, min(n, i + 500))], time.time())
        batched = n / (time.perf_counter() - started)
        singles = min(n, 2000)
        started = time.perf_counter()
        for j in range(singles):
            store.enqueue_jobs([JobSpec("bench.enqueue", {"i": j})], time.time())
        single = singles / (time.perf_counter() - started)
        return batched, single
    finally:
        store.close()


def wait_all_done(url: str, n: int, timeout_s: float) -> float:
    store = open_store(url, migrate=False)
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            left = store.list_jobs(JobQuery(state="queued", kind="noop", limit=1)) or store.list_jobs(
                JobQuery(state="running", kind="noop", limit=1)
            )
            if not left:
                return time.perf_counter()
            time.sleep(0.05)
        raise TimeoutError(f"{n} no-op jobs not done in {timeout_s} s")
    finally:
        store.close()


def bench_claim_complete(url: str, n: int, n_workers: int = 4) -> float:
    with workers(url, n_workers, concurrency=CONCURRENCY):
        store = open_store(url, migrate=False)
        started = time.perf_counter()
        for i in range(0, n, 500):
            store.enqueue_jobs([JobSpec("noop") for _ in range(min(500, n - i))], time.time())
        store.close()
        ended = wait_all_done(url, n, 300)
    return n / (ended - started)


def bench_latency(url: str, samples: int) -> list[float]:
    with workers(url, 1, concurrency=4):
        store = open_store(url, migrate=False)
        ids = []
        for _ in range(samples):
            (job,) = store.enqueue_jobs([JobSpec("noop")], time.time())
            ids.append(job.id)
            time.sleep(0.03)
        wait_all_done(url, samples, 60)
        lat = []
        for job_id in ids:
            job = store.get_job(job_id)
            assert job is not None and job.started_at is not None
            lat.append((job.started_at - job.created_at) * 1000)
        store.close()
    return lat


def bench_latency_in_process(url: str, samples: int) -> list[float]:
    """The embedded case (`keel serve`): the enqueue sets the pool's event in the same process."""

    async def main() -> list[float]:
        store = open_store(url)
        queue = JobQueue(store, CONFIG, threads=1 if url.startswith("sqlite") else 4)
        registry = JobRegistry()
        registry.register("noop", noop)
        task = asyncio.create_task(JobPool(queue, registry, queues=["default"], concurrency=4).run())
        ids = []
        for _ in range(samples):
            ids.append((await queue.enqueue("noop")).id)
            await asyncio.sleep(0.03)
        jobs = [await queue.wait(i, 30) for i in ids]
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await queue.aclose()
        store.close()
        return [((j.started_at or 0) - j.created_at) * 1000 for j in jobs]

    return asyncio.run(main())


@contextmanager
def pg_schema(base: str) -> Iterator[str]:
    import psycopg

    schema = "keel_bench_" + secrets.token_hex(4)
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in base else "?"
    try:
        yield f"{base}{sep}options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


def pct(values: list[float], p: float) -> float:
    return statistics.quantiles(values, n=100)[int(p) - 1] if len(values) > 1 else values[0]


def run_backend(name: str, url_for: Any, n: int, samples: int) -> None:
    with url_for() as url:
        batched, single = bench_enqueue(url, n)
        print(f"{name:8} enqueue: {batched:8.0f} jobs/s batched (500 per call), {single:6.0f} jobs/s one per call")
    with url_for() as url:
        open_store(url).close()  # migrated before the workers start
        rate = bench_claim_complete(url, n)
        print(f"{name:8} claim+complete (4 worker processes x {CONCURRENCY}): {rate:8.0f} jobs/s over {n} no-op jobs")
    with url_for() as url:
        open_store(url).close()
        lat = bench_latency(url, samples)
        print(
            f"{name:8} enqueue->start on an idle queue: p50 {pct(lat, 50):6.1f} ms, p90 {pct(lat, 90):6.1f} ms,"
            f" p99 {pct(lat, 99):6.1f} ms ({samples} jobs)"
        )
    with url_for() as url:
        lat = bench_latency_in_process(url, samples)
        print(
            f"{name:8} enqueue->start in one process (keel serve): p50 {pct(lat, 50):6.1f} ms,"
            f" p90 {pct(lat, 90):6.1f} ms, p99 {pct(lat, 99):6.1f} ms ({samples} jobs)"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=20000)
    ap.add_argument("--samples", type=int, default=200)
    ap.add_argument("--pg", default=PG_DEFAULT)
    ap.add_argument("--only", choices=["sqlite", "postgres"])
    args = ap.parse_args()
    print(f"bench/jobs.py on {os.cpu_count()} cores (a shared machine: figures are indicative)")
    if args.only != "postgres":

        @contextmanager
        def sqlite_url() -> Iterator[str]:
            with tempfile.TemporaryDirectory() as tmp:
                yield f"sqlite:///{tmp}/jobs.db"

        run_backend("sqlite", sqlite_url, args.jobs, args.samples)
    if args.only != "sqlite":
        run_backend("postgres", lambda: pg_schema(args.pg), args.jobs, args.samples)


if __name__ == "__main__":
    main()
