"""Assertions that need nothing but the output: string matches, JSON, tool calls, edit distance, latency
and cost. Each returns (passed, score, reason) before any `not-` negation; the score is 1.0 or 0.0
unless the type measures something (levenshtein reports the distance's closeness)."""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Mapping
from typing import Any

from keel.evals.assertions.model import Assertion, Output, Scoring

Result = tuple[bool, float, str]
REGEX_TIMEOUT_S = 1.0
MAX_JSON_SCAN = 64  # JSON candidates tried per output by contains-json: bounds work on a hostile output


def _bool(passed: bool, reason: str) -> Result:
    return passed, 1.0 if passed else 0.0, reason


def _text(value: object) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _items(value: object) -> list[str]:
    """promptfoo's list values: a YAML list, or a comma-separated string."""
    if isinstance(value, list | tuple):
        return [_text(v) for v in value]
    return [part.strip() for part in _text(value).split(",") if part.strip()]


def equals(a: Assertion, value: object, out: Output, s: Scoring) -> Result:
    if isinstance(value, dict | list):
        try:
            same = json.loads(out.text) == value
        except ValueError:
            same = False
        return _bool(same, "output equals the expected JSON" if same else "output differs from the expected JSON")
    same = out.text == _text(value)
    return _bool(same, "output equals the expected value" if same else f"expected {_text(value)!r}")


def contains(a: Assertion, value: object, out: Output, s: Scoring) -> Result:
    found = _text(value) in out.text
    return _bool(found, f"{'found' if found else 'missing'}: {_text(value)!r}")


def icontains(a: Assertion, value: object, out: Output, s: Scoring) -> Result:
    found = _text(value).lower() in out.text.lower()
    return _bool(found, f"{'found' if found else 'missing'} (any case): {_text(value)!r}")


def _many(fold: bool, every: bool) -> Callable[[Assertion, object, Output, Scoring], Result]:
    def check(a: Assertion, value: object, out: Output, s: Scoring) -> Result:
        text = out.text.lower() if fold else out.text
        wanted = _items(value)
        hits = [w for w in wanted if (w.lower() if fold else w) in text]
        missing = [w for w in wanted if w not in hits]
        passed = not missing if every else bool(hits)
        reason = f"missing {missing!r}" if every and missing else f"found {hits!r}" if hits else f"none of {wanted!r}"
        return _bool(passed, reason)

    return check


def regex(a: Assertion, value: object, out: Output, s: Scoring) -> Result:
    """A suite's pattern runs with a time bound (the `regex` engine's timeout): a catastrophic pattern
    fails this verdict instead of stalling the worker's event loop."""
    found = _compiled(_text(value)).search(out.text, timeout=REGEX_TIMEOUT_S, concurrent=True) is not None
    return _bool(found, f"{'matches' if found else 'does not match'} /{_text(value)}/")


@functools.lru_cache(maxsize=256)
def _compiled(pattern: str) -> Any:
    import regex as engine  # type: ignore[import-untyped]

    return engine.compile(pattern)


def starts_with(a: Assertion, value: object, out: Output, s: Scoring) -> Result:
    ok = out.text.startswith(_text(value))
    return _bool(ok, f"{'starts' if ok else 'does not start'} with {_text(value)!r}")


def _schema_errors(doc: object, schema: object) -> str | None:
    import jsonschema  # type: ignore[import-untyped]

    if not isinstance(schema, Mapping):
        return "the schema must be an object"
    error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(dict(schema)).iter_errors(doc))
    return None if error is None else f"schema: {error.message} at {'/'.join(map(str, error.absolute_path)) or '.'}"


def is_json(a: Assertion, value: object, out: Output, s: Scoring) -> Result:
    try:
        doc = json.loads(out.text)
    except ValueError as exc:
        return _bool(False, f"not JSON: {exc}")
    problem = None if value is None else _schema_errors(doc, value)
    return _bool(problem is None, problem or "valid JSON")


def json_candidates(text: str) -> list[object]:
    """The JSON objects and arrays found inside a text (fenced or inline), in order, at most MAX_JSON_SCAN."""
    decoder, tried = json.JSONDecoder(), 0
    found: list[tuple[object, int]] = []
    for match in re.finditer(r"[{\[]", text):
        if tried >= MAX_JSON_SCAN:
            break
        if found and match.start() < found[-1][1]:
            continue
        tried += 1
        try:
            doc, end = decoder.raw_decode(text, match.start())
        except ValueError:
            continue
        found.append((doc, end))
    return [doc for doc, _ in found]


