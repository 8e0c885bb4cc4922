"""In-process backends for one gateway process: circuit breakers."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from keel.store.protocols import BreakerPolicy, BreakerState


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

    async def allow(self, target: str, now: float) -> bool:
        b = self._by_target.get(target)
        if b is None or b.state == "closed":
            return True
        cooldown = self._policy.cooldown_s
        if b.state == "open":
            if b.opened_at is not None and now - b.opened_at < cooldown:
                return False
            b.state, b.probe_at = "half_open", now
            return True
        # half-open: one probe at a time; a probe that never reported frees its slot after a cooldown
        if b.probe_at is not None and now - b.probe_at < cooldown:
            return False
        b.probe_at = now
        return True

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

    async def states(self) -> list[BreakerState]:
        return [
            BreakerState(t, b.state, b.consecutive, len(b.recent), sum(b.recent), b.opened_at)
            for t, b in sorted(self._by_target.items())
        ]

    async def aclose(self) -> None:
        return None
