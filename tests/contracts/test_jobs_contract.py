"""The JobStore contract, over every SQL backend (SQLite and PostgreSQL), and the workers over it:
concurrent claimers never hold one job at once, expired leases re-run, retries back off, the last
attempt goes dead, cancel and retry, idempotency keys, progress, depths and stuck jobs, retention;
then the pool: handlers run, see cancellation, time out, and hand back their jobs when stopped."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from keel.config import JobKindConfig, JobsConfig
from keel.jobs import Cancelled, JobQueue, JobRegistry, Permanent
from keel.jobs.pool import JobPool
from keel.store.open import open_job_wakeups, open_store
from keel.store.protocols import Job, JobContext, JobQuery, JobSpec, Outcome, Progress, Store

NOW = time.time()


def claim(store: Store, *, now: float = NOW, limit: int = 10, lease_s: float = 30.0, **kw: Any) -> list[Job]:
    kinds = kw.pop("kinds", ("echo",))
    queues = kw.pop("queues", ("default",))
    return store.claim_jobs(worker="w", queues=queues, kinds=kinds, limit=limit, lease_s=lease_s, now=now)


def one(store: Store, **kw: Any) -> Job:
    return store.enqueue_jobs([JobSpec("echo", kw.pop("payload", {"n": 1}), **kw)], NOW)[0]


# ---- the store ------------------------------------------------------------------------------------


def test_jobs_read_back_whole_and_batches_keep_their_order(store: Store) -> None:
    payload = {"text": "héllo", "nested": [1, None, {"a": True}]}
    job = one(store, payload=payload, tenant="acme", priority=3, max_attempts=2, timeout_s=9.5)
    many = store.enqueue_jobs([JobSpec("echo", i) for i in range(50)], NOW)

    got = store.get_job(job.id)

    assert got == job
    assert (got.state, got.payload, got.tenant, got.priority, got.attempts) == ("queued", payload, "acme", 3, 0)
    assert (got.max_attempts, got.timeout_s, got.run_at, got.created_at) == (2, 9.5, NOW, NOW)
    assert [j.payload for j in many] == list(range(50))
    assert len({j.id for j in many}) == 50
    assert store.get_job("job_missing") is None


def test_an_idempotency_key_returns_the_job_it_made_first_per_tenant(store: Store) -> None:
    first = one(store, tenant="acme", idempotency_key="k1", payload=1)
    again = one(store, tenant="acme", idempotency_key="k1", payload=2)
    other = one(store, tenant="globex", idempotency_key="k1", payload=3)
    batch = store.enqueue_jobs(
        [JobSpec("echo", 4, idempotency_key="k2"), JobSpec("echo", 5, idempotency_key="k2")], NOW
    )

    assert again.id == first.id and again.payload == 1
    assert other.id != first.id
    assert batch[0].id == batch[1].id and batch[1].payload == 4
    assert len(store.list_jobs(JobQuery())) == 3


def test_claims_take_due_jobs_by_priority_then_time_within_queues_and_kinds(store: Store) -> None:
    low = one(store, priority=0)
    high = one(store, priority=5)
    early = one(store, priority=0, run_at=NOW - 10)
    later = one(store, run_at=NOW + 60)
    elsewhere = one(store, queue="batch")
    store.enqueue_jobs([JobSpec("other")], NOW)

    got = claim(store, limit=3)

    assert [j.id for j in got] == [high.id, early.id, low.id]
    assert all(j.state == "running" and j.attempts == 1 and j.claim and j.worker == "w" for j in got)
    assert got[0].lease_until == NOW + 30
    assert claim(store) == []  # the future one is not due, the other queue and kind are not asked for
    assert [j.id for j in claim(store, now=NOW + 61)] == [later.id]
    assert [j.id for j in claim(store, queues=("batch",))] == [elsewhere.id]


def test_concurrent_claimers_never_hold_one_job_at_once(storage_url: str) -> None:
    n_jobs, n_claimers = 400, 4
    seed = open_store(storage_url)
    seed.enqueue_jobs([JobSpec("echo", i) for i in range(n_jobs)], NOW)
    stores = [open_store(storage_url, migrate=False) for _ in range(n_claimers)]  # as separate processes would
    taken: list[list[str]] = [[] for _ in range(n_claimers)]
    start = threading.Barrier(n_claimers)

    def claimer(i: int) -> None:
        stores[i].get_job("job_warm")  # its connection open before the race starts
        for _ in range(n_jobs // (3 * n_claimers) + 2):  # rounds: all four claim at once in each
            start.wait()
            taken[i] += [j.id for j in claim(stores[i], limit=3)]

    threads = [threading.Thread(target=claimer, args=(i,)) for i in range(n_claimers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for s in [seed, *stores]:
        s.close()

    every = [job_id for ids in taken for job_id in ids]
    assert len(every) == n_jobs
    assert len(set(every)) == n_jobs  # nobody got a job twice
    assert all(taken)  # every claimer took part


def test_an_expired_lease_goes_back_to_the_queue_and_its_old_holder_writes_nothing(store: Store) -> None:
    job = one(store)
    (first,) = claim(store, lease_s=1.0)
    assert first.claim is not None

    recovered = store.recover_jobs(NOW + 0.5)  # still leased
    assert recovered.requeued == []
    recovered = store.recover_jobs(NOW + 2)
    assert recovered.requeued == [job.id]
    back = store.get_job(job.id)
    assert back is not None and (back.state, back.expiries, back.claim, back.error) == (
        "queued",
        1,
        None,
        "lease expired",
    )

    (second,) = claim(store, now=NOW + 2)
    assert second.attempts == 2 and second.claim != first.claim
    assert store.beat_job(job.id, first.claim, lease_until=NOW + 99, now=NOW + 2) is None
    assert store.finish_job(job.id, first.claim, Outcome("succeeded", result=1), NOW + 2) is None
    assert second.claim is not None
    done = store.finish_job(job.id, second.claim, Outcome("succeeded", result={"ok": True}), NOW + 3)
    assert done is not None and (done.state, done.result, done.finished_at) == ("succeeded", {"ok": True}, NOW + 3)


def test_heartbeats_renew_the_lease_and_record_progress(store: Store) -> None:
    job = one(store)
    (run,) = claim(store, lease_s=1.0)
    assert run.claim is not None

    beat = store.beat_job(job.id, run.claim, lease_until=NOW + 5, now=NOW + 0.9, progress=Progress(3, 10, "chunking"))
    assert beat is not None and beat.cancel_requested is False
    assert store.recover_jobs(NOW + 2).requeued == []  # renewed past this
    got = store.get_job(job.id)
    assert got is not None and (got.progress_done, got.progress_total, got.progress_message) == (3, 10, "chunking")
    assert got.lease_until == NOW + 5


def test_failed_attempts_retry_after_a_growing_backoff_then_go_dead(store: Store) -> None:
    queue = JobQueue(store, JobsConfig(backoff_s=2.0, backoff_max_s=60.0), clock=lambda: NOW)
    job = one(store, max_attempts=2)
    (run,) = claim(store)
    assert run.claim is not None

    outcome = queue.retry_outcome(run, "ValueError: boom")
    assert outcome.state == "queued" and outcome.retry_at is not None and NOW + 1.5 <= outcome.retry_at <= NOW + 2.5
    back = store.finish_job(job.id, run.claim, outcome, NOW)
    assert back is not None and (back.state, back.error) == ("queued", "ValueError: boom")
    assert claim(store, now=NOW + 1.4) == []  # not before its backoff
    (run2,) = claim(store, now=NOW + 3)
    assert run2.attempts == 2 and run2.claim is not None

    last = queue.retry_outcome(run2, "ValueError: again")
    assert last.state == "dead"
    dead = store.finish_job(job.id, run2.claim, last, NOW + 3)
    assert dead is not None and (dead.state, dead.error, dead.attempts) == ("dead", "ValueError: again", 2)
    assert claim(store, now=NOW + 999) == []


def test_a_lease_expiring_on_the_last_attempt_goes_dead(store: Store) -> None:
    job = one(store, max_attempts=1)
    claim(store, lease_s=1.0)

    recovered = store.recover_jobs(NOW + 2)

    assert recovered.dead == [job.id] and recovered.requeued == []
    got = store.get_job(job.id)
    assert got is not None and (got.state, got.error) == ("dead", "lease expired on the last attempt")


def test_cancel_ends_a_queued_job_and_asks_a_running_one(store: Store) -> None:
    queued = one(store, priority=0)
    running = one(store, priority=9)
    (run,) = claim(store, limit=1)
    assert run.id == running.id and run.claim is not None

    cancelled = store.cancel_job(queued.id, NOW + 1)
    asked = store.cancel_job(running.id, NOW + 1)

    assert cancelled is not None and (cancelled.state, cancelled.finished_at) == ("cancelled", NOW + 1)
    assert asked is not None and (asked.state, asked.cancel_requested) == ("running", True)
    beat = store.beat_job(run.id, run.claim, lease_until=NOW + 30, now=NOW + 1)
    assert beat is not None and beat.cancel_requested
    done = store.finish_job(run.id, run.claim, Outcome("cancelled", error="cancelled on request"), NOW + 2)
    assert done is not None and done.state == "cancelled"
    assert store.cancel_job(done.id, NOW + 3) == done  # finished: unchanged
    assert store.cancel_job("job_missing", NOW) is None
    assert claim(store, now=NOW + 9) == []


def test_retry_requeues_a_dead_or_cancelled_job_from_scratch(store: Store) -> None:
    job = one(store, max_attempts=1)
    (run,) = claim(store)
    assert run.claim is not None
    store.finish_job(job.id, run.claim, Outcome("dead", error="Permanent: no"), NOW)

    again = store.retry_job(job.id, NOW + 5)

    assert again is not None and (again.state, again.attempts, again.error, again.run_at) == (
        "queued",
        0,
        None,
        NOW + 5,
    )
    assert [j.id for j in claim(store, now=NOW + 5)] == [job.id]
    assert store.retry_job(job.id, NOW + 6) is not None and store.get_job(job.id).state == "running"  # type: ignore[union-attr]


def test_a_released_job_is_queued_at_once_without_counting_the_attempt(store: Store) -> None:
    job = one(store)
    (run,) = claim(store)
    assert run.claim is not None

    back = store.finish_job(job.id, run.claim, Outcome("released"), NOW + 1)

    assert back is not None and (back.state, back.attempts, back.run_at, back.claim) == ("queued", 0, NOW + 1, None)
    assert [j.id for j in claim(store, now=NOW + 1)] == [job.id]


def test_depths_count_unfinished_jobs_per_queue_with_their_oldest_age_and_stuck_ones(store: Store) -> None:
    store.enqueue_jobs([JobSpec("echo", run_at=NOW - 30), JobSpec("echo"), JobSpec("echo", queue="batch")], NOW)
    stuck = one(store, priority=9)
    for i in range(2):  # two leases expire with no progress between them
        claim(store, now=NOW + 10 * i, limit=1, lease_s=1.0)
        store.recover_jobs(NOW + 10 * i + 2)

    depths = {(d.queue, d.state): d for d in store.job_depths(NOW + 40, stuck_after=2)}

    assert depths["default", "queued"].count == 3
    assert depths["default", "queued"].oldest_s == 70.0
    assert depths["default", "queued"].stuck == 1
    assert depths["batch", "queued"].count == 1
    listed = store.list_jobs(JobQuery(stuck_after=2))
    assert [j.id for j in listed] == [stuck.id] and listed[0].stuck(2)
    (run,) = claim(store, now=NOW + 41, limit=1)
    assert run.claim is not None
    store.beat_job(run.id, run.claim, lease_until=NOW + 90, now=NOW + 42, progress=Progress(1, 2))
    assert store.list_jobs(JobQuery(stuck_after=2)) == []  # progress clears it


def test_listing_filters_by_state_kind_tenant_and_pages_newest_first(store: Store) -> None:
    jobs = [one(store, tenant="acme" if i % 2 else "globex") for i in range(6)]
    store.enqueue_jobs([JobSpec("other", tenant="acme")], NOW)
    claim(store, limit=1)

    acme = store.list_jobs(JobQuery(tenant="acme", kind="echo"))
    page = store.list_jobs(JobQuery(limit=2))
    rest = store.list_jobs(JobQuery(limit=10, before=page[-1].id))

    assert [j.id for j in acme] == [j.id for j in reversed(jobs) if j.tenant == "acme"]
    assert len(store.list_jobs(JobQuery(state="running"))) == 1
    assert len(page) == 2 and len(rest) == 5 and not {j.id for j in page} & {j.id for j in rest}
    assert page[0].created_at >= rest[0].created_at


def test_retention_deletes_only_finished_jobs_older_than_the_cut(store: Store) -> None:
    jobs = store.enqueue_jobs([JobSpec("echo", i) for i in range(5)], NOW)
    for run in claim(store, limit=3):
        assert run.claim is not None
        store.finish_job(run.id, run.claim, Outcome("succeeded"), NOW + 10)
    store.cancel_job(jobs[4].id, NOW + 100)

    assert store.delete_finished_jobs(NOW + 50, limit=2) == 2
    assert store.delete_finished_jobs(NOW + 50, limit=2) == 1
    assert store.delete_finished_jobs(NOW + 50, limit=2) == 0
    assert sorted(j.state for j in store.list_jobs(JobQuery())) == ["cancelled", "queued"]


# ---- the workers ----------------------------------------------------------------------------------

FAST = JobsConfig(lease_s=1.0, poll_s=0.05, backoff_s=0.01, backoff_max_s=0.05, grace_s=0.2)


async def run_pool(store: Store, handlers: dict[str, Any], cfg: JobsConfig = FAST, concurrency: int = 4) -> Any:
    queue = JobQueue(store, cfg, wakeups=open_job_wakeups(store.url))
    registry = JobRegistry()
    registry.register_all([handlers])
    pool = JobPool(queue, registry, queues=cfg.queues, concurrency=concurrency)
    task = asyncio.create_task(pool.run())
    return queue, pool, task


async def stop(queue: JobQueue, task: asyncio.Task[None]) -> None:
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await queue.aclose()


def test_the_pool_runs_handlers_records_results_progress_and_retries(store: Store) -> None:
    calls: list[int] = []

    async def echo(job: Job, ctx: JobContext) -> Any:
        calls.append(job.attempts)
        await ctx.progress(1, 2, "half")
        if job.payload == "flaky" and job.attempts < 3:
            raise RuntimeError("try again")
        if job.payload == "bad":
            raise Permanent("no use retrying")
        return {"echo": job.payload}

    async def main() -> None:
        queue, _, task = await run_pool(store, {"echo": echo})
        ok, flaky, bad = [await queue.enqueue("echo", p, max_attempts=4) for p in ("hi", "flaky", "bad")]
        done = [await queue.wait(j.id, 10) for j in (ok, flaky, bad)]
        await stop(queue, task)
        assert (done[0].state, done[0].result, done[0].progress_message) == ("succeeded", {"echo": "hi"}, "half")
        assert (done[1].state, done[1].attempts, done[1].result) == ("succeeded", 3, {"echo": "flaky"})
        assert (done[2].state, done[2].attempts, done[2].error) == ("dead", 1, "Permanent: no use retrying")

    asyncio.run(main())


def test_a_running_handler_sees_cancellation_and_a_slow_one_times_out(store: Store) -> None:
    async def patient(job: Job, ctx: JobContext) -> Any:
        while not ctx.cancelled:
            await ctx.heartbeat()
            await asyncio.sleep(0.02)
        raise Cancelled

    async def slow(job: Job, ctx: JobContext) -> Any:
        await asyncio.sleep(60)

    async def main() -> None:
        queue, _, task = await run_pool(store, {"patient": patient, "slow": slow})
        p = await queue.enqueue("patient")
        s = await queue.enqueue("slow", timeout_s=0.3, max_attempts=1)
        while (await queue.get(p.id)).state != "running":  # type: ignore[union-attr]
            await asyncio.sleep(0.01)
        await queue.cancel(p.id)
        cancelled, timed_out = await queue.wait(p.id, 10), await queue.wait(s.id, 10)
        await stop(queue, task)
        assert (cancelled.state, cancelled.error) == ("cancelled", "cancelled on request")
        assert (timed_out.state, timed_out.error) == ("dead", "timed out after 0.3 s")

    asyncio.run(main())


def test_per_kind_limits_hold_within_a_pool(store: Store) -> None:
    now_running = {"n": 0, "max": 0}

    async def narrow(job: Job, ctx: JobContext) -> Any:
        now_running["n"] += 1
        now_running["max"] = max(now_running["max"], now_running["n"])
        await asyncio.sleep(0.02)
        now_running["n"] -= 1

    cfg = FAST.model_copy(update={"kinds": {"narrow": JobKindConfig(concurrency=2)}})

    async def main() -> None:
        queue, _, task = await run_pool(store, {"narrow": narrow}, cfg, concurrency=8)
        jobs = await queue.enqueue_many([JobSpec("narrow", i) for i in range(12)])
        for j in jobs:
            assert (await queue.wait(j.id, 10)).state == "succeeded"
        await stop(queue, task)

    asyncio.run(main())
    assert now_running["max"] == 2


def test_stopping_hands_back_jobs_still_running_after_the_grace_period(store: Store) -> None:
    async def stubborn(job: Job, ctx: JobContext) -> Any:
        await asyncio.sleep(60)

    async def main() -> None:
        queue, pool, task = await run_pool(store, {"stubborn": stubborn})
        job = await queue.enqueue("stubborn")
        while job.id not in pool.running:
            await asyncio.sleep(0.01)
        await stop(queue, task)
        back = store.get_job(job.id)
        assert back is not None and (back.state, back.attempts, back.claim) == ("queued", 0, None)

    asyncio.run(main())


def test_a_worker_elsewhere_wakes_for_a_job_queued_here(storage_url: str) -> None:
    """Another process's queue (its own store): PostgreSQL wakes it by NOTIFY, SQLite on its poll."""

    async def main() -> None:
        seen: asyncio.Event = asyncio.Event()

        async def mark(job: Job, ctx: JobContext) -> Any:
            seen.set()

        theirs, producer = open_store(storage_url), open_store(storage_url, migrate=False)
        queue, _, task = await run_pool(theirs, {"mark": mark})
        await asyncio.sleep(0)
        producer.enqueue_jobs([JobSpec("mark")], time.time())
        await asyncio.wait_for(seen.wait(), 10)
        await stop(queue, task)
        theirs.close()
        producer.close()

    asyncio.run(main())