def contains_json(a: Assertion, value: object, out: Output, s: Scoring) -> Result:
    docs = json_candidates(out.text)
    if not docs:
        return _bool(False, "no JSON found in the output")
    if value is None:
        return _bool(True, "contains JSON")
    problems = [_schema_errors(doc, value) for doc in docs]
    ok = any(p is None for p in problems)
    return _bool(ok, "contains JSON matching the schema" if ok else str(problems[0]))


def tools_call(a: Assertion, value: object, out: Output, s: Scoring) -> Result:
    tools = value if isinstance(value, list) else list(s.tools)
    if not out.tool_calls:
        return _bool(False, "no tool calls in the output")
    offered = {_tool_name(t): t for t in tools if isinstance(t, Mapping)}
    for call in out.tool_calls:
        problem = _tool_call_problem(call, offered)
        if problem:
            return _bool(False, problem)
    return _bool(True, f"{len(out.tool_calls)} valid tool call(s)")


def _tool_name(tool: Mapping[str, Any]) -> str:
    fn = tool.get("function")
    return str(fn.get("name")) if isinstance(fn, Mapping) else str(tool.get("name"))


def _tool_call_problem(call: Mapping[str, object], offered: Mapping[str, Mapping[str, Any]]) -> str | None:
    fn = call.get("function")
    if not isinstance(fn, Mapping) or not isinstance(fn.get("name"), str):
        return "a tool call without function.name"
    name = str(fn["name"])
    try:
        args = fn.get("arguments")
        doc = json.loads(args) if isinstance(args, str) else args
    except ValueError:
        return f"tool call {name!r}: arguments are not JSON"
    if not offered:
        return None
    if name not in offered:
        return f"tool {name!r} was not offered (offered: {sorted(offered)})"
    spec = offered[name].get("function", offered[name])
    schema = spec.get("parameters") if isinstance(spec, Mapping) else None
    problem = _schema_errors(doc, schema) if schema is not None else None
    return f"tool call {name!r}: {problem}" if problem else None


def levenshtein_distance(a: str, b: str, bound: int) -> int:
    """The edit distance if it is at most `bound`, else `bound + 1`: only the diagonal band |i - j| ≤ bound
    is computed, O(len · bound), so long outputs cost little."""
    if abs(len(a) - len(b)) > bound:
        return bound + 1
    if len(a) < len(b):
        a, b = b, a
    over = bound + 1
    previous = [j if j <= bound else over for j in range(len(b) + 1)]
    for i in range(1, len(a) + 1):
        current = [i if i <= bound else over] + [over] * len(b)
        for j in range(max(1, i - bound), min(len(b), i + bound) + 1):
            cost = previous[j - 1] + (a[i - 1] != b[j - 1])
            current[j] = min(over, previous[j] + 1, current[j - 1] + 1, cost)
        previous = current
    return min(previous[-1], over)


def levenshtein(a: Assertion, value: object, out: Output, s: Scoring) -> Result:
    limit = 5.0 if a.threshold is None else a.threshold
    distance = levenshtein_distance(out.text, _text(value), int(limit))
    longest = max(len(out.text), len(_text(value)), 1)
    shown = f"{distance}" if distance <= limit else f"over {int(limit)}"
    return distance <= limit, 1.0 - distance / longest, f"edit distance {shown} (at most {limit:g})"


def latency(a: Assertion, value: object, out: Output, s: Scoring) -> Result:
    limit = float(a.threshold or 0.0)
    if out.cached:
        return _bool(False, "a cached answer has no latency to judge")
    return _bool(out.latency_ms <= limit, f"latency {out.latency_ms:.0f} ms (at most {limit:g} ms)")


def cost(a: Assertion, value: object, out: Output, s: Scoring) -> Result:
    limit = float(a.threshold or 0.0)
    return _bool(out.cost_usd <= limit, f"cost ${out.cost_usd:.6f} (at most ${limit:g})")


CHECKS: dict[str, Callable[[Assertion, object, Output, Scoring], Result]] = {
    "equals": equals,
    "contains": contains,
    "icontains": icontains,
    "contains-any": _many(fold=False, every=False),
    "contains-all": _many(fold=False, every=True),
    "icontains-any": _many(fold=True, every=False),
    "icontains-all": _many(fold=True, every=True),
    "regex": regex,
    "starts-with": starts_with,
    "is-json": is_json,
    "json-schema": is_json,
    "contains-json": contains_json,
    "is-valid-openai-tools-call": tools_call,
    "levenshtein": levenshtein,
    "latency": latency,
    "cost": cost,
}
EXPECTED_FALLBACK = frozenset({"equals", "levenshtein"})  # value defaults to the item's expected output
NEEDS_VALUE = frozenset(CHECKS) - {"is-json", "contains-json", "is-valid-openai-tools-call", "latency", "cost"}
NEEDS_THRESHOLD = frozenset({"latency", "cost"})
