"""The overview page: totals, four time series and cost tables, all read from the usage rollups.

One window (1h, 24h, 7d or 30d) and an optional tenant bound every query; the page costs five
rollup reads whatever the traffic was, never a scan of trace rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlencode

from keel.dashboard.charts import Series, chart
from keel.dashboard.markup import Safe, h, join, ms, num, usd
from keel.store.protocols import TraceStore, UsageQuery, UsageRow
from keel.store.sql.usage import GRAINS

# window → (seconds, series grain): at most 168 buckets per chart
WINDOWS = {"1h": (3600, "minute"), "24h": (86400, "hour"), "7d": (7 * 86400, "hour"), "30d": (30 * 86400, "day")}
TABLES = ("tenant", "feature", "model")
TABLE_ROWS = 20


@dataclass(frozen=True, slots=True)
class Overview:
    window: str
    tenant: str | None
    since: float
    until: float
    grain: str
    total: UsageRow | None
    series: list[UsageRow]
    tables: dict[str, list[UsageRow]]


def read_overview(store: TraceStore, window: str, tenant: str | None, now: float) -> Overview:
    """Every figure the page shows; blocking (the store is synchronous): run it in a worker thread."""
    span, grain = WINDOWS[window]
    since, until = now - span, now + 1.0

    def q(by: str, grain: str | None = None) -> list[UsageRow]:
        return store.usage(UsageQuery(since, until, by=by, grain=grain, tenant=tenant, limit=TABLE_ROWS))

    total = q("all")
    return Overview(
        window=window,
        tenant=tenant,
        since=since,
        until=until,
        grain=grain,
        total=total[0] if total else None,
        series=q("all", grain),
        tables={by: q(by) for by in TABLES},
    )


def render_overview(o: Overview) -> Safe:
    return join(
        [
            _heading(o),
            _cards(o.total),
            h('<h2>Over time <span class="muted">(per {})</span></h2>', o.grain),
            _charts(o),
            h('<div class="grid3">{}</div>', join(_table(o, by) for by in TABLES)),
        ]
    )


def _heading(o: Overview) -> Safe:
    def link(w: str) -> Safe:
        query = urlencode({"window": w, **({"tenant": o.tenant} if o.tenant else {})})
        return h('<a href="/ui?{}" class="{}">{}</a>', query, "on" if w == o.window else "", w)

    tenant = h(' · tenant <b>{}</b> <a href="/ui?window={}">(all tenants)</a>', o.tenant, o.window) if o.tenant else ""
    return h('<h1>Overview</h1><nav class="windows">Window: {}{}</nav>', join(link(w) for w in WINDOWS), Safe(tenant))


def _cards(t: UsageRow | None) -> Safe:
    cards = [
        ("calls", "Calls", num(t.calls if t else 0)),
        ("errors", "Errors", num(t.errors if t else 0)),
        ("error-rate", "Error rate", f"{t.errors / t.calls:.1%}" if t and t.calls else "–"),
        ("p50", "p50 latency", ms(t.latency_p50_ms if t else None)),
        ("p95", "p95 latency", ms(t.latency_p95_ms if t else None)),
        ("cost", "Cost", usd(t.cost_usd if t else 0.0)),
        ("tokens", "Tokens in / out", f"{num(t.input_tokens)} / {num(t.output_tokens)}" if t else "0 / 0"),
        ("cache-hits", "Cache hits", num(t.cache_hits if t else 0)),
    ]
    return h(
        '<div class="cards" id="totals">{}</div>',
        join(
            h('<div class="card" data-figure="{}">{}<b>{}</b></div>', key, label, value) for key, label, value in cards
        ),
    )


def _charts(o: Overview) -> Safe:
    step = GRAINS[o.grain]
    buckets = list(range(int(o.since // step) * step, int(o.until), step))
    rows = {r.bucket: r for r in o.series}

    def values(pick: str) -> list[float | None]:
        return [getattr(rows[b], pick) if b in rows else None for b in buckets]

    def counts(pick: str) -> list[float | None]:
        return [v or 0 for v in values(pick)]

    return h(
        '<div class="charts">{}{}{}</div>',
        chart(
            "Calls and errors",
            buckets,
            step,
            [Series("calls", counts("calls"), "#3b6fd8"), Series("errors", counts("errors"), "#c62828")],
            num,
            bars=True,
        ),
        chart(
            "Latency p50 / p95",
            buckets,
            step,
            [Series("p50", values("latency_p50_ms"), "#2e7d32"), Series("p95", values("latency_p95_ms"), "#ef6c00")],
            ms,
            bars=False,
        ),
        chart("Cost", buckets, step, [Series("cost", counts("cost_usd"), "#6a1b9a")], usd, bars=True),
    )


def _table(o: Overview, by: str) -> Safe:
    head = Safe(
        '<tr><th></th><th class="n">Calls</th><th class="n">Errors</th><th class="n">Tokens in/out</th>'
        '<th class="n">p95</th><th class="n">Cost</th></tr>'
    )
    body = join(_table_row(o, by, r) for r in o.tables[by]) or Safe(
        '<tr><td colspan="6" class="muted">No calls</td></tr>'
    )
    return h('<div><h2>Cost by {}</h2><table id="by-{}">{}{}</table></div>', by, by, head, body)


def _table_row(o: Overview, by: str, r: UsageRow) -> Safe:
    name: Safe = h('<span class="muted">(none)</span>') if r.group is None else h("{}", r.group)
    if r.group is not None and by in ("tenant", "feature"):  # the trace list filters on these
        filters = {by: r.group, "since": o.window, **({"tenant": o.tenant} if o.tenant and by != "tenant" else {})}
        name = h('<a href="/ui/traces?{}">{}</a>', urlencode(filters), r.group)
    return h(
        '<tr data-group="{}"><td>{}</td><td class="n" data-col="calls">{}</td><td class="n" data-col="errors">{}</td>'
        '<td class="n">{}&nbsp;/&nbsp;{}</td><td class="n">{}</td><td class="n" data-col="cost">{}</td></tr>',
        "" if r.group is None else r.group,
        name,
        num(r.calls),
        num(r.errors),
        num(r.input_tokens),
        num(r.output_tokens),
        ms(r.latency_p95_ms),
        usd(r.cost_usd),
    )
