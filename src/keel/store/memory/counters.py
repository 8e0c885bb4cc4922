"""In-process backends for one gateway process: circuit breakers and limit counters.

No method awaits anything inside, so each call is atomic on the event loop: that is what makes
`MemoryLimits` admission all or nothing without a lock. One process only; see the Redis twins
(store/redis.py, store/redis_limits.py) for several.
"""

from __future__ import annotations

import secrets
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from keel.store.counters import MINUTE_S, demand, fits, live, period_id, retry_after, second
from keel.store.protocols import Admission, BreakerPolicy, BreakerState, Charge, Permit, Reservation, Window


@dataclass(slots=True)
class _Breaker:
    state: str = "closed"
    consecutive: int = 0
    recent: deque[bool] = field(default_factory=deque)  # True = failure
    opened_at: float | None = None
    probe_at: float | None = None  # when the half-open probe was let through


class MemoryBreakers:
    def __init__(self, policy: BreakerPolicy) -> None:
        self._policy = policy
        self._by_target: dict[str, _Breaker] = {}

    async def allow(self, target: str, now: float) -> Permit:
        b = self._by_target.get(target)
        if b is None or b.state == "closed":
            return Permit.closed
        cooldown = self._policy.cooldown_s
        if b.state == "open":
            if b.opened_at is not None and now - b.opened_at < cooldown:
                return Permit.refused
            b.state, b.probe_at = "half_open", now
            return Permit.probe
        # half-open: one probe at a time; a probe that never reported frees its slot after a cooldown
        if b.probe_at is not None and now - b.probe_at < cooldown:
            return Permit.refused
        b.probe_at = now
        return Permit.probe

    async def record(self, target: str, ok: bool, now: float) -> str:
        b = self._by_target.setdefault(target, _Breaker())
        p = self._policy
        if b.state == "half_open":
            if ok:
                self._by_target[target] = _Breaker()
                return "closed"
            b.state, b.opened_at, b.probe_at = "open", now, None
            return "open"
        if b.state == "open":
            return "open"  # a straggler from before the breaker opened
        b.recent.append(not ok)
        if len(b.recent) > p.window:
            b.recent.popleft()
        b.consecutive = 0 if ok else b.consecutive + 1
        failures = sum(b.recent)
        if b.consecutive >= p.failures or (len(b.recent) >= p.min_calls and failures / len(b.recent) >= p.error_rate):
            b.state, b.opened_at = "open", now
        return b.state

    async def record_many(self, outcomes: Sequence[tuple[str, bool, float]]) -> list[str]:
        return [await self.record(target, ok, now) for target, ok, now in outcomes]

    async def states(self) -> list[BreakerState]:
        return [
            BreakerState(t, b.state, b.consecutive, len(b.recent), sum(b.recent), b.opened_at)
            for t, b in sorted(self._by_target.items())
        ]

    async def aclose(self) -> None:
        return None


class MemoryLimits:
    """`LimitStore` in dicts, with the arithmetic of store/counters.py (shared with `RedisLimits`).

    Minute windows are {second: amount} per counter, pruned as they are read (at most 60 buckets
    live); day/month/total are {period id: value}, keeping the previous period beside the current one
    for settlements of calls that began in it; concurrency is {lease id: expiry}.
    """

    def __init__(self, lease_s: float = 900.0) -> None:
        self._lease_s = lease_s
        self._minutes: dict[str, dict[int, float]] = {}  # counter → {second: amount}
        self._periods: dict[tuple[str, Window], dict[str, float]] = {}
        self._leases: dict[str, dict[str, float]] = {}  # counter → {lease id: expiry}

    async def reserve(self, charges: Sequence[Charge], now: float) -> Admission:
        used = [self._used(c.counter, c.window, now) for c in charges]
        for i, (c, u) in enumerate(zip(charges, used, strict=True)):
            if not fits(u, demand(c), c.limit):
                buckets = self._minutes.get(c.counter, {}).items() if c.window == "minute" else ()
                return Admission(None, i, retry_after(c, now, buckets), tuple(used))
        reservation = Reservation(secrets.token_hex(8), now, tuple(charges))
        for c in charges:
            self._add(c, reservation.id, now)
        return Admission(reservation, None, None, tuple(u + demand(c) for c, u in zip(charges, used, strict=True)))

    async def settle(self, reservation: Reservation, actual: Sequence[float], now: float) -> None:
        self.settle_at_once(reservation, actual, now)

    def settle_at_once(self, reservation: Reservation, actual: Sequence[float], now: float) -> bool:
        for c, amount in zip(reservation.charges, actual, strict=True):
            self._adjust(c, amount - c.amount, reservation, now)
        return True

    async def release(self, reservation: Reservation, now: float) -> None:
        for c in reservation.charges:
            self._adjust(c, -c.amount, reservation, now)

    async def usage(self, counters: Sequence[tuple[str, Window]], now: float) -> list[float]:
        return [self._used(counter, window, now) for counter, window in counters]

    async def aclose(self) -> None:
        return None

    def _used(self, counter: str, window: Window, now: float) -> float:
        if window == "minute":
            buckets = self._minutes.get(counter)
            if not buckets:
                return 0.0
            cutoff = second(now) - MINUTE_S
            for s in [s for s in buckets if s <= cutoff]:
                del buckets[s]
            return sum(buckets.values())
        if window == "concurrent":
            leases = self._leases.get(counter)
            if not leases:
                return 0.0
            # leases are kept in admission order, which is expiry order: drop expired ones from the front
            # (were `now` to step back, a lease behind a later one would count a little longer: the safe side)
            while leases:
                oldest = next(iter(leases))
                if leases[oldest] >= now:
                    break
                del leases[oldest]
            return float(len(leases))
        return self._periods.get((counter, window), {}).get(period_id(window, now), 0.0)

    def _add(self, c: Charge, lease: str, now: float) -> None:
        if c.window == "minute":
            buckets = self._minutes.setdefault(c.counter, {})
            s = second(now)
            buckets[s] = buckets.get(s, 0.0) + c.amount
        elif c.window == "concurrent":
            self._leases.setdefault(c.counter, {})[lease] = now + self._lease_s
        else:
            periods = self._periods.setdefault((c.counter, c.window), {})
            pid = period_id(c.window, now)
            if pid not in periods:
                for old in sorted(periods)[:-1]:  # ids sort by time: keep the latest as the previous
                    del periods[old]
            periods[pid] = periods.get(pid, 0.0) + c.amount

    def _adjust(self, c: Charge, delta: float, reservation: Reservation, now: float) -> None:
        """Add `delta` where `c` was added at admission; end its lease. Counters never go below 0."""
        if c.window == "concurrent":
            self._leases.get(c.counter, {}).pop(reservation.id, None)
        elif c.window == "minute":
            s = second(reservation.at)
            if delta and live(s, now):
                buckets = self._minutes.setdefault(c.counter, {})
                value = buckets.get(s, 0.0) + delta
                if value > 0:
                    buckets[s] = value
                else:
                    buckets.pop(s, None)
        else:
            periods = self._periods.setdefault((c.counter, c.window), {})
            pid = period_id(c.window, reservation.at)
            if pid in periods or delta > 0:  # a reservation of nothing, settled late, starts its period
                periods[pid] = max(0.0, periods.get(pid, 0.0) + delta)
