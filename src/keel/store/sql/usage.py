"""Usage rollups shared by the SQL backends: what a batch of new traces adds, and how a query reads it.

The trace writer inserts a batch and, in the same transaction, adds only the rows actually inserted
(a re-sent batch adds nothing). Each batch is summed here first, so the database sees one upsert per
distinct rollup row, not one per trace. Rows are keyed (dim, bucket, tenant, value): a dimension
name, the UTC start of the minute/hour/day, the tenant, and the dimension's value ('' for none;
dim '*' holds the tenant's totals). One row per dimension value, not per combination of values, so a
query scans as many rows as the grouped dimension has values in the window, however many users,
models and features there are together (docs/decisions/0008-usage-rollups.md).
Queries read rollups only: totals over a window widened to whole minutes, read at the coarsest grain
that fits (days in the middle, hours and minutes at the edges); series at one grain. One bad row never
breaks a query: SQLite sums with TOTAL (a float; SUM raises on int64 overflow), and a count read back
is clamped to what JSON's 64-bit integers hold (rows written before numbers were made storable).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Sequence
from operator import attrgetter
from typing import Any

from keel.store.protocols import UsageQuery, UsageRow
from keel.store.protocols.usage import HIST, hist_bucket, percentile
from keel.store.sql.rows import storable_amount, storable_count
from keel.types import TraceRecord

GRAINS = {"minute": 60, "hour": 3600, "day": 86400}
# query name → (stored dim, TraceRecord attribute)
DIMS = {
    "tenant": ("*", None),
    "all": ("*", None),  # one group: everything in the window (the tenant totals, summed)
    "key": ("key", "key_id"),
    "user": ("user", "user"),
    "feature": ("feature", "feature"),
    "alias": ("alias", "alias"),
    "provider": ("provider", "provider"),
    "model": ("model", "model"),
    "prompt_version": ("prompt_version", "prompt_version"),
    "status": ("status", "status"),
}
_RECORD_DIMS = tuple((dim, attr) for dim, attr in DIMS.values() if attr is not None)
_DIM_NAMES = ("*", *(dim for dim, _ in _RECORD_DIMS))
_dim_values = attrgetter(*(attr for _, attr in _RECORD_DIMS))

SUMS = (
    "calls", "errors", "input_tokens", "cached_input_tokens", "cache_write_tokens", "output_tokens",
    "reasoning_tokens", "cost_usd", "latency_sum_ms", "latency_count", "ttft_sum_ms", "ttft_count",
    "cache_lookups", "cache_hits", "cache_saved_usd", "fallbacks",
)  # fmt: skip
HIST_COLUMNS = tuple(f"lat_{i:02d}" for i in range(HIST))
MEASURES = SUMS + HIST_COLUMNS
_H0 = len(SUMS)
_CACHE_HITS = frozenset({"hit", "semantic", "stale"})

Acc = list[Any]  # measures: ints, and floats for money and milliseconds
Key = tuple[Any, ...]


def _sparse(r: TraceRecord) -> list[tuple[int, float]]:
    """(measure index, amount) for what one trace adds, its numbers as its row stores them; zeros left out."""
    pairs: list[tuple[int, float]] = [(0, 1)]
    if r.status != "ok":
        pairs.append((1, 1))
    counts = (r.input_tokens, r.cached_input_tokens, r.cache_write_tokens, r.output_tokens, r.reasoning_tokens)
    for i, v in enumerate(counts, start=2):
        if v and (v := storable_count(v)):
            pairs.append((i, v))
    if r.cost_usd and (cost := storable_amount(r.cost_usd)):
        pairs.append((7, cost))
    if (latency := storable_amount(r.latency_ms)) is not None:
        pairs += [(8, latency), (9, 1), (_H0 + hist_bucket(latency), 1)]
    if (ttft := storable_amount(r.ttft_ms)) is not None:
        pairs += [(10, ttft), (11, 1)]
    if r.cache is not None:
        pairs.append((12, 1))
        if r.cache in _CACHE_HITS:
            pairs.append((13, 1))
    if r.cache_saved_usd and (saved := storable_amount(r.cache_saved_usd)):
        pairs.append((14, saved))
    if r.fallback not in (None, "primary"):
        pairs.append((15, 1))
    return pairs


def rollup(records: Iterable[TraceRecord]) -> tuple[dict[str, dict[Key, Acc]], dict[Key, Acc]]:
    """What `records` add: per grain, (dim, bucket, tenant, value) → measures; and per
    (tenant, session) → [first_seen, last_seen, *measures]. Hours and days are summed from the
    minutes, which costs little: a batch's calls mostly share a minute."""
    minute: dict[Key, Acc] = {}
    sessions: dict[Key, Acc] = {}
    width = len(MEASURES)
    get = minute.get
    for r in records:
        pairs = _sparse(r)
        tenant = r.tenant or ""
        bucket = int(r.started_at // 60) * 60
        for dim, value in zip(_DIM_NAMES, ("", *_dim_values(r)), strict=True):
            row = (dim, bucket, tenant, value or "")
            acc = get(row)
            if acc is None:
                acc = minute[row] = [0] * width
            for i, v in pairs:
                acc[i] += v
        if r.session:
            acc = sessions.get(key := (tenant, r.session))
            if acc is None:
                acc = sessions[key] = [r.started_at, r.started_at] + [0] * width
            acc[0], acc[1] = min(acc[0], r.started_at), max(acc[1], r.started_at)
            for i, v in pairs:
                acc[i + 2] += v
    grains = {"minute": minute, "hour": _coarsen(minute, GRAINS["hour"]), "day": _coarsen(minute, GRAINS["day"])}
    return grains, sessions


def _coarsen(rows: dict[Key, Acc], step: int) -> dict[Key, Acc]:
    out: dict[Key, Acc] = {}
    for (dim, bucket, tenant, value), acc in rows.items():
        key = (dim, bucket // step * step, tenant, value)
        prev = out.get(key)
        out[key] = acc if prev is None else [a + b for a, b in zip(prev, acc, strict=True)]  # never mutate `acc`
    return out


@functools.cache
def upsert_sql(table: str, keys: Sequence[str], mark: str, least: str, greatest: str) -> str:
    """INSERT … ON CONFLICT DO UPDATE adding every measure (sessions also widen first/last seen)."""
    extra = ("first_seen", "last_seen") if table == "usage_sessions" else ()
    cols = (*keys, *extra, *MEASURES)
    sets = [f"{m} = {table}.{m} + excluded.{m}" for m in MEASURES]
    if extra:
        sets = [
            f"first_seen = {least}({table}.first_seen, excluded.first_seen)",
            f"last_seen = {greatest}({table}.last_seen, excluded.last_seen)",
            *sets,
        ]
    return (
        f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join([mark] * len(cols))})"
        f" ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {', '.join(sets)}"
    )


