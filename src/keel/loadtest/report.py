"""The load test's report: a terminal table and verdict, and a self-contained HTML page with plots
(inline SVG, no script, no external asset) of latency, refusals and errors, CPU and queues per multiple."""

from __future__ import annotations

import html
from collections.abc import Sequence

from keel.loadtest.verdict import Summary, Verdict

COLUMNS = ("×", "offered/s", "ok/s", "p50 ms", "p99 ms", "errors", "429", "queued", "cpu", "trace lag")


def rows(verdict: Verdict) -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = []
    for s in verdict.summaries:
        out.append(
            (
                f"{s.multiple:g}" + ("*" if s.multiple in verdict.tainted else ""),
                f"{s.offered_rps:.1f}",
                f"{s.achieved_rps:.1f}",
                f"{s.p50_ms:.0f}",
                f"{s.p99_ms:.0f}",
                f"{s.error_rate:.1%}",
                f"{s.rejected_rate:.1%}",
                f"{max(s.queued_max.values(), default=0):.0f}",
                f"{s.cpu_cores:.2f}",
                f"{s.trace_queue_max:.0f}",
            )
        )
    return out


def verdict_lines(verdict: Verdict) -> list[str]:
    if verdict.first is None:
        return [f"Nothing broke up to {verdict.summaries[-1].multiple:g}x." if verdict.summaries else "No phase ran."]
    lines = []
    bottleneck = verdict.bottleneck
    assert bottleneck is not None
    lines.append(f"First bottleneck at {verdict.first:g}x: {bottleneck.what} — {bottleneck.detail}")
    for b in verdict.breaches[verdict.first][1:]:
        lines.append(f"  also at {verdict.first:g}x: {b.what} — {b.detail}")
    if verdict.tainted:
        shown = ", ".join(f"{m:g}x" for m in verdict.tainted)
        lines.append(f"* the load generator fell behind its schedule at {shown}: those figures understate the load")
    return lines


def terminal(verdict: Verdict, notes: Sequence[str]) -> str:
    table = [COLUMNS, *rows(verdict)]
    widths = [max(len(r[i]) for r in table) for i in range(len(COLUMNS))]
    lines = ["  ".join(cell.rjust(w) for cell, w in zip(r, widths, strict=True)) for r in table]
    return "\n".join([*(f"note: {n}" for n in notes), *lines, "", *verdict_lines(verdict)]) + "\n"


def page(verdict: Verdict, notes: Sequence[str], title: str) -> str:
    s = verdict.summaries
    xs = [x.multiple for x in s]
    charts = [
        _chart("Latency (ms)", xs, {"p50": [x.p50_ms for x in s], "p99": [x.p99_ms for x in s]}),
        _chart(
            "Refused (429) and failed, share of calls",
            xs,
            {"429": [x.rejected_rate for x in s], "failed": [x.error_rate for x in s]},
            percent=True,
        ),
        _chart("Gateway CPU (cores)", xs, {"cpu": [x.cpu_cores for x in s]}),
        _chart(
            "Queues (max)",
            xs,
            {
                "calls waiting for a target": [max(x.queued_max.values(), default=0) for x in s],
                "trace records": [x.trace_queue_max for x in s],
            },
        ),
    ]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in COLUMNS)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows(verdict))
    verdict_html = "".join(f"<p>{html.escape(line)}</p>" for line in verdict_lines(verdict))
    notes_html = "".join(f"<li>{html.escape(n)}</li>" for n in notes)
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font:14px system-ui,sans-serif;margin:2em;color:#222}}table{{border-collapse:collapse}}
td,th{{padding:4px 10px;border-bottom:1px solid #ddd;text-align:right}}.verdict{{font-size:16px;background:#fff4e0;
padding:8px 12px;border-left:4px solid #e69500}}svg{{margin:1em 2em 0 0}}</style></head><body>
<h1>{html.escape(title)}</h1><div class="verdict">{verdict_html}</div>
<table><tr>{head}</tr>{body}</table><div>{"".join(charts)}</div>
<h2>The Keel under test</h2><ul>{notes_html}</ul></body></html>
"""


PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd")


def _chart(title: str, xs: Sequence[float], series: dict[str, list[float]], *, percent: bool = False) -> str:
    w, h, pad = 420, 240, 44
    top = max((v for vs in series.values() for v in vs), default=0) or 1.0
    n = max(1, len(xs) - 1)

    def px(i: int) -> float:
        return pad + (w - 2 * pad) * i / n

    def py(v: float) -> float:
        return h - pad - (h - 2 * pad) * v / top

    parts = [f'<svg width="{w}" height="{h}" role="img" aria-label="{html.escape(title)}">']
    parts.append(f'<text x="{pad}" y="16" font-weight="bold">{html.escape(title)}</text>')
    parts.append(f'<line x1="{pad}" y1="{h - pad}" x2="{w - pad}" y2="{h - pad}" stroke="#999"/>')
    parts.append(f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{h - pad}" stroke="#999"/>')
    label = f"{top:.0%}" if percent else f"{top:.3g}"
    parts.append(f'<text x="4" y="{pad + 4}" font-size="11">{label}</text>')
    for i, x in enumerate(xs):
        parts.append(f'<text x="{px(i) - 6:.0f}" y="{h - pad + 16}" font-size="11">{x:g}×</text>')
    for k, (name, values) in enumerate(series.items()):
        color = PALETTE[k % len(PALETTE)]
        points = " ".join(f"{px(i):.1f},{py(v):.1f}" for i, v in enumerate(values))
        parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{points}"/>')
        parts.extend(f'<circle cx="{px(i):.1f}" cy="{py(v):.1f}" r="3" fill="{color}"/>' for i, v in enumerate(values))
        parts.append(
            f'<text x="{w - pad - 150}" y="{pad + 14 * k}" font-size="11" fill="{color}">{html.escape(name)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def summary_view(s: Summary) -> dict[str, object]:
    return {
        "multiple": s.multiple,
        "offered_rps": round(s.offered_rps, 3),
        "achieved_rps": round(s.achieved_rps, 3),
        "calls": s.calls,
        "ok": s.ok,
        "errors": s.errors,
        "rejected": s.rejected,
        "rejected_by": s.rejected_by,
        "p50_ms": round(s.p50_ms, 1),
        "p99_ms": round(s.p99_ms, 1),
        "ttft_p50_ms": s.ttft_p50_ms,
        "overhead_p50_ms": s.overhead_p50_ms,
        "cpu_cores": round(s.cpu_cores, 3),
        "trace_queue_max": s.trace_queue_max,
        "queued_max": s.queued_max,
        "refused_by_target": s.refused_by_target,
        "generator_late_p99_ms": round(s.late_p99_ms, 1),
        "not_sent": s.not_sent,
    }
