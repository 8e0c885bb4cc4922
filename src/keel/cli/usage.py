"""`keel usage`: calls, tokens, cost, latency and cache savings over a bounded window, grouped by one dimension.

Reads the rollups in the configured database (as `keel traces` reads traces), so it answers whether
or not the gateway is running. `keel limits usage` is another thing: live limit counters.
"""

from __future__ import annotations

import argparse
import time

from keel.cli.context import store
from keel.cli.output import Failure, emit_json, table, when
from keel.errors import InvalidRequest
from keel.store.protocols import UsageRow
from keel.traces.rollups import BY, usage_query, usage_view


def register(p: argparse.ArgumentParser) -> None:
    p.add_argument("--by", default="tenant", choices=BY, help="the dimension to group by (default: tenant)")
    p.add_argument("--since", default="24h", help="unix seconds or a duration back from now (15m, 24h, 7d)")
    p.add_argument("--until", help="unix seconds or a duration back from now (default: now)")
    p.add_argument("--grain", choices=("minute", "hour", "day"), help="a time series: one row per bucket and group")
    p.add_argument("--tenant", help="only this tenant's calls")
    p.add_argument("--limit", default="100", help="the most groups shown, costliest first (totals only)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    params = {k: v for k in ("by", "since", "until", "grain", "tenant", "limit") if (v := getattr(args, k)) is not None}
    try:
        query = usage_query(params, time.time())
    except InvalidRequest as err:
        raise Failure(err.message) from None
    with store(args) as s:
        rows = s.usage(query)
    if args.json:
        emit_json([usage_view(r, query.by) for r in rows])
        return 0
    head = [query.by, *(["bucket"] if query.grain else []), *(["first", "last"] if query.by == "session" else [])]
    table(
        [*head, "calls", "errors", "in", "out", "cost", "avg ms", "p50 ms", "p95 ms", "cache hits", "saved"],
        [(*_lead(r, query.grain is not None), *_figures(r)) for r in rows],
    )
    return 0


def _lead(r: UsageRow, series: bool) -> tuple[object, ...]:
    out: tuple[object, ...] = (r.group,)
    if series:
        out += (when(r.bucket),)
    if r.first_seen is not None:
        out += (when(r.first_seen), when(r.last_seen))
    return out


def _figures(r: UsageRow) -> tuple[object, ...]:
    def ms(v: float | None) -> str:
        return "-" if v is None else f"{v:.1f}"

    return (
        r.calls, r.errors, r.input_tokens, r.output_tokens, f"{r.cost_usd:.6f}",
        ms(r.latency_avg_ms), ms(r.latency_p50_ms), ms(r.latency_p95_ms), r.cache_hits, f"{r.cache_saved_usd:.6f}",
    )  # fmt: skip
