"""Usage read from rollups: the query and its rows (`TraceStore.usage`)."""

from __future__ import annotations

from dataclasses import dataclass


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
    first_seen: float | None = None  # sessions only
    last_seen: float | None = None
