"""Run summaries and the regression gate.

A run's items are scored over its repeats: an item's pass rate is passes / repeats, and a run's pass rate
comes with a Wilson 95 % interval. Comparing a run with its baseline lists, per item key present in both,
what changed: newly failing (passed in the baseline, fails now), newly passing, and score deltas. With
repeats, an item counts as a regression only when its drop in pass rate is significant (a one-sided
Fisher exact test at `alpha`); with one repeat, a pass that became a fail is a regression.

The rule holds when regressions ≤ `max_regressions` and the run's pass rate ≥ `min_pass_rate` (if
set). Exit codes for CI: 0 holds, 100 quality regressed, 1 the run could not be judged (it failed).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from keel.store.protocols import EvalResult

HOLDS, REGRESSED, ERROR = 0, 100, 1
Z95 = 1.959964


@dataclass(frozen=True, slots=True)
class ItemStats:
    key: str
    runs: int
    passes: int
    score: float  # the mean over repeats
    errors: int
    output: str  # the first repeat's
    trace_id: str | None
    reasons: tuple[str, ...]  # failed assertions' reasons (first repeat that failed)

    @property
    def pass_rate(self) -> float:
        return self.passes / self.runs if self.runs else 0.0


@dataclass(frozen=True, slots=True)
class Rule:
    max_regressions: int = 0
    min_pass_rate: float | None = None
    alpha: float = 0.05


@dataclass
class Change:
    key: str
    change: str  # newly_failing | newly_passing | regressed | improved | score
    base_pass_rate: float
    pass_rate: float
    base_score: float
    score: float
    p_value: float | None
    output: str
    base_output: str
    reasons: tuple[str, ...] = ()

    @property
    def delta(self) -> float:
        return self.score - self.base_score


@dataclass
class Comparison:
    run: dict[str, Any]
    baseline: dict[str, Any] | None
    changes: list[Change] = field(default_factory=list)
    regressions: list[str] = field(default_factory=list)
    holds: bool = True
    reasons: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return HOLDS if self.holds else REGRESSED

    def json(self) -> dict[str, Any]:
        return {
            "run": self.run,
            "baseline": self.baseline,
            "changes": [{**asdict(c), "delta": c.delta} for c in self.changes],
            "regressions": self.regressions,
            "holds": self.holds,
            "reasons": self.reasons,
            "exit_code": self.exit_code,
        }


def item_stats(results: Iterable[EvalResult]) -> dict[str, ItemStats]:
    grouped: dict[str, list[EvalResult]] = {}
    for r in results:
        grouped.setdefault(r.item, []).append(r)
    out = {}
    for key, rs in grouped.items():
        rs.sort(key=lambda r: r.repeat)
        failed = next((r for r in rs if not r.passed), None)
        reasons = tuple(
            f"{v.get('type')}: {v.get('reason')}" for v in (failed.verdicts if failed else ()) if not v.get("passed")
        )
        if failed is not None and failed.error:
            reasons = (f"error: {failed.error}", *reasons)
        out[key] = ItemStats(
            key, len(rs), sum(r.passed for r in rs), sum(r.score for r in rs) / len(rs),
            sum(1 for r in rs if r.error), rs[0].output, rs[0].trace_id, reasons,
        )  # fmt: skip
    return out


def wilson(passes: int, n: int, z: float = Z95) -> tuple[float, float]:
    if n == 0:
        return 0.0, 1.0
    p = passes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def summarize(results: Sequence[EvalResult]) -> dict[str, Any]:
    """A run's summary: results, passes, pass rate with its 95 % interval, mean score, cost, errors,
    per-assertion-type pass rates and a score histogram (10 bins)."""
    n, passes = len(results), sum(r.passed for r in results)
    low, high = wilson(passes, n)
    by_type: dict[str, list[int]] = {}
    histogram = [0] * 10
    for r in results:
        histogram[min(9, int(r.score * 10))] += 1
        for v in r.verdicts:
            counts = by_type.setdefault(str(v.get("type")), [0, 0])
            counts[0] += bool(v.get("passed"))
            counts[1] += 1
    return {
        "results": n,
        "items": len({r.item for r in results}),
        "passed": passes,
        "pass_rate": passes / n if n else 0.0,
        "ci95": [low, high],
        "score_mean": sum(r.score for r in results) / n if n else 0.0,
        "cost_usd": sum(r.cost_usd for r in results),
        "errors": sum(1 for r in results if r.error),
        "assertions": {t: {"passed": p, "total": k, "pass_rate": p / k} for t, (p, k) in sorted(by_type.items())},
        "histogram": histogram,
    }


def fisher_less(a: int, n1: int, b: int, n2: int) -> float:
    """One-sided p that the second pass rate (b/n2) is below the first (a/n1): P(X ≥ a) for the first
    group's passes under the hypergeometric law with the margins fixed."""
    total, passes = n1 + n2, a + b
    denom = math.comb(total, n1)
    top = min(n1, passes)
    return sum(math.comb(passes, k) * math.comb(total - passes, n1 - k) for k in range(a, top + 1)) / denom