def test_finishes_written_together_each_answer_for_their_own_claim(store: Store) -> None:
    jobs = store.enqueue_jobs([JobSpec("echo", i, max_attempts=3) for i in range(5)], NOW)
    runs = {j.id: j for j in claim(store)}
    a, b, c, d, e = (runs[j.id] for j in jobs)
    assert all(r.claim is not None for r in (a, b, c, d, e))
    ends = [
        (a.id, a.claim or "", Outcome("succeeded", result={"n": 0})),
        (b.id, "not-its-claim", Outcome("succeeded", result=1)),
        (c.id, c.claim or "", Outcome("queued", error="boom", retry_at=NOW + 5)),
        (d.id, d.claim or "", Outcome("succeeded", result=[3])),
        (e.id, e.claim or "", Outcome("dead", error="Permanent: no")),
    ]

    got = store.finish_jobs(ends, NOW + 1)

    assert [None if j is None else j.state for j in got] == ["succeeded", None, "queued", "succeeded", "dead"]
    assert got[0] is not None and got[0].result == {"n": 0} and got[0].finished_at == NOW + 1
    assert got[3] is not None and got[3].result == [3]
    assert store.get_job(b.id).state == "running"  # type: ignore[union-attr]


def test_two_pools_on_their_own_stores_run_each_job_once(storage_url: str) -> None:
    """As two worker processes would: every job runs exactly once, and both take a share."""
    ran: dict[str, list[str]] = {}

    def handler(name: str) -> Any:
        async def run(job: Job, ctx: JobContext) -> Any:
            ran.setdefault(job.id, []).append(name)
            await asyncio.sleep(0.01)

        return run

    async def main() -> None:
        stores = [open_store(storage_url), open_store(storage_url, migrate=False)]
        pools = [await run_pool(s, {"work": handler(f"pool{i}")}, concurrency=3) for i, s in enumerate(stores)]
        jobs = await pools[0][0].enqueue_many([JobSpec("work", i) for i in range(90)])
        for j in jobs:
            assert (await pools[1][0].wait(j.id, 20)).state == "succeeded"
        for queue, _, task in pools:
            await stop(queue, task)
        for s in stores:
            s.close()
        assert sorted(ran) == sorted(j.id for j in jobs)

    asyncio.run(main())
    assert all(len(names) == 1 for names in ran.values())
    assert {names[0] for names in ran.values()} == {"pool0", "pool1"}


