"""The eval pages: recent runs (pass rate with its interval, progress), and one run's items against its
baseline (newly failing first, outputs side by side). Outputs and reasons are model text: untrusted,
they reach the page only through `h`. Read-only; runs are created with `keel eval run` or the API."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from keel.dashboard.markup import Safe, h, join, when
from keel.evals.gate import Comparison, item_stats
from keel.store.protocols import EvalResult, EvalRun

ORDER = {"newly_failing": 0, "regressed": 1, "score": 2, "improved": 3, "newly_passing": 4}


def _rate(summary: Any) -> str:
    if not summary:
        return "–"
    low, high = summary.get("ci95") or (0, 0)
    return f"{summary.get('pass_rate', 0):.1%} ({low:.0%}–{high:.0%})"


def render_runs(runs: Sequence[EvalRun]) -> Safe:
    head = Safe(
        "<tr><th>Created (UTC)</th><th>Run</th><th>Suite</th><th>Label</th><th>Status</th>"
        '<th class="n">Done</th><th>Pass rate (95% CI)</th><th class="n">Cost</th></tr>'
    )
    rows = join(_run_row(r) for r in runs) or Safe(
        '<tr><td colspan="8" class="muted">No eval runs yet: keel eval run SUITE.yaml</td></tr>'
    )
    return h('<h1>Eval runs</h1><table id="runs">{}{}</table>', head, rows)


def _run_row(r: EvalRun) -> Safe:
    cost = f"${(r.summary or {}).get('cost_usd', 0):.4f}" if r.summary else "–"
    return h(
        '<tr data-run="{}"><td>{}</td><td><a href="/ui/evals/{}">{}</a></td><td>{}</td><td>{}</td><td class="{}">{}</td>'
        '<td class="n">{}/{}</td><td>{}</td><td class="n">{}</td></tr>',
        r.id, when(r.created_at), r.id, r.id, r.suite, r.label or "–",
        "status-error" if r.status == "failed" else "", r.status, r.done, r.total, _rate(r.summary), cost,
    )  # fmt: skip


def render_run(run: EvalRun, results: Sequence[EvalResult], comparison: Comparison | None) -> Safe:
    stats = item_stats(results)
    changes = {c.key: c for c in (comparison.changes if comparison else [])}
    base = comparison.baseline if comparison else None
    gate = "no baseline" if comparison is None else "holds" if comparison.holds else "regressed"
    facts = h(
        "<p>Suite <b>{}</b> · status {} · {}/{} results · pass rate <b>{}</b> · baseline {} · gate <b>{}</b></p>",
        run.suite, run.status, run.done, run.total, _rate(run.summary),
        base["id"] if base else "none", gate,
    )  # fmt: skip
    keys = sorted(stats, key=lambda k: (ORDER.get(changes[k].change, 5) if k in changes else 6, k))
    head = Safe(
        "<tr><th>Item</th><th>Change</th><th>Passed</th><th>Score</th><th>Baseline output</th><th>Output</th>"
        "<th>Failed assertions</th><th>Trace</th></tr>"
    )
    rows = join(_item(stats[k], changes.get(k)) for k in keys)
    return h('<h1>Eval run {}</h1>{}<table id="items">{}{}</table>', run.id, facts, head, rows)


def _item(s: Any, change: Any) -> Safe:
    css = "status-error" if change is not None and change.change in ("newly_failing", "regressed") else ""
    trace = h('<a href="/ui/traces/{}">{}</a>', s.trace_id, s.trace_id[:12]) if s.trace_id else Safe("–")
    return h(
        '<tr data-item="{}"><td>{}</td><td class="{}">{}</td><td class="n">{}/{}</td><td class="n">{}</td>'
        "<td><pre>{}</pre></td><td><pre>{}</pre></td><td>{}</td><td>{}</td></tr>",
        s.key, s.key, css, change.change if change else "", s.passes, s.runs, f"{s.score:.3f}",
        (change.base_output if change else "")[:2000], s.output[:2000], "; ".join(s.reasons)[:1000], trace,
    )  # fmt: skip
