"""Guards and rollout plans: parsed from text with errors naming the field, judged on both versions'
figures (a breach only when the new version is worse than the stable one), and the step-up decisions."""

from __future__ import annotations

import pytest

from keel.prompts.content import ContentError
from keel.prompts.guards import Figures, judge, parse_guard, plan_of
from keel.prompts.rollouts import decide
from keel.store.protocols import PromptRollout, RolloutPlan

NAMES = ("v2", "v1")


def test_guards_and_plans_parse_or_name_the_field() -> None:
    assert parse_guard(" error_rate < 0.02 ").text == "error_rate<0.02"
    assert parse_guard("feedback>=0.7").holds(0.7)
    for bad in ("latency<3", "error_rate=0.1", "p95_ms<", "p95_ms<4000; drop", 7):
        with pytest.raises(ContentError):
            parse_guard(bad)
    plan = plan_of({"guards": ["p95_ms<4000"], "steps": [25, 50], "every": "1h", "window": "10m"}, 10)
    assert (plan.steps, plan.every_s, plan.window_s, plan.min_calls) == ((25.0, 50.0), 3600.0, 600.0, 50)
    for body, field in (
        ({"steps": [50, 40], "every": "1h"}, "steps[1]"), ({"steps": [5], "every": "1h"}, "steps[0]"),
        ({"steps": [50]}, "every"), ({"window": "forever"}, "window"), ({"min_calls": 0}, "min_calls"),
        ({"guards": ["x<1"]}, "guards[0]"),
    ):  # fmt: skip
        with pytest.raises(ContentError) as err:
            plan_of(body, 10)
        assert err.value.field == field


def test_a_breach_needs_enough_calls_and_a_new_version_worse_than_the_stable_one() -> None:
    guards = ("error_rate<0.02",)
    assert judge(guards, 50, Figures(calls=49, errors=20), Figures(calls=500), NAMES).kind == "wait"
    breach = judge(guards, 50, Figures(calls=50, errors=10), Figures(calls=500), NAMES)
    assert breach.kind == "breach" and "v2 0.2 over 50" in breach.why and "v1 0 over 500" in breach.why
    both = judge(guards, 50, Figures(calls=50, errors=10), Figures(calls=500, errors=150), NAMES)
    assert both.kind == "wait" and "both" in both.why  # the provider's outage, not the version's fault
    assert judge(guards, 50, Figures(calls=60, errors=1), Figures(), NAMES).kind == "hold"
    low = judge(("feedback>=0.7",), 3, Figures(scores=4, score_sum=1.0), Figures(scores=10, score_sum=9.0), NAMES)
    assert low.kind == "breach"
    assert judge((), 10, Figures(calls=9), Figures(), NAMES).kind == "wait"


def test_held_guards_step_the_weight_up_after_every_and_end_at_100() -> None:
    plan = RolloutPlan(("error_rate<0.5",), (50.0,), 60.0, 300.0, 10)
    r = PromptRollout("t", "p", "production", 1, 2, 10.0, plan, "running", 0.0, "a", 0.0, None, 0.0, None)
    ok, none = Figures(calls=20), Figures()
    held = decide(r, ok, none, 100.0)
    assert held is not None and held.rollout.held_since == 100.0 and held.label is None and held.event is None
    r = held.rollout
    assert decide(r, ok, none, 159.0) is None
    up = decide(r, ok, none, 160.0)
    assert up is not None and up.label == (1, ((2, 50.0),)) and up.event == "prompt.rollout.stepped"
    r = up.rollout
    assert decide(r, Figures(calls=5), none, 170.0) is None  # waiting, not holding: nothing to reset
    r = decide(r, ok, none, 200.0).rollout  # type: ignore[union-attr]
    done = decide(r, ok, none, 260.0)
    assert done is not None and done.label == (2, ()) and done.rollout.state == "done"
    back = decide(r, Figures(calls=20, errors=15), none, 210.0)
    assert back is not None and back.label == (1, ()) and back.rollout.state == "rolled_back"