def test_the_retention_sweep_deletes_what_finished_before_the_cut(store: Store) -> None:
    jobs = store.enqueue_jobs([JobSpec("echo", i) for i in range(3)], NOW)
    for run in claim(store, limit=2):
        store.finish_job(run.id, run.claim or "", Outcome("succeeded"), NOW)
    queue = JobQueue(store, JobsConfig(retention_days=1), clock=lambda: NOW + 86400 + 1)

    async def main() -> int:
        try:
            return await queue.purge(batch=1)
        finally:
            await queue.aclose()

    assert asyncio.run(main()) == 2
    assert [j.id for j in store.list_jobs(JobQuery())] == [jobs[2].id]


def test_a_handler_whose_lease_is_lost_is_stopped_and_writes_nothing(store: Store) -> None:
    """The lease sweep took the job back (its worker looked dead): the next heartbeat finds the claim
    gone, the handler is cancelled, its result is never written; the job runs again."""
    stopped = []

    async def main() -> None:
        started: asyncio.Event = asyncio.Event()

        async def once(job: Job, ctx: JobContext) -> Any:
            if job.attempts == 1:
                started.set()
                try:
                    await asyncio.sleep(60)
                except asyncio.CancelledError:
                    stopped.append(job.attempts)
                    raise
            return "second"

        cfg = FAST.model_copy(update={"heartbeat_s": 0.05})
        queue, pool, task = await run_pool(store, {"once": once}, cfg)
        job = await queue.enqueue("once")
        await asyncio.wait_for(started.wait(), 10)
        running = store.get_job(job.id)
        assert running is not None and running.lease_until is not None
        # as if its lease had run out (0.5 s past it: a heartbeat landing meanwhile moves it by 0.05 s)
        assert store.recover_jobs(running.lease_until + 0.5).requeued == [job.id]
        done = await queue.wait(job.id, 10)
        await stop(queue, task)
        assert (done.state, done.result, done.attempts, done.expiries) == ("succeeded", "second", 2, 1)
        assert pool.finished.get("lost") == 1

    asyncio.run(main())
    assert stopped == [1]


