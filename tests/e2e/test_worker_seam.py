"""The background work seam (runtime/workers.py): supervised workers, restarts with backoff, health.

Unit tests drive the supervisor with a fake clock (its `sleep` waits for the test to advance it),
so no test waits on time; the end-to-end test shows /readyz and /metrics name a failing worker
added by a capability builder, and clear it when the worker runs again.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx

from keel.gateway.capability import Context, Contribution, Worker
from keel.runtime.workers import Workers
from keel.testing import FakeUpstream
from tests.conftest import Gateway, base_config, until


class FakeClock:
    """`sleep` reports each wait and returns only when the test calls `advance`."""

    def __init__(self) -> None:
        self.waits: asyncio.Queue[float] = asyncio.Queue()
        self._go: asyncio.Queue[None] = asyncio.Queue()
        self.now = 1000.0

    async def sleep(self, seconds: float) -> None:
        await self.waits.put(seconds)
        await self._go.get()

    def time(self) -> float:
        return self.now

    async def advance(self) -> float:
        """Let the sleeping worker go on; the length of its next sleep."""
        self._go.put_nowait(None)
        return await self.waits.get()


def test_a_failing_periodic_worker_restarts_with_backoff_and_says_so_until_it_runs() -> None:
    async def scenario() -> None:
        clock = FakeClock()
        failures = 3
        runs = 0

        async def body() -> None:
            nonlocal runs
            runs += 1
            if runs <= failures:
                raise RuntimeError("flaky")

        workers = Workers([Worker("sweep", body, every_s=30.0, first_s=5.0)], sleep=clock.sleep, clock=clock.time)
        workers.start()
        assert await clock.waits.get() == 5.0  # the first pass after first_s
        assert workers.health() == {"sweep": None}
        assert await clock.advance() == 1.0  # failed: restart after 1 s, then 2 s, 4 s ...
        state = workers.states["sweep"]
        assert workers.health() == {"sweep": "crashed (RuntimeError); restarting in 1 s"}
        assert (state.restarts, state.last_error_at) == (1, 1000.0)
        assert await clock.advance() == 2.0
        assert await clock.advance() == 4.0
        assert workers.health()["sweep"] == "crashed (RuntimeError); restarting in 4 s"
        assert await clock.advance() == 30.0  # it ran: back on its interval, healthy
        assert workers.health() == {"sweep": None}
        assert (state.restarts, state.passes, runs) == (3, 1, 4)
        await workers.stop()

    asyncio.run(scenario())


def test_the_backoff_stops_growing_at_its_maximum() -> None:
    async def scenario() -> None:
        clock = FakeClock()

        async def body() -> None:
            raise ValueError("always")

        workers = Workers([Worker("w", body, every_s=1.0)], sleep=clock.sleep, backoff_s=1.0, backoff_max_s=5.0)
        workers.start()
        await clock.waits.get()
        assert [await clock.advance() for _ in range(5)] == [1.0, 2.0, 4.0, 5.0, 5.0]
        await workers.stop()

    asyncio.run(scenario())


def test_a_loop_worker_that_crashes_is_restarted_and_healthy_once_it_runs_again() -> None:
    async def scenario() -> None:
        clock = FakeClock()
        running = asyncio.Event()
        starts = 0

        async def loop() -> None:
            nonlocal starts
            starts += 1
            if starts == 1:
                raise KeyError("bug")
            running.set()
            await asyncio.Event().wait()  # runs until cancelled

        workers = Workers([Worker("consumer", loop)], sleep=clock.sleep)
        workers.start()
        assert await clock.waits.get() == 1.0  # a loop starts at once; it crashed: restart after 1 s
        assert workers.health() == {"consumer": "crashed (KeyError); restarting in 1 s"}
        clock._go.put_nowait(None)
        await running.wait()
        assert workers.health() == {"consumer": None}
        assert workers.states["consumer"].restarts == 1
        await workers.stop()

    asyncio.run(scenario())


def test_workers_start_in_order_and_stop_in_reverse() -> None:
    async def scenario() -> None:
        events: list[str] = []
        started = asyncio.Event()

        def loop(name: str) -> Worker:
            async def run() -> None:
                events.append(f"start {name}")
                if len(events) == 3:
                    started.set()
                try:
                    await asyncio.Event().wait()
                finally:
                    events.append(f"stop {name}")

            return Worker(name, run)

        workers = Workers([loop("a"), loop("b"), loop("c")])
        workers.start()
        await started.wait()
        await workers.stop()
        assert events == ["start a", "start b", "start c", "stop c", "stop b", "stop a"]

    asyncio.run(scenario())


def test_worker_names_are_unique() -> None:
    async def noop() -> None:
        return None

    try:
        Workers([Worker("x", noop), Worker("x", noop)])
    except ValueError as exc:
        assert "unique" in str(exc)
    else:
        raise AssertionError("duplicate names were accepted")


# ---- over HTTP -------------------------------------------------------------------------------------


class Probe:
    """A test capability's periodic worker that fails while `broken`."""

    def __init__(self) -> None:
        self.broken = True

    async def run(self) -> None:
        if self.broken:
            raise RuntimeError("probe is broken")


def probe_capability(ctx: Context) -> Contribution:
    probe = Probe()
    ctx.add(probe)
    return Contribution(workers=[Worker("probe", probe.run, every_s=0.05)])


def test_readyz_and_metrics_name_a_failing_worker_until_it_runs_again(
    make_gateway: Any, up: FakeUpstream, tmp_path: Path
) -> None:
    gw: Gateway = make_gateway(base_config(up, f"sqlite:///{tmp_path}/keel.db", tmp_path), extra=[probe_capability])

    def worker(name: str) -> str:
        return str(httpx.get(gw.url + "/readyz").json()["workers"][name])

    assert until(lambda: worker("probe").startswith("crashed (RuntimeError); restarting in"))
    ready = httpx.get(gw.url + "/readyz")
    assert ready.status_code == 200  # a worker's trouble is reported, it does not take the process out
    assert ready.json()["workers"]["revocations"] == "ok"
    metrics = httpx.get(gw.url + "/metrics").text
    assert 'keel_worker_up{worker="probe"} 0' in metrics
    assert 'keel_worker_up{worker="revocations"} 1' in metrics

    gw.runtime.get(Probe).broken = False
    assert until(lambda: worker("probe") == "ok")
    metrics = httpx.get(gw.url + "/metrics").text
    assert 'keel_worker_up{worker="probe"} 1' in metrics
    assert 'keel_worker_restarts_total{worker="probe"} 0' not in metrics
