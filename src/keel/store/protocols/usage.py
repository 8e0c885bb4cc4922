"""Usage read from rollups: the query and its rows (`TraceStore.usage`)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

# Latency histogram: bucket 0 is [0, 1 ms); bucket i in 1..34 is [2^((i-1)/2), 2^(i/2)) ms, each √2
# wide; bucket 35 is 2^17 ms (131 s) and above. A percentile is exact to within its bucket's width.
HIST = 36


@dataclass(frozen=True, slots=True)
class UsageQuery:
    """Usage from rollups over a bounded window, grouped by one dimension.

    `by`: tenant, key, user, feature, alias, provider, model, prompt_version, status, session, or all (one row).
    Totals (`grain` None) cover [since, until) widened to whole minutes; a series covers it widened
    to whole `grain` buckets. Sessions are whole sessions seen in the window (first/last seen).
    """

    since: float
    until: float
    by: str = "tenant"
    grain: str | None = None  # minute | hour | day: one row per bucket and group
    tenant: str | None = None
    limit: int = 100  # totals: the most groups returned, costliest first


@dataclass(frozen=True, slots=True)
class UsageRow:
    group: str | None  # the value of the `by` dimension; None when calls had none
    bucket: int | None  # a series' bucket start (unix seconds, UTC); None for totals
    calls: int
    errors: int  # status error or partial
    input_tokens: int
    cached_input_tokens: int
    cache_write_tokens: int
    output_tokens: int
    reasoning_tokens: int
    cost_usd: float
    latency_avg_ms: float | None
    latency_p50_ms: float | None  # from the histogram: within one bucket's width (x√2)
    latency_p95_ms: float | None
    ttft_avg_ms: float | None
    cache_lookups: int  # calls eligible for the cache
    cache_hits: int  # served from it: exact, semantic or stale
    cache_saved_usd: float
    fallbacks: int  # served by anything but the primary target
    latency_hist: tuple[int, ...] = ()  # calls per latency bucket (HIST of them; see hist_bounds)
    first_seen: float | None = None  # sessions only
    last_seen: float | None = None


def hist_bucket(ms: float) -> int:
    if ms < 1.0:
        return 0
    return min(HIST - 1, int(2.0 * math.log2(ms)) + 1)


def hist_bounds(i: int) -> tuple[float, float]:
    """[low, high) in ms of histogram bucket i; the last bucket's high is its low times √2."""
    low = 0.0 if i == 0 else 2.0 ** ((i - 1) / 2)
    return low, 2.0 ** (i / 2)


def percentile(hist: Sequence[int], q: float) -> float | None:
    """The q-quantile from bucket counts, interpolated linearly inside its bucket."""
    total = sum(hist)
    if not total:
        return None
    rank = q * total
    seen = 0
    for i, n in enumerate(hist):
        if n and seen + n >= rank:
            low, high = hist_bounds(i)
            return low + (high - low) * (rank - seen) / n
        seen += n
    return hist_bounds(len(hist) - 1)[1]  # unreachable: rank <= total


def count_over(hist: Sequence[int], ms: float) -> float:
    """The calls slower than `ms`, interpolated linearly inside the bucket that holds `ms`."""
    over = 0.0
    for i, n in enumerate(hist):
        low, high = hist_bounds(i)
        if low >= ms:
            over += n
        elif high > ms and n:
            over += n * (high - ms) / (high - low)
    return over