def test_a_result_that_is_not_json_ends_its_job_dead_and_spares_the_others(store: Store) -> None:
    async def odd(job: Job, ctx: JobContext) -> Any:
        return {"fine": True} if job.payload else {"bad": object()}

    async def main() -> None:
        queue, _, task = await run_pool(store, {"odd": odd})
        jobs = await queue.enqueue_many([JobSpec("odd", i % 2) for i in range(6)])
        done = [await queue.wait(j.id, 10) for j in jobs]
        await stop(queue, task)
        assert [d.state for d in done] == ["dead", "succeeded"] * 3
        assert done[0].error is not None and done[0].error.startswith("the handler's result is not JSON")
        assert done[1].result == {"fine": True}

    asyncio.run(main())


def test_errors_and_messages_any_store_takes(store: Store) -> None:
    async def rude(job: Job, ctx: JobContext) -> Any:
        await ctx.progress(1, 2, "half\x00way \ud800")
        raise Permanent("nul\x00 and " + "x" * 10_000)

    async def main() -> None:
        queue, _, task = await run_pool(store, {"rude": rude})
        done = await queue.wait((await queue.enqueue("rude")).id, 10)
        await stop(queue, task)
        assert done.state == "dead" and done.error is not None
        assert "\x00" not in done.error and len(done.error) <= 4000 and done.error.startswith("Permanent: nul")
        assert done.progress_message is not None and "\x00" not in done.progress_message

    asyncio.run(main())
