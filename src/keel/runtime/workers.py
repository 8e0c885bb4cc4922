"""The background work seam: every `Worker` the capabilities contribute runs here, supervised.

`Workers.start()` starts them in the order given (the builders' order), one asyncio task each;
`stop()` cancels them in reverse and waits for each. A worker is a name, an async body and an
interval (`keel.gateway.capability.Worker`): a periodic body runs one pass per interval; a body
without one is a loop. Whatever escapes a body (an exception, never a cancellation) is logged and
the body runs again after a backoff — 1 s, doubling to 60 s while it keeps failing —; meanwhile
`health()` names it, for /readyz and /metrics. `sleep` and `clock` are injectable (tests).

The jobs issue plugs in here: a queue consumer is a loop worker; a sweep is a periodic one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from keel.gateway.capability import Worker

log = logging.getLogger("keel.workers")
BACKOFF_S = 1.0
BACKOFF_MAX_S = 60.0


@dataclass(slots=True)
class WorkerState:
    """One worker's health: None while fine; else why it is not running (until it runs again)."""

    failing: str | None = None
    restarts: int = 0  # times its body raised and was started again
    passes: int = 0  # completed passes (periodic workers)
    last_error_at: float | None = None  # wall clock
    done: bool = False  # a loop that returned: it has nothing more to do


class Workers:
    def __init__(
        self,
        workers: Sequence[Worker],
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.time,
        backoff_s: float = BACKOFF_S,
        backoff_max_s: float = BACKOFF_MAX_S,
    ) -> None:
        names = [w.name for w in workers]
        if len(set(names)) != len(names):
            raise ValueError(f"worker names must be unique: {names}")
        self._workers = tuple(workers)
        self._sleep = sleep
        self._clock = clock
        self._backoff = (backoff_s, backoff_max_s)
        self.states = {w.name: WorkerState() for w in workers}
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(w.name for w in self._workers)

    def start(self) -> None:
        for worker in self._workers:
            self._tasks.append(asyncio.create_task(self._supervise(worker), name=f"keel-{worker.name}"))

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in reversed(tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def health(self) -> dict[str, str | None]:
        """Each worker's trouble (None: fine), in start order."""
        return {name: state.failing for name, state in self.states.items()}

    async def _supervise(self, worker: Worker) -> None:
        state = self.states[worker.name]
        every = worker.every_s
        delay = (worker.first_s if worker.first_s is not None else every) or 0.0
        failures = 0
        while True:
            if delay > 0:
                await self._sleep(delay)
            if every is None:
                state.failing = None  # a loop (re)starts: fine until it raises again
            try:
                await worker.run()
            except Exception as exc:
                failures += 1
                delay = min(self._backoff[1], self._backoff[0] * 2 ** (failures - 1))
                state.failing = f"crashed ({type(exc).__name__}); restarting in {delay:g} s"
                state.restarts += 1
                state.last_error_at = self._clock()
                log.error("worker %s failed; restarting in %g s", worker.name, delay, exc_info=exc)
                continue
            failures = 0
            if every is None:
                state.done = True
                return
            state.failing = None
            state.passes += 1
            delay = every
