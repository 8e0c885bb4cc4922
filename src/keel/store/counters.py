"""Counter arithmetic shared by every `LimitStore` backend: periods, minute buckets, retry times.

Pure functions, no I/O, so the memory and Redis backends agree to the second. Windows:
- minute: sliding, in 1-second buckets keyed by the whole second (`floor(now)`); usage is the sum of
  the buckets of the last 60 whole seconds, the current one included. Bucket `s` stops counting at
  `s + 60` exactly.
- day / month: UTC calendar periods, named by `period_id` ("d20261123", "m202611"); they reset at
  the UTC boundary.
- total: one period ("all") that never resets.
- concurrent: leases in flight; a reservation takes one lease whatever its amount.
A charge fits when `used + amount <= limit` (within `EPSILON`, so that sums of USD floats such as
0.1 + 0.2 meet a limit of 0.3).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import UTC, datetime
from functools import lru_cache

from keel.store.protocols import Charge, Window

MINUTE_S = 60  # buckets in the sliding minute
DAY_S = 86_400
EPSILON = 1e-9
CONCURRENT_RETRY_S = 1.0  # a lease ends when some call ends: no time can be known, so suggest a second


def fits(used: float, amount: float, limit: float) -> bool:
    return used + amount <= limit + EPSILON


def demand(charge: Charge) -> float:
    """What a charge adds to its counter: its amount, or one lease for a concurrent charge."""
    return 1.0 if charge.window == "concurrent" else charge.amount


def second(now: float) -> int:
    """The minute bucket `now` falls in."""
    return math.floor(now)


def live(bucket: int, now: float) -> bool:
    """Does `bucket` still count at `now`? (The last 60 whole seconds, the current one included.)"""
    return bucket > second(now) - MINUTE_S


def minute_usage(buckets: Iterable[tuple[int, float]], now: float) -> float:
    return sum(amount for s, amount in buckets if live(s, now))


def period_id(window: Window, now: float) -> str:
    """The calendar period `now` falls in: "d20261123", "m202611", "all"; "" for minute and concurrent."""
    if window == "day":
        return _day_id(int(now // DAY_S))
    if window == "month":
        return _month_id(int(now // DAY_S))
    if window == "total":
        return "all"
    return ""


def period_end(window: Window, now: float) -> float | None:
    """Seconds from `now` until its UTC day or month ends; None for windows without a calendar end."""
    if window == "day":
        return (now // DAY_S + 1) * DAY_S - now
    if window == "month":
        return _month_end(int(now // DAY_S)) - now
    return None


@lru_cache(maxsize=64)
def _day_id(day: int) -> str:
    return datetime.fromtimestamp(day * DAY_S, UTC).strftime("d%Y%m%d")


@lru_cache(maxsize=64)
def _month_id(day: int) -> str:
    return datetime.fromtimestamp(day * DAY_S, UTC).strftime("m%Y%m")


@lru_cache(maxsize=64)
def _month_end(day: int) -> float:
    """The epoch second at which the month holding `day` (days since the epoch) ends."""
    d = datetime.fromtimestamp(day * DAY_S, UTC)
    first_of_next = d.replace(year=d.year + d.month // 12, month=d.month % 12 + 1, day=1)
    return first_of_next.timestamp()


def retry_after(charge: Charge, now: float, buckets: Iterable[tuple[int, float]] = ()) -> float | None:
    """Seconds until a refused `charge` would fit, or None if waiting cannot help.

    minute: the smallest wait after which enough of `buckets` (the counter's (second, amount) pairs)
    have expired; day/month: until the period ends; total: None; concurrent: `CONCURRENT_RETRY_S`
    (when a lease ends is unknowable: the caller decides). None whenever the amount exceeds the limit
    by itself: it would not fit even on an empty counter.
    """
    if charge.window == "concurrent":
        return CONCURRENT_RETRY_S if charge.limit >= 1 else None
    if not fits(0.0, charge.amount, charge.limit):
        return None
    if charge.window == "minute":
        return _minute_retry_after(buckets, charge.amount, charge.limit, now)
    return period_end(charge.window, now)


def _minute_retry_after(buckets: Iterable[tuple[int, float]], amount: float, limit: float, now: float) -> float:
    """Expire the oldest live buckets one by one until the rest plus `amount` fits."""
    kept = sorted((s, a) for s, a in buckets if live(s, now))
    remaining = [0.0] * (len(kept) + 1)  # remaining[i]: usage once buckets before i have expired
    for i in range(len(kept) - 1, -1, -1):
        remaining[i] = remaining[i + 1] + kept[i][1]
    for i, (s, _) in enumerate(kept):
        if fits(remaining[i + 1], amount, limit):
            # s + 60 and now are close floats, so now + (s + 60 - now) == s + 60 exactly (Sterbenz)
            return s + MINUTE_S - now
    return 0.0  # nothing live holds it back