def upserts(
    records: Iterable[TraceRecord], mark: str, least: str, greatest: str, *, ordered: bool
) -> list[tuple[str, list[tuple[Any, ...]]]]:
    """(statement, rows) to run for what `records` add. `ordered` sorts rows by key, so concurrent
    writers (PostgreSQL, several processes) lock rollup rows in one order and never deadlock."""
    grains, sessions = rollup(records)
    tables: list[tuple[str, tuple[str, ...], dict[Key, Acc]]]
    tables = [(f"usage_{g}", ("dim", "bucket", "tenant", "value"), rows) for g, rows in grains.items()]
    if sessions:
        tables.append(("usage_sessions", ("tenant", "session"), sessions))
    out = []
    for table, keys, rows in tables:
        items = sorted(rows.items()) if ordered else rows.items()
        out.append((upsert_sql(table, keys, mark, least, greatest), [(*k, *v) for k, v in items]))
    return out


# ---- reading ------------------------------------------------------------------------------------

Fetch = Callable[[str, Sequence[Any]], Iterable[Sequence[Any]]]


def _floor(t: float, step: int) -> int:
    return int(t // step) * step


def _ceil(t: float, step: int) -> int:
    return -int(-t // step) * step


def spans(since: float, until: float) -> list[tuple[str, int, int]]:
    """[since, until) widened to whole minutes, cut into (grain, start, end) pieces: whole days in
    the middle, whole hours beside them, minutes at the edges."""
    if since >= until:
        return []
    start, end = _floor(since, 60), _ceil(until, 60)
    for grain in ("day", "hour"):
        step = GRAINS[grain]
        lo, hi = _ceil(start, step), _floor(end, step)
        if lo < hi:
            return [*spans(start, lo), (grain, lo, hi), *spans(hi, end)]
    return [("minute", start, end)]


def _sums(measures: Sequence[str], total: str) -> str:
    return ", ".join(f"{total}({m})" for m in measures)


def _statements(
    q: UsageQuery, mark: str, total: str, measures: Sequence[str] = MEASURES, only: Sequence[str] | None = None
) -> list[tuple[str, list[Any]]]:
    """SELECT bucket, group, first_seen, last_seen, *total(measures) per piece of the window (`total`:
    the dialect's sum that cannot overflow); `only`: just these groups."""
    if q.by == "session":
        sql = (
            f"SELECT NULL, session, MIN(first_seen), MAX(last_seen), {_sums(measures, total)} FROM usage_sessions"
            f" WHERE last_seen >= {mark} AND first_seen < {mark}"
        )
        params: list[Any] = [q.since, q.until]
        if q.tenant is not None:
            sql += f" AND tenant = {mark}"
            params.append(q.tenant)
        return [(sql + " GROUP BY session", params)]
    dim = DIMS[q.by][0]
    group = "tenant" if q.by == "tenant" else "value"
    pieces = spans(q.since, q.until)
    if q.grain is not None:
        step = GRAINS[q.grain]
        pieces = [(q.grain, _floor(q.since, step), _ceil(q.until, step))]
    out = []
    for grain, lo, hi in pieces:
        bucket = "bucket" if q.grain else "NULL"
        sql = (
            f"SELECT {bucket}, {group}, NULL, NULL, {_sums(measures, total)} FROM usage_{grain}"
            f" WHERE dim = {mark} AND bucket >= {mark} AND bucket < {mark}"
        )
        params = [dim, lo, hi]
        if q.tenant is not None:
            sql += f" AND tenant = {mark}"
            params.append(q.tenant)
        if only is not None:
            sql += f" AND {group} IN ({', '.join([mark] * len(only))})"
            params += only
        out.append((sql + f" GROUP BY {'bucket, ' if q.grain else ''}{group}", params))
    return out


def _merge(statements: list[tuple[str, list[Any]]], fetch: Fetch) -> dict[tuple[Any, Any], list[Any]]:
    """(bucket, group) → [first_seen, last_seen, *sums], adding up the pieces of the window."""
    merged: dict[tuple[Any, Any], list[Any]] = {}
    for sql, params in statements:
        for bucket, group, first, last, *sums in fetch(sql, params):
            key = (None if bucket is None else int(bucket), group)
            acc = merged.get(key)
            if acc is None:
                merged[key] = [first, last, *(float(v or 0) for v in sums)]
                continue
            for i, v in enumerate(sums, start=2):
                acc[i] += float(v or 0)
    return merged


def _top_groups(q: UsageQuery, fetch: Fetch, mark: str, total: str) -> list[str] | None:
    """The `limit` costliest groups, ranked on cost and calls alone (a cheap pass over many groups,
    e.g. thousands of users), so only they get every measure summed; None if all groups fit."""
    ranked = _merge(_statements(q, mark, total, ("cost_usd", "calls")), fetch)
    if len(ranked) <= q.limit:
        return None
    order = sorted(ranked.items(), key=lambda kv: (-kv[1][2], -kv[1][3], kv[0][1] or ""))
    return [group for (_, group), _ in order[: q.limit]]


def read(q: UsageQuery, fetch: Fetch, mark: str, total: str = "SUM") -> list[UsageRow]:
    """Run the query's statements through `fetch(sql, params)` and merge their pieces into rows."""
    only = _top_groups(q, fetch, mark, total) if q.grain is None and q.by != "session" else None
    merged = _merge(_statements(q, mark, total, MEASURES, only), fetch)
    rows = [_row(bucket, group, acc) for (bucket, group), acc in merged.items()]
    rows.sort(key=lambda r: (r.bucket or 0, -r.cost_usd, -r.calls, r.group or ""))
    return rows if q.grain else rows[: q.limit]


_INT64_MAX = 2**63 - 1


def _count(total: float) -> int:
    """A summed count as an int that JSON's 64-bit integers hold; NaN (never written now) reads as 0."""
    if 0 <= total < _INT64_MAX:
        return int(total)
    return _INT64_MAX if total >= _INT64_MAX else 0


def _row(bucket: int | None, group: str | None, acc: list[Any]) -> UsageRow:
    first, last, *sums = acc
    m = dict(zip(MEASURES, sums, strict=True))
    hist = [_count(m[c]) for c in HIST_COLUMNS]
    return UsageRow(
        group=group or None,
        bucket=bucket,
        calls=_count(m["calls"]),
        errors=_count(m["errors"]),
        input_tokens=_count(m["input_tokens"]),
        cached_input_tokens=_count(m["cached_input_tokens"]),
        cache_write_tokens=_count(m["cache_write_tokens"]),
        output_tokens=_count(m["output_tokens"]),
        reasoning_tokens=_count(m["reasoning_tokens"]),
        cost_usd=m["cost_usd"],
        latency_avg_ms=m["latency_sum_ms"] / m["latency_count"] if m["latency_count"] else None,
        latency_p50_ms=percentile(hist, 0.50),
        latency_p95_ms=percentile(hist, 0.95),
        ttft_avg_ms=m["ttft_sum_ms"] / m["ttft_count"] if m["ttft_count"] else None,
        cache_lookups=_count(m["cache_lookups"]),
        cache_hits=_count(m["cache_hits"]),
        cache_saved_usd=m["cache_saved_usd"],
        fallbacks=_count(m["fallbacks"]),
        latency_hist=tuple(hist),
        first_seen=None if first is None else float(first),
        last_seen=None if last is None else float(last),
    )
