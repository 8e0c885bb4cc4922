"""A rollout's guards and plan: parsed from text, judged on the new and the stable version's figures.

A guard is `metric op bound` (`error_rate<0.02`, `p95_ms<4000`, `cost_per_call<0.01`, `feedback>=0.7`,
`score:llm-rubric>=0.8`: the mean of an online eval scorer's scores on the version's calls).
It is judged on the new version once that version has `min_calls` calls (feedback: scores) in the
window; until then the rollout waits. A guard the new version fails is a *breach* unless the stable
version, judged on as many, fails it as badly (an outage of the provider both use is not the new
version's fault: the rollout neither steps up nor rolls back). Every guard holding is a *hold*.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from keel.prompts.content import ContentError
from keel.store.protocols import RolloutPlan

# metric → does a higher value mean worse?
METRICS = {"error_rate": True, "p95_ms": True, "cost_per_call": True, "feedback": False}
_OPS: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge
}  # fmt: skip
SCORE = "score:"  # score:NAME — the mean of an online eval scorer's scores (keel.evals online rules), 0..1
_GUARD = re.compile(
    r"\s*([a-z_0-9]+|score:[A-Za-z0-9_.-]{1,64})\s*(<=|>=|<|>)\s*([0-9]+(?:\.[0-9]+)?(?:e-?[0-9]+)?)\s*\Z"
)
_DURATION = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h|d)?\Z")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
MAX_GUARDS = 16
MAX_WINDOW_S = 31 * 86400.0


@dataclass(frozen=True, slots=True)
class Guard:
    metric: str
    op: str
    bound: float

    @property
    def text(self) -> str:
        return f"{self.metric}{self.op}{self.bound:g}"

    def holds(self, value: float) -> bool:
        return _OPS[self.op](value, self.bound)


def parse_guard(text: Any, field: str = "guards") -> Guard:
    m = _GUARD.match(text) if isinstance(text, str) and len(text) <= 100 else None
    if m is None or not (m.group(1) in METRICS or m.group(1).startswith(SCORE)):
        raise ContentError(
            f"A guard is METRIC OP NUMBER (e.g. 'error_rate<0.02'), METRIC one of {', '.join(METRICS)} or "
            "score:SCORER (an online eval scorer's mean, e.g. 'score:llm-rubric>=0.8'), OP one of < <= > >=.",
            field,
        )
    return Guard(m.group(1), m.group(2), float(m.group(3)))


def duration(value: Any, field: str) -> float:
    """Seconds from `90`, `30s`, `5m`, `1h`, `1d` (a bare number is seconds)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    else:
        m = _DURATION.match(value) if isinstance(value, str) else None
        if m is None:
            raise ContentError(f"'{field}' must be a duration such as 30s, 5m, 1h or 1d.", field)
        seconds = float(m.group(1)) * _UNITS[m.group(2) or "s"]
    if not 0 < seconds <= MAX_WINDOW_S:
        raise ContentError(f"'{field}' must be above 0 and at most 31 days.", field)
    return seconds


def plan_of(body: dict[str, Any], weight: float) -> RolloutPlan:
    """A plan from a JSON body (the admin API's; the CLI builds the same): guards, steps, every, window,
    min_calls. ContentError names the field at fault."""
    guards = body.get("guards") or []
    if not isinstance(guards, list) or len(guards) > MAX_GUARDS:
        raise ContentError(f"'guards' must be an array of at most {MAX_GUARDS} guards.", "guards")
    parsed = [parse_guard(g, f"guards[{i}]") for i, g in enumerate(guards)]
    steps = body.get("steps") or []
    if isinstance(steps, int | float) and not isinstance(steps, bool):
        steps = [steps]
    if not isinstance(steps, list) or len(steps) > 20:
        raise ContentError("'steps' must be an array of weights (percent), increasing.", "steps")
    last = weight
    for i, w in enumerate(steps):
        if not isinstance(w, int | float) or isinstance(w, bool) or not last < w <= 100:
            raise ContentError("Each step is a weight above the one before it, at most 100.", f"steps[{i}]")
        last = float(w)
    every = body.get("every")
    every_s = duration(every, "every") if every is not None else None
    if steps and every_s is None:
        raise ContentError("Steps need 'every': how long the guards must hold before each step.", "every")
    window_s = duration(body.get("window", "5m"), "window")
    min_calls = body.get("min_calls", 50)
    if type(min_calls) is not int or not 1 <= min_calls <= 1_000_000:
        raise ContentError("'min_calls' must be an integer from 1 to 1,000,000.", "min_calls")
    return RolloutPlan(tuple(g.text for g in parsed), tuple(float(w) for w in steps), every_s, window_s, min_calls)


@dataclass(frozen=True, slots=True)
class Figures:
    """One version's figures over the window."""

    calls: int = 0
    errors: int = 0
    p95_ms: float | None = None
    cost_usd: float = 0.0
    scores: int = 0  # feedback scores
    score_sum: float = 0.0
    evals: Mapping[str, tuple[int, float]] = field(default_factory=dict)  # online scorer → (count, mean)

    def of(self, metric: str) -> tuple[float | None, int]:
        """The metric's value and how many calls (or scores) it stands on."""
        if metric == "feedback":
            return (self.score_sum / self.scores if self.scores else None), self.scores
        if metric.startswith(SCORE):
            count, mean = self.evals.get(metric.removeprefix(SCORE), (0, 0.0))
            return (mean if count else None), count
        if not self.calls:
            return None, 0
        if metric == "error_rate":
            return self.errors / self.calls, self.calls
        if metric == "cost_per_call":
            return self.cost_usd / self.calls, self.calls
        return self.p95_ms, self.calls


@dataclass(frozen=True, slots=True)
class Verdict:
    kind: str  # breach | hold | wait
    why: str


def judge(guards: Sequence[str], min_calls: int, new: Figures, stable: Figures, names: tuple[str, str]) -> Verdict:
    """`names`: how the new and the stable version are called in the reason (e.g. 'v8', 'v7')."""
    waiting: list[str] = []
    failing: list[str] = []
    for text in guards:
        g = parse_guard(text)
        value, n = new.of(g.metric)
        if value is None or n < min_calls:
            waiting.append(f"{g.text}: {names[0]} has {n} of {min_calls}")
            continue
        if g.holds(value):
            continue
        was, m = stable.of(g.metric)
        seen = f"{names[0]} {value:.4g} over {n}" + (f", {names[1]} {was:.4g} over {m}" if was is not None else "")
        higher_worse = METRICS.get(g.metric, False)  # score:… — higher is better
        if was is not None and m >= min_calls and not g.holds(was) and (was >= value if higher_worse else was <= value):
            failing.append(f"{g.text} fails on both ({seen})")
            continue
        return Verdict("breach", f"guard {g.text} breached: {seen}")
    if failing:
        return Verdict("wait", "; ".join(failing))
    if waiting:
        return Verdict("wait", "too few calls: " + "; ".join(waiting))
    if not guards and new.calls < min_calls:
        return Verdict("wait", f"too few calls: {names[0]} has {new.calls} of {min_calls}")
    return Verdict("hold", "guards hold" if guards else "no guards")
