"""Backpressure gates: the cap, priority order, immediate refusals, cancellation safety, stats.

"At once" is checked by driving `acquire` one step (`at_once`): a refusal must be raised before the
coroutine ever suspends, i.e. while the slot holder still holds it. The only timing used is a lower
bound (a measured hold time of at least the time slept).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import pytest

from keel.errors import Overloaded, RateLimited
from keel.gateway.backpressure import Gate, Gates

FAR = 3600.0  # a deadline nobody reaches


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(test(), 30))


def at_once(coro: Coroutine[Any, Any, float]) -> float:
    """Run one step of `coro`: it must finish (return or raise) without suspending."""
    try:
        coro.send(None)
    except StopIteration as stop:
        return float(stop.value)
    coro.close()
    raise AssertionError("acquire suspended instead of answering at once")


def deadline(seconds: float = FAR) -> float:
    return asyncio.get_running_loop().time() + seconds


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def learn_hold(gate: Gate, seconds: float) -> None:
    """Hold and release a slot a few times: the gate learns a hold time of at least `seconds`."""
    for _ in range(3):
        await gate.acquire(0, deadline())
        await asyncio.sleep(seconds)
        gate.release()


async def served_in_order(gate: Gate, priorities: list[tuple[str, int]]) -> list[str]:
    """Hold the only slot, queue the calls in this order, release: the order they got the slot."""
    order: list[str] = []

    async def call(name: str, priority: int) -> None:
        await gate.acquire(priority, deadline())
        order.append(name)
        gate.release()

    await gate.acquire(0, deadline())
    tasks = [asyncio.create_task(call(name, p)) for name, p in priorities]
    await settle()
    assert gate.queued == len(priorities)
    gate.release()
    await asyncio.gather(*tasks)
    return order


def test_limit_is_never_exceeded_by_100_concurrent_calls() -> None:
    async def main() -> None:
        gate = Gate(5, 200)
        rng = random.Random(1)
        current = peak = 0

        async def call() -> None:
            nonlocal current, peak
            await gate.acquire(rng.randint(0, 3), deadline())
            current += 1
            peak = max(peak, current)
            assert gate.in_flight <= 5
            await asyncio.sleep(rng.uniform(0, 0.002))
            current -= 1
            gate.release()

        await asyncio.gather(*(call() for _ in range(100)))
        assert peak == 5
        assert (gate.in_flight, gate.queued, gate.stats.admitted) == (0, 0, 100)
        assert gate.stats.waited == 95  # all but the first five queued

    run(main)


def test_higher_priority_is_served_first() -> None:
    async def main() -> None:
        order = await served_in_order(Gate(1, 10), [("p1", 1), ("p5", 5), ("p3", 3), ("p0", 0), ("p9", 9)])
        assert order == ["p9", "p5", "p3", "p1", "p0"]

    run(main)


def test_fifo_within_a_priority() -> None:
    async def main() -> None:
        calls = [("a", 2), ("b", 1), ("c", 2), ("d", 1), ("e", 2)]
        order = await served_in_order(Gate(1, 10), calls)
        assert order == ["a", "c", "e", "b", "d"]

    run(main)


def test_a_full_queue_refuses_at_once_while_the_holder_still_holds() -> None:
    async def main() -> None:
        gate = Gate(1, 2, target="oai/gpt-4o")
        await gate.acquire(0, deadline())
        waiters = [asyncio.create_task(gate.acquire(0, deadline())) for _ in range(2)]
        await settle()
        with pytest.raises(Overloaded) as refused:
            at_once(gate.acquire(0, deadline()))
        assert (gate.in_flight, gate.queued, gate.stats.rejected) == (1, 2, 1)
        err = refused.value
        assert isinstance(err, RateLimited) and err.status == 429 and err.code == "target_saturated"
        assert err.type == "rate_limit_error" and err.target == "oai/gpt-4o"
        assert err.headers()["retry-after"] == "1"  # no hold time known yet: the default estimate
        assert "queue is full" in err.message and "oai/gpt-4o" in err.message
        for _ in waiters:
            gate.release()
            await settle()
        await asyncio.gather(*waiters)
        gate.release()
        assert (gate.in_flight, gate.queued) == (0, 0)

    run(main)


def test_a_full_queue_makes_room_for_a_higher_priority() -> None:
    async def main() -> None:
        gate = Gate(1, 2)
        await gate.acquire(0, deadline())
        low = [asyncio.create_task(gate.acquire(0, deadline())) for _ in range(2)]
        await settle()
        high = asyncio.create_task(gate.acquire(5, deadline()))
        await settle()
        assert low[1].done() and isinstance(low[1].exception(), Overloaded)  # the newest low one
        assert not low[0].done() and gate.queued == 2 and gate.stats.rejected == 1
        with pytest.raises(Overloaded, match="queue is full"):  # an equal priority does not evict
            at_once(gate.acquire(0, deadline()))
        gate.release()
        await settle()
        assert high.done() and not low[0].done()  # the high one is served before the older low one
        gate.release()
        await low[0]
        gate.release()
        assert (gate.in_flight, gate.queued) == (0, 0)

    run(main)


def test_a_deadline_too_short_for_the_expected_wait_is_refused_at_once() -> None:
    async def main() -> None:
        gate = Gate(1, 10)
        await learn_hold(gate, 0.05)
        await gate.acquire(0, deadline())
        waiters = [asyncio.create_task(gate.acquire(0, deadline())) for _ in range(2)]
        await settle()
        with pytest.raises(Overloaded) as refused:
            at_once(gate.acquire(0, deadline(0.02)))
        assert refused.value.retry_after >= 3 * 0.05  # third in line, one slot
        assert int(refused.value.headers()["retry-after"]) >= 1
        assert "expected wait" in refused.value.message
        assert (gate.in_flight, gate.queued, gate.stats.rejected) == (1, 2, 1)
        with pytest.raises(Overloaded, match="already passed"):
            at_once(gate.acquire(9, deadline(-1)))
        early = gate.expected_wait(9)
        assert early is not None and early < refused.value.retry_after  # a high priority goes first
        for task in waiters:
            task.cancel()
        gate.release()
        await asyncio.gather(*waiters, return_exceptions=True)
        assert (gate.in_flight, gate.queued) == (0, 0)

    run(main)


def test_a_waiter_pushed_back_past_its_deadline_is_refused_then() -> None:
    async def main() -> None:
        gate = Gate(1, 10)
        await learn_hold(gate, 0.05)
        await gate.acquire(0, deadline())
        low = asyncio.create_task(gate.acquire(0, deadline(0.12)))  # first in line: fits
        await settle()
        assert not low.done()
        highs = [asyncio.create_task(gate.acquire(9, deadline())) for _ in range(2)]
        await settle()  # now third in line: at least 0.15 s expected, 0.12 s left
        assert low.done() and isinstance(low.exception(), Overloaded)
        assert "pushed it back" in str(low.exception())
        assert gate.queued == 2 and gate.in_flight == 1
        for task in highs:
            task.cancel()
        gate.release()
        await asyncio.gather(*highs, return_exceptions=True)
        assert (gate.in_flight, gate.queued) == (0, 0)

    run(main)


def test_a_waiter_whose_deadline_passes_in_the_queue_is_refused() -> None:
    async def main() -> None:
        gate = Gate(1, 10)
        await gate.acquire(0, deadline())  # no hold time known: the waiter is queued, not refused
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(Overloaded, match="before the deadline"):
            await gate.acquire(0, deadline(0.05))
        assert loop.time() - started >= 0.05
        assert (gate.in_flight, gate.queued, gate.stats.rejected) == (1, 0, 1)
        gate.release()
        assert gate.in_flight == 0

    run(main)


def test_a_waiter_cancelled_as_it_is_handed_the_slot_passes_it_on() -> None:
    async def main() -> None:
        gate = Gate(1, 5)
        await gate.acquire(0, deadline())
        first = asyncio.create_task(gate.acquire(1, deadline()))
        second = asyncio.create_task(gate.acquire(0, deadline()))
        await settle()
        gate.release()  # hands the slot to `first`...
        first.cancel()  # ...which is cancelled before it can resume
        await settle()
        assert first.cancelled()
        assert second.done() and gate.in_flight == 1 and gate.queued == 0
        queued = asyncio.create_task(gate.acquire(0, deadline()))
        await settle()
        queued.cancel()  # cancelled while still waiting: it just leaves the queue
        await settle()
        assert (gate.in_flight, gate.queued) == (1, 0)
        gate.release()
        assert (gate.in_flight, gate.queued) == (0, 0)

    run(main)


def test_random_cancellations_never_leak_a_slot() -> None:
    async def main() -> None:
        gate = Gate(4, 1000)
        rng = random.Random(7)
        loop = asyncio.get_running_loop()
        peak = 0

        async def call() -> None:
            nonlocal peak
            try:
                await gate.acquire(rng.randint(0, 4), deadline(rng.choice([0.002, 0.02, FAR])))
            except Overloaded:
                return
            try:
                peak = max(peak, gate.in_flight)
                await asyncio.sleep(rng.uniform(0, 0.001))
            finally:
                gate.release()

        tasks = []
        for _ in range(500):
            task = asyncio.create_task(call())
            if rng.random() < 0.4:
                loop.call_later(rng.uniform(0, 0.02), task.cancel)
            tasks.append(task)
            if rng.random() < 0.2:
                await asyncio.sleep(0)
        await asyncio.gather(*tasks, return_exceptions=True)
        assert peak <= 4
        assert (gate.in_flight, gate.queued) == (0, 0)
        assert at_once(gate.acquire(0, deadline())) == 0.0  # nothing stale blocks a newcomer
        gate.release()

    run(main)


def test_stats_and_views() -> None:
    async def main() -> None:
        gate = Gate(1, 1, target="a/m")
        await gate.acquire(0, deadline())
        waiter = asyncio.create_task(gate.acquire(0, deadline()))
        await settle()
        with pytest.raises(Overloaded):
            at_once(gate.acquire(0, deadline()))
        await asyncio.sleep(0.02)
        gate.release()
        waited = await waiter
        assert waited >= 0.02
        gate.release()
        s = gate.stats
        assert (s.admitted, s.waited, s.rejected) == (2, 1, 1)
        assert s.total_wait_s == s.max_wait_s == s.avg_wait_s == waited
        row = gate.view()
        assert row["avg_wait_ms"] == row["max_wait_ms"] == round(waited * 1000, 3)
        assert {k: row[k] for k in ("target", "limit", "in_flight", "queued", "waited", "rejected")} == {
            "target": "a/m",
            "limit": 1,
            "in_flight": 0,
            "queued": 0,
            "waited": 1,
            "rejected": 1,
        }

    run(main)
    gates = Gates({"z/m": (2, 4), "a/m": (1, 0)})
    assert gates.get("unknown/m") is None
    gate = gates.get("z/m")
    assert gate is not None and (gate.limit, gate.queue_limit, gate.target) == (2, 4, "z/m")
    assert [row["target"] for row in gates.view()] == ["a/m", "z/m"]
    with pytest.raises(ValueError, match="limit >= 1"):
        Gate(0, 1)


def test_release_without_acquire_is_an_error() -> None:
    async def main() -> None:
        with pytest.raises(RuntimeError, match="without a matching acquire"):
            Gate(1, 1).release()

    run(main)