def compare(
    run: dict[str, Any],
    results: Sequence[EvalResult],
    baseline: dict[str, Any] | None,
    base_results: Sequence[EvalResult],
    rule: Rule,
) -> Comparison:
    now, before = item_stats(results), item_stats(base_results)
    out = Comparison(run, baseline)
    for key in sorted(now, key=_natural):
        cur, old = now[key], before.get(key)
        if old is None:
            continue
        change = _change(cur, old, rule)
        if change is not None:
            out.changes.append(change)
            if change.change in ("newly_failing", "regressed"):
                out.regressions.append(key)
    summary = run.get("summary") or summarize(results)
    if len(out.regressions) > rule.max_regressions:
        out.holds = False
        out.reasons.append(
            f"{len(out.regressions)} item(s) regressed (at most {rule.max_regressions}): {', '.join(out.regressions)}"
        )
    rate = float(summary.get("pass_rate", 0.0))
    if rule.min_pass_rate is not None and rate < rule.min_pass_rate:
        out.holds = False
        out.reasons.append(f"pass rate {rate:.1%} is below {rule.min_pass_rate:.1%}")
    return out


def _change(cur: ItemStats, old: ItemStats, rule: Rule) -> Change | None:
    def made(kind: str, p: float | None = None) -> Change:
        return Change(
            cur.key, kind, old.pass_rate, cur.pass_rate, old.score, cur.score, p, cur.output, old.output, cur.reasons
        )

    if cur.runs == 1 and old.runs == 1:
        if old.passes and not cur.passes:
            return made("newly_failing")
        if cur.passes and not old.passes:
            return made("newly_passing")
    elif cur.pass_rate < old.pass_rate:
        p = fisher_less(old.passes, old.runs, cur.passes, cur.runs)
        if p < rule.alpha:
            return made("newly_failing" if cur.passes == 0 else "regressed", p)
        return made("score", p)
    elif cur.pass_rate > old.pass_rate:
        p = fisher_less(cur.passes, cur.runs, old.passes, old.runs)
        return made("newly_passing" if old.passes == 0 and p < rule.alpha else "improved", p)
    if abs(cur.score - old.score) > 1e-9:
        return made("score")
    return None


def _natural(key: str) -> tuple[Any, ...]:
    head, _, rest = key.partition("|")
    return (int(head[1:]) if head[1:].isdigit() else 0, head, rest)


def run_view(run: Any) -> dict[str, Any]:
    """An `EvalRun` as the API, CLI and reports show it (without its spec)."""
    return {
        "id": run.id, "tenant": run.tenant, "suite": run.suite, "label": run.label, "status": run.status,
        "total": run.total, "done": run.done, "created_at": run.created_at, "finished_at": run.finished_at,
        "job_id": run.job_id, "summary": run.summary, "error": run.error,
        "repeat": run.spec.get("repeat", 1), "dataset": run.spec.get("dataset") or None,
    }  # fmt: skip


def find_baseline(store: Any, run: Any, ref: str) -> Any:
    """The baseline a run is compared with: a run id, or the newest finished run of the same suite with
    label `ref` (other than `run`). None when there is none."""
    if ref.startswith("evr_"):
        return store.get_eval_run(run.tenant, ref)
    for candidate in store.list_eval_runs(run.tenant, suite=run.suite, label=ref, limit=50):
        if candidate.id != run.id and candidate.status == "finished":
            return candidate
    return None


def compare_runs(store: Any, run: Any, baseline_ref: str | None, rule: Rule) -> Comparison:
    """The comparison of a finished run with its baseline (none: only `min_pass_rate` applies). Blocking."""
    results = store.eval_results(run.id)
    base = find_baseline(store, run, baseline_ref) if baseline_ref else None
    if baseline_ref and base is None:
        raise LookupError(
            f"no baseline {baseline_ref!r} for suite {run.suite!r}: a run id, or a label of a finished run"
        )
    base_results = store.eval_results(base.id) if base is not None else []
    return compare(run_view(run), results, run_view(base) if base else None, base_results, rule)
