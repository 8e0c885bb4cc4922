"""Usage rollups, as a contract run on SQLite and on the real PostgreSQL (127.0.0.1:5432, db `test`).

The reference is always the trace rows themselves, read back from the store: whatever the rollups
say over a window must equal the sums over those rows, after batches re-sent whole, overlapping,
carrying one id twice, written from several threads at once, or failing half-way.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import random
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from keel.errors import InvalidRequest
from keel.store.protocols import Store, TraceQuery, UsageQuery, UsageRow
from keel.store.protocols.usage import hist_bounds, hist_bucket
from keel.store.sql.usage import spans
from keel.traces.rollups import BY, usage_query
from keel.types import TraceRecord

DAY0 = 1_700_006_400.0  # a UTC midnight
SPAN = 3 * 86400.0
FIGURES = (
    "calls", "errors", "input_tokens", "cached_input_tokens", "cache_write_tokens", "output_tokens",
    "reasoning_tokens", "cache_lookups", "cache_hits", "fallbacks",
)  # fmt: skip
ATTR = {"key": "key_id"}


def _maybe(rng: random.Random, value: Any, p: float = 0.8) -> Any:
    return value if rng.random() < p else None


def random_records(n: int, seed: int = 7) -> list[TraceRecord]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        cache = rng.choice([None, None, "miss", "hit", "semantic", "stale"])
        out.append(
            TraceRecord(
                id=f"r{seed}-{i}",
                started_at=DAY0 + rng.uniform(0, SPAN),
                tenant=rng.choice(["acme", "globex", None]),
                key_id=rng.choice(["k1", "k2", "k3"]),
                user=_maybe(rng, rng.choice(["ann", "bob", "cy", "dee"])),
                feature=_maybe(rng, rng.choice(["chat", "search", "summarise"])),
                session=_maybe(rng, rng.choice(["s1", "s2", "s3", "s4", "s5"]), 0.5),
                alias=rng.choice(["fast", "smart"]),
                provider=_maybe(rng, rng.choice(["oai", "ant"]), 0.95),
                model=_maybe(rng, rng.choice(["m-small", "m-large", "m-x"]), 0.95),
                prompt_version=_maybe(rng, rng.choice(["v1", "v2"]), 0.6),
                status=rng.choice(["ok", "ok", "ok", "error", "partial"]),
                input_tokens=_maybe(rng, rng.randint(1, 4000)),
                cached_input_tokens=_maybe(rng, rng.randint(0, 500), 0.3),
                cache_write_tokens=_maybe(rng, rng.randint(0, 300), 0.2),
                output_tokens=_maybe(rng, rng.randint(0, 2000)),
                reasoning_tokens=_maybe(rng, rng.randint(0, 300), 0.2),
                cost_usd=_maybe(rng, round(rng.uniform(0, 0.05), 6)),
                latency_ms=_maybe(rng, math.exp(rng.uniform(-1, 11)), 0.9),  # 0.4 ms .. 60 s
                ttft_ms=_maybe(rng, rng.uniform(5, 900), 0.5),
                cache=cache,
                cache_saved_usd=round(rng.uniform(0, 0.02), 6) if cache in ("hit", "semantic", "stale") else None,
                fallback=rng.choice([None, "primary", "primary", "target", "alias:cheap"]),
            )
        )
    return out


def all_traces(store: Store) -> list[TraceRecord]:
    rows = store.list_traces(TraceQuery(since=0, until=4e9, limit=1000))
    assert len(rows) < 1000
    return rows


def expected(records: list[TraceRecord]) -> dict[str, float]:
    """The figures a rollup row must show for `records`: sums over trace rows."""
    ok = [r for r in records if r.latency_ms is not None]
    out: dict[str, float] = {
        "calls": len(records),
        "errors": sum(r.status != "ok" for r in records),
        "cost_usd": sum(r.cost_usd or 0 for r in records),
        "cache_lookups": sum(r.cache is not None for r in records),
        "cache_hits": sum(r.cache in ("hit", "semantic", "stale") for r in records),
        "cache_saved_usd": sum(r.cache_saved_usd or 0 for r in records),
        "fallbacks": sum(r.fallback not in (None, "primary") for r in records),
        "latency_sum": sum(r.latency_ms or 0 for r in ok),
        "latency_count": len(ok),
    }
    for name in FIGURES[2:7]:
        out[name] = sum(getattr(r, name) or 0 for r in records)
    return out


def assert_row(row: UsageRow, records: list[TraceRecord]) -> None:
    want = expected(records)
    for name in FIGURES:
        assert getattr(row, name) == want[name], (row.group, name)
    assert row.cost_usd == pytest.approx(want["cost_usd"], abs=1e-9)
    assert row.cache_saved_usd == pytest.approx(want["cache_saved_usd"], abs=1e-9)
    if want["latency_count"]:
        assert row.latency_avg_ms == pytest.approx(want["latency_sum"] / want["latency_count"])
    else:
        assert row.latency_avg_ms is None and row.latency_p50_ms is None


def group_of(r: TraceRecord, by: str) -> str | None:
    if by == "all":
        return None  # one group: every record in the window
    value = getattr(r, ATTR.get(by, by))
    return value or None


def check_totals(store: Store, since: float, until: float, tenant: str | None = None) -> None:
    """Every grouping over [since, until) equals the trace rows in it (the window widened to minutes)."""
    lo, hi = math.floor(since / 60) * 60, math.ceil(until / 60) * 60
    inside = [r for r in all_traces(store) if lo <= r.started_at < hi and (tenant is None or r.tenant == tenant)]
    for by in BY:
        if by == "session":
            continue
        got = {row.group: row for row in store.usage(UsageQuery(since, until, by=by, tenant=tenant, limit=1000))}
        groups: dict[str | None, list[TraceRecord]] = {}
        for r in inside:
            groups.setdefault(group_of(r, by), []).append(r)
        assert set(got) == set(groups), by
        for group, records in groups.items():
            assert_row(got[group], records)


def send_with_retries(store: Store, records: list[TraceRecord], rng: random.Random) -> None:
    """Batches as the writer sends them after retries and spill reloads: re-sent, overlapping, an id twice."""
    for start in range(0, len(records), 37):
        batch = records[start : start + 37]
        store.append_traces(batch)
        if rng.random() < 0.3:
            store.append_traces(batch)  # a retry after a commit whose answer was lost
        if rng.random() < 0.3:
            store.append_traces(records[max(0, start - 20) : start + 5])  # a reload overlapping earlier ones
    store.append_traces([records[0], records[0], records[1]])


def test_rollups_equal_trace_rows_after_resent_and_overlapping_batches(store: Store) -> None:
    records = random_records(600)
    send_with_retries(store, records, random.Random(1))
    assert store.count_traces(0, 4e9) == len(records)
    check_totals(store, DAY0, DAY0 + SPAN)
    check_totals(store, DAY0, DAY0 + SPAN, tenant="acme")


def test_a_window_with_odd_edges_reads_days_hours_and_minutes(store: Store) -> None:
    store.append_traces(random_records(600))
    rng = random.Random(3)
    for _ in range(4):
        since = DAY0 + rng.uniform(0, SPAN / 2)
        check_totals(store, since, since + rng.uniform(60, SPAN / 2))
    check_totals(store, DAY0 + 3600 * 5 + 17.5, DAY0 + 3600 * 5 + 1000)  # inside one hour: minutes only


def test_spans_cover_the_window_once_at_the_coarsest_grain() -> None:
    since, until = DAY0 + 3 * 3600 + 17 * 60 + 5, DAY0 + 2 * 86400 + 5 * 3600 + 42 * 60 + 1
    pieces = spans(since, until)
    assert [g for g, _, _ in pieces] == ["minute", "hour", "day", "hour", "minute"]
    assert pieces[0][1] == DAY0 + 3 * 3600 + 17 * 60 and pieces[-1][2] == DAY0 + 2 * 86400 + 5 * 3600 + 43 * 60
    assert all(a[2] == b[1] for a, b in itertools.pairwise(pieces))  # contiguous, no overlap
    assert pieces[2][1:] == (DAY0 + 86400, DAY0 + 2 * 86400)
    assert spans(DAY0, DAY0 + 86400) == [("day", DAY0, DAY0 + 86400)]
    assert spans(DAY0 + 30, DAY0 + 30) == []


@pytest.mark.parametrize("grain", ["minute", "hour", "day"])
def test_a_series_has_one_row_per_bucket_and_group(store: Store, grain: str) -> None:
    records = random_records(300)
    store.append_traces(records)
    step = {"minute": 60, "hour": 3600, "day": 86400}[grain]
    until = DAY0 + (6 * 3600 if grain == "minute" else SPAN)
    rows = store.usage(UsageQuery(DAY0, until, by="alias", grain=grain))
    buckets: dict[tuple[int, str | None], list[TraceRecord]] = {}
    for r in all_traces(store):
        if r.started_at < until:
            buckets.setdefault((int(r.started_at // step) * step, r.alias), []).append(r)
    assert {(row.bucket, row.group) for row in rows} == set(buckets)
    assert [row.bucket for row in rows] == sorted(row.bucket or 0 for row in rows)
    for row in rows:
        assert row.bucket is not None
        assert_row(row, buckets[(row.bucket, row.group)])


def test_a_series_of_all_calls_merges_tenants_before_percentiles(store: Store) -> None:
    store.append_traces(random_records(300))
    until = DAY0 + SPAN
    rows = store.usage(UsageQuery(DAY0, until, by="all", grain="hour"))
    buckets: dict[int, list[TraceRecord]] = {}
    for r in all_traces(store):
        buckets.setdefault(int(r.started_at // 3600) * 3600, []).append(r)
    assert [row.bucket for row in rows] == sorted(buckets) and all(row.group is None for row in rows)
    for row in rows:
        assert row.bucket is not None
        assert_row(row, buckets[row.bucket])
        latencies = sorted(r.latency_ms for r in buckets[row.bucket] if r.latency_ms is not None)
        if latencies:
            exact = latencies[max(0, math.ceil(0.95 * len(latencies)) - 1)]
            low, high = hist_bounds(hist_bucket(exact))
            assert row.latency_p95_ms is not None and low <= row.latency_p95_ms <= high


def test_percentiles_fall_within_one_histogram_bucket(store: Store) -> None:
    records = random_records(600)
    store.append_traces(records)
    for row in store.usage(UsageQuery(DAY0, DAY0 + SPAN, by="model")):
        latencies = sorted(r.latency_ms for r in records if r.model == row.group and r.latency_ms is not None)
        for q, got in ((0.50, row.latency_p50_ms), (0.95, row.latency_p95_ms)):
            exact = latencies[max(0, math.ceil(q * len(latencies)) - 1)]
            low, high = hist_bounds(hist_bucket(exact))
            assert got is not None and low <= got <= high, (row.group, q, exact, got)


def test_sessions_add_up_whole_with_first_and_last_seen(store: Store) -> None:
    records = random_records(400)
    send_with_retries(store, records, random.Random(2))
    rows = {row.group: row for row in store.usage(UsageQuery(0, 4e9, by="session", tenant="acme"))}
    mine = [r for r in all_traces(store) if r.tenant == "acme" and r.session]
    assert set(rows) == {r.session for r in mine}
    for session, row in rows.items():
        calls = [r for r in mine if r.session == session]
        assert_row(row, calls)
        assert row.first_seen == pytest.approx(min(r.started_at for r in calls))
        assert row.last_seen == pytest.approx(max(r.started_at for r in calls))
    # a window that only touches a session's last call still reports the whole session
    s1 = rows["s1"]
    assert s1.last_seen is not None
    touching = {row.group: row for row in store.usage(UsageQuery(s1.last_seen, s1.last_seen + 1, by="session"))}
    assert "s1" in touching and touching["s1"].calls >= s1.calls
    assert store.usage(UsageQuery(DAY0 + SPAN + 10, DAY0 + SPAN + 20, by="session")) == []


def test_a_failing_batch_adds_nothing_to_the_rollups(store: Store) -> None:
    good = random_records(50)
    store.append_traces(good)
    before = store.usage(UsageQuery(DAY0, DAY0 + SPAN, by="feature"))
    bad = dataclasses.replace(random_records(1, seed=9)[0], status=None)  # type: ignore[arg-type]
    with pytest.raises(Exception, match=r"(?i)not[ -]null"):
        store.append_traces([*random_records(20, seed=8), bad])
    assert store.usage(UsageQuery(DAY0, DAY0 + SPAN, by="feature")) == before


def test_concurrent_writers_of_overlapping_batches_count_each_record_once(store: Store) -> None:
    records = random_records(400)
    start = threading.Barrier(4)

    def write(worker: int) -> None:
        mine = records[:]
        random.Random(worker).shuffle(mine)
        start.wait()
        for i in range(0, len(mine), 50):
            store.append_traces(mine[i : i + 50])

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(write, range(4)))
    assert store.count_traces(0, 4e9) == len(records)
    check_totals(store, DAY0, DAY0 + SPAN)


def test_totals_keep_the_costliest_groups_up_to_the_limit(store: Store) -> None:
    store.append_traces(random_records(300))
    full = store.usage(UsageQuery(DAY0, DAY0 + SPAN, by="user"))
    assert [r.cost_usd for r in full] == sorted((r.cost_usd for r in full), reverse=True)
    top = store.usage(UsageQuery(DAY0, DAY0 + SPAN, by="user", limit=2))  # ranked first, then summed
    assert [(r.group, r.calls, r.output_tokens) for r in top] == [(r.group, r.calls, r.output_tokens) for r in full[:2]]
    assert [r.cost_usd for r in top] == pytest.approx([r.cost_usd for r in full[:2]])
    assert [r.latency_p95_ms for r in top] == pytest.approx([r.latency_p95_ms for r in full[:2]])


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"by": "colour"}, "by"),
        ({"since": "soon"}, "since"),
        ({"since": "1h", "until": "2h"}, "until"),
        ({"grain": "week"}, "grain"),
        ({"by": "session", "grain": "hour"}, "grain"),
        ({"since": "30d", "grain": "minute"}, "grain"),
        ({"limit": "many"}, "limit"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_usage_query_names_the_parameter_at_fault(params: dict[str, str], param: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        usage_query(params, 2e9)
    assert caught.value.param == param


def test_usage_query_is_always_bounded() -> None:
    q = usage_query({}, 2e9)
    assert (q.since, q.until, q.by, q.grain) == (2e9 - 86400, 2e9 + 1, "tenant", None)
    q = usage_query({"by": "feature", "since": "7d", "grain": "hour", "tenant": "acme"}, 2e9)
    assert (q.since, q.by, q.grain, q.tenant) == (2e9 - 7 * 86400, "feature", "hour", "acme")
