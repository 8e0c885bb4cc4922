"""Per-target health seen by this process: moving averages of latency and time to first token, and
the recent error rate. Feeds least-latency routing and the `keel targets` view. In memory by
design: latency is a local observation, and a moving average needs no coordination.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

ALPHA = 0.2  # weight of the newest observation in the moving averages
WINDOW = 50  # outcomes kept for the recent error rate


@dataclass(slots=True)
class TargetHealth:
    target: str
    latency_ms: float | None = None
    ttft_ms: float | None = None
    calls: int = 0
    failures: int = 0
    recent: deque[bool] = field(default_factory=lambda: deque(maxlen=WINDOW))  # True = failure

    @property
    def error_rate(self) -> float:
        return sum(self.recent) / len(self.recent) if self.recent else 0.0

    def view(self) -> dict[str, object]:
        return {
            "target": self.target,
            "latency_ms": self.latency_ms,
            "ttft_ms": self.ttft_ms,
            "calls": self.calls,
            "failures": self.failures,
            "error_rate": round(self.error_rate, 4),
        }


class HealthBook:
    def __init__(self) -> None:
        self._by_target: dict[str, TargetHealth] = {}

    def observe(self, target: str, ok: bool, latency_s: float | None, ttft_s: float | None) -> None:
        h = self._by_target.get(target)
        if h is None:
            h = self._by_target[target] = TargetHealth(target)
        h.calls += 1
        h.failures += not ok
        h.recent.append(not ok)
        if ok and latency_s is not None:
            h.latency_ms = _ewma(h.latency_ms, latency_s * 1000)
        if ok and ttft_s is not None:
            h.ttft_ms = _ewma(h.ttft_ms, ttft_s * 1000)

    def get(self, target: str) -> TargetHealth | None:
        return self._by_target.get(target)

    def all(self) -> list[TargetHealth]:
        return [self._by_target[t] for t in sorted(self._by_target)]


def _ewma(old: float | None, new: float) -> float:
    return new if old is None else old + ALPHA * (new - old)
