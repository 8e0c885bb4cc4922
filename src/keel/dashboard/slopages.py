"""The SLO page: per alias with an `slo:`, each objective's target, what was measured over the SLO
window, the error budget left, and the burn rate over the alerting windows (red at or past the rate
that pages: 14.4× over 1h and 5m, 6× over 6h and 30m)."""

from __future__ import annotations

from keel.alerts.slo import SPEEDS, SloStatus, label
from keel.dashboard.markup import Safe, h, join


def render_slo(statuses: list[SloStatus]) -> Safe:
    if not statuses:
        note = "No alias declares an slo: set models.<alias>.slo: {availability: 99.9, p95_ms: 3000} in keel.yaml."
        return h('<h1>SLOs</h1><p class="muted">{}</p>', note)
    windows = [label(w) for w in sorted({s for sp in SPEEDS for s in (sp.short_s, sp.long_s)})]
    head = join(h("<th class=n>burn {}</th>", w) for w in windows)
    rows = join(_rows(st, windows) for st in statuses)
    return h(
        '<h1>SLOs</h1><table id="slo"><tr><th>Alias</th><th>Objective</th><th class="n">Target</th>'
        '<th class="n">Measured</th><th class="n">Calls</th><th class="n">Budget left</th>{}</tr>{}</table>',
        head,
        rows,
    )


def _rows(st: SloStatus, windows: list[str]) -> Safe:
    pages = {label(sp.long_s): sp.burn for sp in SPEEDS} | {label(sp.short_s): sp.burn for sp in SPEEDS}
    out = []
    for o in st.objectives:
        what = "availability" if o.name == "availability" else f"latency ≤ p95 target ({st.p95_ms or 0:.0f} ms p95 now)"
        burns = join(
            h(
                '<td class="n{}">{}</td>',
                Safe(" error" if (b := o.burn[w]) is not None and b >= pages[w] else ""),
                _x(b),
            )
            for w in windows
        )
        left = Safe(" error") if o.budget_remaining <= 0 else Safe("")
        out.append(
            h(
                '<tr data-alias="{}" data-objective="{}"><td>{}</td><td>{}</td><td class="n">{}</td><td class="n">{}</td>'
                '<td class="n">{}</td><td class="n{}">{}</td>{}</tr>',
                st.alias,
                o.name,
                st.alias,
                what,
                f"{o.target:.3%}",
                f"{o.good:.3%}",
                o.calls,
                left,
                f"{o.budget_remaining:.1%}",
                burns,
            )
        )
    return join(out)


def _x(burn: float | None) -> str:
    return "–" if burn is None else f"{burn:.2f}×"
