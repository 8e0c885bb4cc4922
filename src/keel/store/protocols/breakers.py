"""Circuit breakers per target: the policy, the state and the store."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Protocol


@dataclass(frozen=True, slots=True)
class BreakerPolicy:
    failures: int = 5  # consecutive failures that open the breaker
    error_rate: float = 0.5  # or this share of failures among the last `window` calls...
    window: int = 20
    min_calls: int = 10  # ...once at least this many were seen
    cooldown_s: float = 30.0  # open → half-open (one probe) after this long


@dataclass(frozen=True, slots=True)
class BreakerState:
    target: str
    state: str  # closed | open | half_open
    consecutive_failures: int
    recent_calls: int
    recent_failures: int
    opened_at: float | None


class Permit(IntEnum):
    """A breaker's answer to `allow`; false only when the call may not go."""

    refused = 0
    probe = 1  # half-open: this call is the one probe, so it gets one attempt, not the retries
    closed = 2


class BreakerStore(Protocol):
    """Circuit breakers per target: closed → open → half-open (one probe) → closed.

    Async because the shared backend is one Redis round trip per call; the memory backend serves
    one process. Both implement the same state machine and pass one contract suite.
    """

    async def allow(self, target: str, now: float) -> Permit:
        """May a call go to `target` now? In half-open, `probe` for exactly one call at a time."""
        ...

    async def record(self, target: str, ok: bool, now: float) -> str:
        """Record an outcome; return the state after it."""
        ...

    async def record_many(self, outcomes: Sequence[tuple[str, bool, float]]) -> list[str]:
        """Record (target, ok, now) outcomes in order, as `record` each; in one round trip where shared."""
        ...

    async def states(self) -> list[BreakerState]: ...

    async def aclose(self) -> None: ...
