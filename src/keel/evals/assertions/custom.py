"""`python` assertions: a `module:function` scorer, promptfoo's `get_assert(output, context)` contract.

The function takes the output text and a context mapping (`vars`, `expected`, `context`, `output` — the
whole `Output`) and returns a bool, a score (passes at or above the threshold, else above 0), or a mapping
with `pass`, `score` and `reason`. It may be sync or async. It is imported when the suite is parsed, so a
wrong name fails before any model is called."""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Mapping
from typing import Any

from keel.evals.assertions.model import Assertion, InvalidSuite, Output, Scoring

Result = tuple[bool, float, str]


def resolve(value: object, where: str) -> Callable[..., Any]:
    if not isinstance(value, str) or value.count(":") != 1:
        raise InvalidSuite("a python assertion's value is `module:function` (e.g. `my_scorers:is_polite`)", where)
    module_name, name = value.split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise InvalidSuite(
            f"cannot import {module_name!r}: {exc}; put it beside the suite or on PYTHONPATH", where
        ) from exc
    fn = getattr(module, name, None)
    if not callable(fn):
        raise InvalidSuite(f"{module_name!r} has no function {name!r}", where)
    return fn  # type: ignore[no-any-return]


async def python(a: Assertion, value: object, out: Output, s: Scoring) -> Result:
    fn = resolve(value, a.type)
    context = {"vars": dict(s.vars), "expected": s.expected, "context": list(s.context), "output": out}
    result = fn(out.text, context)
    if inspect.isawaitable(result):
        result = await result
    return _read(result, a)


def _read(result: object, a: Assertion) -> Result:
    if isinstance(result, bool):
        return result, 1.0 if result else 0.0, f"{a.value} returned {result}"
    if isinstance(result, int | float):
        passed = result >= a.threshold if a.threshold is not None else result > 0
        return passed, float(result), f"{a.value} scored {result:g}"
    if isinstance(result, Mapping):
        score, said = result.get("score"), result.get("pass")
        value = float(score) if isinstance(score, int | float) else (1.0 if said else 0.0)
        passed = said if isinstance(said, bool) else (value >= a.threshold if a.threshold is not None else value > 0)
        return passed, value, str(result.get("reason", f"{a.value} returned pass={passed}"))
    raise TypeError(f"{a.value} returned {type(result).__name__}; return a bool, a number or a mapping with pass/score")
