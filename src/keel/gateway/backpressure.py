"""Backpressure: a per-target concurrency cap with a bounded wait queue ordered by priority.

A `Gate` lets at most `limit` calls hold its target at once. The rest wait in a queue of at most
`queue_limit`, served by priority (higher first), FIFO within a priority. A call that cannot start
before its deadline is refused at once with `Overloaded` (429 + Retry-After) rather than piling up:
when the deadline has passed, when the expected wait (moving average of slot hold time × place in
line / limit) exceeds the time left, or when the queue is full. A full queue makes room for a
newcomer of higher priority by refusing its lowest-priority, newest waiter, and a waiter that
newcomers push back past its deadline is refused then, not when the deadline comes: under
saturation low priorities are turned away first, and fast. Retry-After is the expected wait.

In process, pure asyncio: a cap holds per gateway process (N processes admit up to N × limit).

Invariants: in_flight <= limit; while anyone waits, every slot is held (a released slot passes
straight to the best waiter, so newcomers cannot barge past the queue); a waiter cancelled just as
it is handed a slot passes the slot on, so none leaks.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum

from keel.errors import Overloaded

ALPHA = 0.2  # weight of the newest hold-time sample in the moving average
UNKNOWN_WAIT_S = 1.0  # Retry-After before any slot has been released (no hold time known)


@dataclass(slots=True)
class GateStats:
    admitted: int = 0  # calls given a slot, at once or after queueing
    waited: int = 0  # of those, the ones that queued first
    total_wait_s: float = 0.0
    max_wait_s: float = 0.0
    rejected: int = 0

    @property
    def avg_wait_s(self) -> float:
        return self.total_wait_s / self.waited if self.waited else 0.0


class _State(Enum):
    waiting = "waiting"
    handed = "handed"  # given a slot: it owns it now
    gone = "gone"  # cancelled, timed out or evicted: owns nothing


@dataclass(order=True, slots=True)
class _Waiter:
    rank: int  # -priority: heapq is a min-heap
    seq: int  # FIFO within a priority
    future: asyncio.Future[None] = field(compare=False)
    deadline: float = field(compare=False)
    state: _State = field(default=_State.waiting, compare=False)

    @property
    def live(self) -> bool:
        return self.state is _State.waiting and not self.future.done()


class Gate:
    """One target's slots. Pair every successful `acquire` with one `release`."""

    def __init__(self, limit: int, queue_limit: int, *, target: str = "") -> None:
        if limit < 1 or queue_limit < 0:
            raise ValueError(f"a gate needs limit >= 1 and queue_limit >= 0, not {limit} and {queue_limit}")
        self.limit = limit
        self.queue_limit = queue_limit
        self.target = target
        self.stats = GateStats()
        self._queued = 0  # live waiters; the heap may also hold gone ones until they are popped
        self._heap: list[_Waiter] = []
        self._seq = itertools.count()
        # Start times of the held slots, oldest first. `release()` does not say which call ended, so
        # hold time is measured from the oldest start: each sample is approximate, their sum is exact.
        self._starts: deque[float] = deque()
        self._hold_s: float | None = None

    @property
    def in_flight(self) -> int:
        return len(self._starts)

    @property
    def queued(self) -> int:
        return self._queued

    async def acquire(self, priority: int, deadline: float) -> float:
        """Take a slot; return the seconds waited. Raise Overloaded if none can be had by `deadline`.

        `deadline` is in event-loop time. A free slot is granted even past the deadline: only waiting
        is refused (the invoker enforces the deadline on the call itself).
        """
        loop = asyncio.get_running_loop()
        now = loop.time()
        if self.in_flight < self.limit and not self._queued:
            self._starts.append(now)
            self.stats.admitted += 1
            return 0.0
        waiter = self._enqueue(loop, priority, deadline, now)
        try:
            async with asyncio.timeout_at(deadline):
                await waiter.future
        except TimeoutError:
            self._abandon(waiter)
            raise self._refuse("no slot came free before the deadline", priority) from None
        except BaseException:  # cancelled, or evicted by a higher priority (Overloaded)
            self._abandon(waiter)
            raise
        waited = loop.time() - now
        self._record_wait(waited)
        return waited

    def release(self) -> None:
        """Free a slot: hand it to the best live waiter, or return it to the pool."""
        if not self._starts:
            raise RuntimeError("Gate.release() without a matching acquire()")
        now = asyncio.get_running_loop().time()
        self._observe_hold(now - self._starts.popleft())
        waiter = self._pop_live()
        if waiter is None:
            return
        waiter.state = _State.handed
        self._queued -= 1
        waiter.future.set_result(None)
        self._starts.append(now)

    def expected_wait(self, priority: int) -> float | None:
        """Seconds a newcomer of this priority would wait; None until a hold time is known."""
        if self._hold_s is None:
            return None
        ahead = sum(1 for w in self._heap if w.live and -w.rank >= priority)
        return self._hold_s * (ahead + 1) / self.limit

    def view(self) -> dict[str, object]:
        s = self.stats
        return {
            "target": self.target,
            "limit": self.limit,
            "queue_limit": self.queue_limit,
            "in_flight": self.in_flight,
            "queued": self.queued,
            "admitted": s.admitted,
            "waited": s.waited,
            "avg_wait_ms": round(s.avg_wait_s * 1000, 3),
            "max_wait_ms": round(s.max_wait_s * 1000, 3),
            "rejected": s.rejected,
        }

    def _enqueue(self, loop: asyncio.AbstractEventLoop, priority: int, deadline: float, now: float) -> _Waiter:
        """Queue a waiter, or raise Overloaded at once if it is already clear it cannot make it."""
        self._prune()
        expected = self.expected_wait(priority)
        left = deadline - now
        if left <= 0:
            raise self._refuse("the deadline has already passed", priority)
        if expected is not None and expected > left:
            raise self._refuse(f"the expected wait of {expected:.3f}s exceeds the {left:.3f}s left", priority)
        if self._queued >= self.queue_limit and not self._evict_below(priority):
            raise self._refuse(f"the wait queue is full ({self.queue_limit})", priority)
        waiter = _Waiter(-priority, next(self._seq), loop.create_future(), deadline)
        heapq.heappush(self._heap, waiter)
        self._queued += 1
        self._shed(now)
        return waiter

    def _evict_below(self, priority: int) -> bool:
        """Refuse the lowest-priority, newest waiter if it ranks below `priority`; True if one went."""
        worst = max((w for w in self._heap if w.live), default=None)
        if worst is None or -worst.rank >= priority:
            return False
        self._evict(worst, "a higher-priority call took its place in the full wait queue")
        return True

    def _shed(self, now: float) -> None:
        """Refuse the waiters whose expected wait, at their place in line, now outlasts their deadline."""
        if self._hold_s is None:
            return
        line = sorted(w for w in self._heap if w.live)
        for place, waiter in enumerate(line, 1):
            if self._hold_s * place / self.limit > waiter.deadline - now:
                self._evict(waiter, "higher-priority calls pushed it back past its deadline")

    def _evict(self, waiter: _Waiter, reason: str) -> None:
        self._drop(waiter)
        waiter.future.set_exception(self._refuse(reason, -waiter.rank))

    def _abandon(self, waiter: _Waiter) -> None:
        """The waiter leaves without using a slot: pass on one it was handed, or leave the queue."""
        if waiter.state is _State.handed:
            self.release()
        elif waiter.state is _State.waiting:
            self._drop(waiter)
            waiter.future.cancel()
        elif waiter.future.done() and not waiter.future.cancelled():
            waiter.future.exception()  # evicted, then cancelled before it could see why: mark seen

    def _pop_live(self) -> _Waiter | None:
        """The best waiter still waiting; skips the gone and counts out the cancelled."""
        while self._heap:
            waiter = heapq.heappop(self._heap)
            if waiter.live:
                return waiter
            if waiter.state is _State.waiting:  # cancelled; its task has not run its cleanup yet
                self._drop(waiter)
        return None

    def _drop(self, waiter: _Waiter) -> None:
        waiter.state = _State.gone
        self._queued -= 1

    def _prune(self) -> None:
        """Count out waiters cancelled but not yet cleaned up, and rebuild the heap without the gone."""
        for w in self._heap:
            if w.state is _State.waiting and w.future.done():
                self._drop(w)
        self._heap = [w for w in self._heap if w.state is _State.waiting]
        heapq.heapify(self._heap)

    def _refuse(self, reason: str, priority: int) -> Overloaded:
        self.stats.rejected += 1
        wait = self.expected_wait(priority)
        retry = UNKNOWN_WAIT_S if wait is None else wait
        name = f"Target '{self.target}'" if self.target else "The target"
        message = (
            f"{name} is saturated ({self.in_flight} calls in flight, {self._queued} queued): {reason}. "
            f"Retry after {retry:.1f}s, or send the call with a higher priority."
        )
        return Overloaded(message, retry, self.target)

    def _record_wait(self, waited: float) -> None:
        s = self.stats
        s.admitted += 1
        s.waited += 1
        s.total_wait_s += waited
        s.max_wait_s = max(s.max_wait_s, waited)

    def _observe_hold(self, held: float) -> None:
        self._hold_s = held if self._hold_s is None else self._hold_s + ALPHA * (held - self._hold_s)


class Gates:
    """The gates of the capped targets, by target key. Targets without a cap have no gate."""

    def __init__(self, caps: Mapping[str, tuple[int, int]]) -> None:
        self._by_target = {key: Gate(limit, queue, target=key) for key, (limit, queue) in caps.items()}

    def get(self, target_key: str) -> Gate | None:
        return self._by_target.get(target_key)

    def view(self) -> list[dict[str, object]]:
        return [self._by_target[key].view() for key in sorted(self._by_target)]
