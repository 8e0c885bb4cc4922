"""Assertions: promptfoo's assertion types, scored against one model output.

`parse_assertion` reads one `assert` entry (`type`, `value`, `threshold`, `weight`, `metric`, `provider`;
`not-<type>` negates); unknown types and keys are `InvalidSuite` errors naming them. `check` scores an
output: the value is templated with the test's vars (`{{ name }}`, like promptfoo's), a type with no value
falls back to the item's expected output where that makes sense (`needs_expected`), and a negated type
inverts the pass and the score. `grade` folds a test's verdicts into a pass and a weighted score the way
promptfoo does. `check` never raises for a bad answer or an unreachable judge: the verdict fails with
`error` set.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence

from keel.evals.assertions import custom, deterministic, judged
from keel.evals.assertions.model import Assertion, Embed, InvalidSuite, Judge, Output, Scoring, Verdict

__all__ = [
    "TYPES",
    "Assertion",
    "Embed",
    "InvalidSuite",
    "Judge",
    "Output",
    "Scoring",
    "Verdict",
    "check",
    "grade",
    "needs_expected",
    "needs_judge",
    "parse_assertion",
    "template",
]

Result = tuple[bool, float, str]
TYPES = frozenset(deterministic.CHECKS) | frozenset(judged.CHECKS) | {"python"}
KEYS = frozenset({"type", "value", "threshold", "weight", "metric", "provider"})
EXPECTED_FALLBACK = deterministic.EXPECTED_FALLBACK | judged.EXPECTED_FALLBACK
NEEDS_VALUE = deterministic.NEEDS_VALUE | judged.NEEDS_VALUE | {"python"}
OFF_LOOP = frozenset({"regex"})  # a suite's pattern may take up to its timeout: off the event loop
_VAR = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


def parse_assertion(obj: Mapping[str, object], where: str = "assert") -> Assertion:
    """One assertion from its suite form; `where` is its path in the suite, used in errors."""
    if not isinstance(obj, Mapping):
        raise InvalidSuite("an assertion is a mapping with a `type`", where)
    unknown = sorted(set(obj) - KEYS)
    if unknown:
        raise InvalidSuite(f"unknown key(s) {unknown}; an assertion takes {sorted(KEYS)}", where)
    name = obj.get("type")
    if not isinstance(name, str):
        raise InvalidSuite("`type` is required", f"{where}.type")
    negate = name.startswith("not-")
    kind = name[4:] if negate else name
    if kind not in TYPES:
        raise InvalidSuite(f"unknown assertion type {name!r}; supported: {', '.join(sorted(TYPES))}", f"{where}.type")
    threshold = _number(obj.get("threshold"), f"{where}.threshold")
    weight = _number(obj.get("weight", 1.0), f"{where}.weight")
    if weight is None or weight < 0:
        raise InvalidSuite("`weight` is a number ≥ 0", f"{where}.weight")
    if kind in deterministic.NEEDS_THRESHOLD and threshold is None:
        raise InvalidSuite(f"{kind} needs a `threshold`", f"{where}.threshold")
    if kind == "json-schema" and obj.get("value") is None:
        raise InvalidSuite("json-schema needs the schema as its `value`", f"{where}.value")
    if kind == "python":
        custom.resolve(obj.get("value"), f"{where}.value")
    provider, metric = obj.get("provider"), obj.get("metric")
    return Assertion(
        type=name,
        kind=kind,
        negate=negate,
        value=obj.get("value"),
        threshold=threshold,
        weight=weight,
        metric=metric if isinstance(metric, str) else None,
        provider=provider if isinstance(provider, str) else None,
    )


def _number(value: object, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidSuite(f"expected a number, got {value!r}", where)
    return float(value)


def needs_expected(a: Assertion) -> bool:
    """True when the assertion can only be scored against an item's expected output."""
    return a.value is None and a.kind in EXPECTED_FALLBACK


def needs_judge(a: Assertion) -> bool:
    return a.kind in judged.JUDGED


def template(value: object, variables: Mapping[str, object]) -> object:
    """`{{ name }}` in strings (inside lists and mappings too) replaced by the var's text; unknown names
    become empty, as in promptfoo's nunjucks."""
    if isinstance(value, str):
        return _VAR.sub(lambda m: _as_text(variables.get(m.group(1), "")), value) if "{{" in value else value
    if isinstance(value, list):
        return [template(v, variables) for v in value]
    if isinstance(value, Mapping):
        return {k: template(v, variables) for k, v in value.items()}
    return value


def _as_text(value: object) -> str:
    import json

    return value if isinstance(value, str) else json.dumps(value)


Check = Callable[[Assertion, object, Output, Scoring], Result | Awaitable[Result]]
_SYNC: Mapping[str, Callable[[Assertion, object, Output, Scoring], Result]] = deterministic.CHECKS
_ASYNC: Mapping[str, Callable[[Assertion, object, Output, Scoring], Awaitable[Result]]] = {
    **judged.CHECKS,
    "python": custom.python,
}


async def check(a: Assertion, output: Output, scoring: Scoring) -> Verdict:
    """Score one output; failures to score are verdicts with `error` set, never exceptions."""
    value = template(a.value, scoring.vars) if a.value is not None else scoring.expected
    if value is None and a.kind in NEEDS_VALUE:
        return _errored(a, "no value and the item has no expected output")
    try:
        sync = _SYNC.get(a.kind)
        if sync is None:
            passed, score, reason = await _ASYNC[a.kind](a, value, output, scoring)
        elif a.kind in OFF_LOOP:
            passed, score, reason = await asyncio.to_thread(sync, a, value, output, scoring)
        else:
            passed, score, reason = sync(a, value, output, scoring)
    except judged.Unscorable as exc:
        return _errored(a, str(exc))
    except Exception as exc:  # a scorer's own bug (a python assertion, a bad regex) fails this verdict only
        return _errored(a, f"{type(exc).__name__}: {exc}")
    if a.negate:
        passed, score, reason = not passed, 1.0 - score, f"not: {reason}"
    return Verdict(a.type, passed, max(0.0, min(1.0, score)), reason, a.weight, a.metric)


def _errored(a: Assertion, message: str) -> Verdict:
    return Verdict(a.type, False, 0.0, f"error: {message}", a.weight, a.metric, error=message)


def fast_path(a: Assertion) -> Callable[[Assertion, object, Output, Scoring], Result] | None:
    """The sync check of a deterministic type (benchmarks and bulk scoring skip the coroutine)."""
    return _SYNC.get(a.kind)


def grade(verdicts: Sequence[Verdict], threshold: float | None = None) -> tuple[bool, float]:
    """A test's pass and score: the weighted mean of scores (weight 0 reports only). Without a threshold
    every weighted assertion must pass; with one, the score must reach it (promptfoo's rule)."""
    weighed = [v for v in verdicts if v.weight > 0]
    total = sum(v.weight for v in weighed)
    score = sum(v.score * v.weight for v in weighed) / total if total else 1.0
    if any(v.error for v in weighed):
        return False, score
    if threshold is not None:
        return score >= threshold, score
    return all(v.passed for v in weighed), score
