"""The gate's statistics: Wilson intervals, the one-sided Fisher test over repeats, and which item
changes count as regressions under a rule."""

from __future__ import annotations

import pytest

from keel.evals.gate import Rule, compare, fisher_less, summarize, wilson
from keel.store.protocols import EvalResult


def results(run: str, passes: dict[str, list[bool]]) -> list[EvalResult]:
    return [
        EvalResult(run, key, rep, ok, 1.0 if ok else 0.0, "out", None, 1.0, 0.0, ())
        for key, reps in passes.items()
        for rep, ok in enumerate(reps)
    ]


def test_wilson_and_fisher() -> None:
    low, high = wilson(95, 100)
    assert 0.88 < low < 0.9 and 0.97 < high < 0.99
    assert wilson(0, 0) == (0.0, 1.0)
    assert fisher_less(10, 10, 0, 10) < 1e-4  # 10/10 then 0/10: a certain drop
    assert fisher_less(5, 10, 5, 10) > 0.5
    assert fisher_less(3, 3, 2, 3) == pytest.approx(0.5)


def test_single_runs_count_every_flip_and_repeats_only_significant_drops() -> None:
    base = results("a", {"t1": [True], "t2": [True], "t3": [False]})
    now = results("b", {"t1": [False], "t2": [True], "t3": [True]})
    c = compare({"summary": summarize(now)}, now, {}, base, Rule())
    assert [(x.key, x.change) for x in c.changes] == [("t1", "newly_failing"), ("t3", "newly_passing")]
    assert c.regressions == ["t1"] and not c.holds and c.exit_code == 100

    base = results("a", {"t1": [True] * 5, "t2": [True] * 5})
    now = results("b", {"t1": [True, True, True, True, False], "t2": [False] * 5})
    c = compare({"summary": summarize(now)}, now, {}, base, Rule(max_regressions=0))
    assert c.regressions == ["t2"]  # 4/5 after 5/5 is noise at alpha 0.05; 0/5 is not
    assert {x.key: x.change for x in c.changes} == {"t1": "score", "t2": "newly_failing"}
    assert compare({"summary": summarize(now)}, now, {}, base, Rule(max_regressions=1)).holds


def test_min_pass_rate() -> None:
    now = results("b", {"t1": [True], "t2": [False]})
    assert not compare({"summary": summarize(now)}, now, None, [], Rule(min_pass_rate=0.9)).holds
    assert compare({"summary": summarize(now)}, now, None, [], Rule(min_pass_rate=0.5)).holds
