"""Reports of a run for CI and people: JUnit XML (one testcase per item, failed when any repeat failed)
and one self-contained HTML page (no scripts, no outside assets): the pass rate with its interval, the
score distribution and per-assertion pass rates as inline SVG bars, and the per-item table against the
baseline with outputs side by side."""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import Any
from xml.etree import ElementTree as ET

Json = Mapping[str, Any]


def _items(results: Sequence[Json]) -> dict[str, list[Json]]:
    grouped: dict[str, list[Json]] = {}
    for r in results:
        grouped.setdefault(str(r["item"]), []).append(r)
    return grouped


def junit(run: Json, results: Sequence[Json], comparison: Json | None) -> str:
    grouped = _items(results)
    regressions = set((comparison or {}).get("regressions") or ())
    suite = ET.Element(
        "testsuite",
        name=str(run.get("suite")),
        tests=str(len(grouped)),
        failures=str(sum(1 for rs in grouped.values() if not all(r["passed"] for r in rs))),
        errors=str(sum(1 for rs in grouped.values() if any(r.get("error") for r in rs))),
        time=f"{sum(float(r.get('latency_ms') or 0) for r in results) / 1000:.3f}",
    )
    props = ET.SubElement(suite, "properties")
    summary = run.get("summary") or {}
    for name, value in (("run", run.get("id")), ("pass_rate", summary.get("pass_rate")), ("gate", _gate(comparison))):
        ET.SubElement(props, "property", name=name, value=str(value))
    for key, rs in grouped.items():
        case = ET.SubElement(suite, "testcase", classname=str(run.get("suite")), name=key)
        failed = [r for r in rs if not r["passed"]]
        if failed:
            reasons = [f"{v['type']}: {v['reason']}" for v in failed[0].get("verdicts") or () if not v.get("passed")]
            tag = "regression" if key in regressions else "failed"
            message = f"{tag}: {len(failed)}/{len(rs)} repeats failed"
            node = ET.SubElement(case, "failure", message=message, type=tag)
            node.text = "\n".join(
                [*(reasons or [str(failed[0].get("error") or "")]), "output:", str(failed[0]["output"])]
            )
    return ET.tostring(suite, encoding="unicode", xml_declaration=True)


def _gate(comparison: Json | None) -> str:
    if comparison is None:
        return "no baseline"
    return "holds" if comparison.get("holds") else "regressed"


def _bars(values: Sequence[tuple[str, float]], width: int = 420, unit: str = "") -> str:
    top = max((v for _, v in values), default=1.0) or 1.0
    rows = []
    for i, (label, v) in enumerate(values):
        w = int(width * v / top)
        y = i * 22
        rows.append(
            f'<text x="0" y="{y + 15}" font-size="12">{html.escape(label)}</text>'
            f'<rect x="150" y="{y + 3}" width="{w}" height="16" fill="#4a7bd0"/>'
            f'<text x="{155 + w}" y="{y + 15}" font-size="12">{v:g}{unit}</text>'
        )
    return f'<svg width="{width + 220}" height="{len(values) * 22 + 4}">{"".join(rows)}</svg>'


def page(run: Json, results: Sequence[Json], comparison: Json | None) -> str:
    summary = run.get("summary") or {}
    e = html.escape
    low, high = summary.get("ci95") or (0, 0)
    histogram = summary.get("histogram") or [0] * 10
    bins = [(f"{i / 10:.1f}–{(i + 1) / 10:.1f}", float(n)) for i, n in enumerate(histogram)]
    types = [(t, round(100 * s["pass_rate"], 1)) for t, s in (summary.get("assertions") or {}).items()]
    head = (
        f"<h1>{e(str(run.get('suite')))} — run {e(str(run.get('id')))}</h1>"
        f"<p>Status <b>{e(str(run.get('status')))}</b>; pass rate <b>{summary.get('pass_rate', 0):.1%}</b> "
        f"(95% CI {low:.1%}–{high:.1%}) over {summary.get('results', 0)} results of {summary.get('items', 0)} items; "
        f"mean score {summary.get('score_mean', 0):.3f}; cost ${summary.get('cost_usd', 0):.4f}; "
        f"gate: <b>{e(_gate(comparison))}</b></p>"
    )
    if comparison:
        head += "".join(f"<p class=bad>{e(str(r))}</p>" for r in comparison.get("reasons") or ())
    charts = f"<h2>Score distribution</h2>{_bars(bins)}<h2>Pass rate by assertion type</h2>{_bars(types, unit='%')}"
    return (
        "<!doctype html><html><head><meta charset=utf-8><title>Keel eval report</title><style>"
        "body{font-family:system-ui,sans-serif;margin:2em}table{border-collapse:collapse;width:100%}"
        "td,th{border:1px solid #ccc;padding:4px;vertical-align:top;font-size:13px}"
        "pre{white-space:pre-wrap;margin:0;max-height:12em;overflow:auto}.bad{color:#b00}.good{color:#070}"
        f"</style></head><body>{head}{charts}<h2>Items</h2>{_table(results, comparison)}</body></html>"
    )


def _table(results: Sequence[Json], comparison: Json | None) -> str:
    e = html.escape
    changes = {c["key"]: c for c in (comparison or {}).get("changes") or ()}
    rows = []
    for key, rs in _items(results).items():
        passes = sum(1 for r in rs if r["passed"])
        c = changes.get(key)
        change = c["change"] if c else ""
        base_out = c["base_output"] if c else ""
        cls = (
            "bad"
            if change in ("newly_failing", "regressed")
            else "good"
            if change in ("newly_passing", "improved")
            else ""
        )
        reasons = "; ".join(f"{v['type']}: {v['reason']}" for v in rs[0].get("verdicts") or () if not v.get("passed"))
        rows.append(
            f"<tr><td>{e(key)}</td><td class='{cls}'>{e(change)}</td><td>{passes}/{len(rs)}</td>"
            f"<td>{sum(r['score'] for r in rs) / len(rs):.3f}</td><td><pre>{e(str(base_out))}</pre></td>"
            f"<td><pre>{e(str(rs[0]['output']))}</pre></td><td>{e(reasons or str(rs[0].get('error') or ''))}</td></tr>"
        )
    header = "<tr><th>item</th><th>change</th><th>passed</th><th>score</th><th>baseline output</th><th>output</th><th>failed assertions</th></tr>"
    return f"<table>{header}{''.join(rows)}</table>"
