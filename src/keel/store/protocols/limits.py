"""Limits: shared counters (rate limits, quotas, budgets, concurrency) and per-tenant overrides."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol


@dataclass(frozen=True, slots=True)
class LimitOverride:
    """Limits set for one tenant or key, replacing the configured defaults kind by kind."""

    scope: str  # "tenant" | "key"
    subject: str  # the tenant name or the key id
    limits: dict[str, float]  # kind (rpm, usd_month, ...) → limit
    on_store_error: str | None  # tenants only: "open" | "closed" when Redis is unreachable; None = the default
    updated_at: float


Window = Literal["minute", "day", "month", "total", "concurrent"]


@dataclass(frozen=True, slots=True)
class Charge:
    """What one call asks of one counter: e.g. 1 request of tenant=acme's rpm, or $0.02 of its usd_month."""

    counter: str  # scope and kind, e.g. "tenant=acme|usd_month"
    window: Window  # minute: sliding 60 s; day/month: UTC calendar period; total: forever; concurrent: in flight
    limit: float
    amount: float


@dataclass(frozen=True, slots=True)
class Reservation:
    id: str  # also the concurrency lease id
    at: float  # when it was admitted (wall clock): settles adjust the buckets it was added to
    charges: tuple[Charge, ...]


@dataclass(frozen=True, slots=True)
class Admission:
    reservation: Reservation | None  # None: refused
    refused: int | None  # index of the first charge that did not fit
    retry_after: float | None  # seconds until it would fit; None if waiting cannot help (a total budget)
    used: tuple[float, ...]  # each counter's usage after admission (at refusal: before), for soft thresholds


class LimitStoreUnavailable(Exception):
    """The shared counter store cannot be reached: `reserve` (or `usage`) could not count this call.

    Raised quickly, never after a long wait. The limits stage applies the tenant's choice: serve
    uncounted (fail open) or refuse (fail closed). `settle` and `release` never raise it.
    """


class LimitStore(Protocol):
    """Counters for rate limits, quotas, budgets and concurrency. Admission is all or nothing.

    One atomic operation per call (one Lua script on Redis): either every charge fits under its
    limit and all are added, or none is. `settle` replaces each reserved amount with the actual one
    and ends concurrency leases; `release` undoes a reservation entirely (the call failed).
    Concurrency leases expire on their own after `lease_s`, so a crashed process leaks nothing.
    """

    async def reserve(self, charges: Sequence[Charge], now: float) -> Admission: ...

    async def settle(self, reservation: Reservation, actual: Sequence[float], now: float) -> None: ...

    def settle_at_once(self, reservation: Reservation, actual: Sequence[float], now: float) -> bool:
        """`settle`, done now if it needs no I/O (counters in this process): True. False: nothing done, await
        `settle`. Lets the caller of a settlement that needs no round trip skip scheduling a task for it."""
        ...

    async def release(self, reservation: Reservation, now: float) -> None: ...

    async def usage(self, counters: Sequence[tuple[str, Window]], now: float) -> list[float]: ...

    async def aclose(self) -> None: ...


class UnknownSubject(ValueError):
    """Limits were set for a tenant or key id that does not exist."""


class LimitConfigStore(Protocol):
    """Per-tenant and per-key limit overrides, and the ledger that sends each soft-limit alert once."""

    def set_limits(
        self, scope: str, subject: str, limits: Mapping[str, float], on_store_error: str | None
    ) -> LimitOverride:
        """Create or replace the override of a tenant (scope "tenant") or a key id (scope "key").

        Raise ValueError naming the problem: an unknown scope, kind or fail mode, a limit out of
        range, nothing to set, a fail mode on a key; UnknownSubject (a ValueError) if no such tenant or key.
        """
        ...

    def clear_limits(self, scope: str, subject: str) -> bool:
        """Remove an override; False if there was none."""
        ...

    def list_limits(self) -> list[LimitOverride]:
        """Every override, by scope then subject."""
        ...

    def claim_alert(self, counter: str, period: str, threshold: float, at: float) -> bool:
        """Record that an alert for this crossing is being sent. True only for the first claimer, across processes."""
        ...

    def flip_alert(self, key: str, firing: bool, at: float) -> bool:
        """Set an alert rule's state for one scope value (`key`); True only if this call changed it.

        Absent counts as not firing. Across processes, exactly one caller sees each change, so only it
        sends the webhook. Turning it on records `at` as the episode's start (`alert_states`).
        """
        ...

    def alert_states(self) -> dict[str, float]:
        """Every key currently firing → when its episode started."""
        ...
