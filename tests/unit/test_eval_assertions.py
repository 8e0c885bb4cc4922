"""Assertion semantics, one output at a time: each deterministic type passes and fails, `not-` inverts,
values are templated with vars, unknown types are refused by name, and `grade` folds weights the way
promptfoo does. (The judges run end to end through the gateway in tests/e2e/test_evals_suite.py.)"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence

import pytest

from keel.evals.assertions import (
    InvalidSuite,
    Output,
    Scoring,
    Verdict,
    check,
    grade,
    needs_expected,
    parse_assertion,
)

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        },
    }
]
CALL = {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
BAD_CALL = {"id": "c2", "type": "function", "function": {"name": "get_weather", "arguments": '{"town": 1}'}}

CASES: list[tuple[dict[str, object], Output, Output]] = [
    ({"type": "equals", "value": "Paris"}, Output("Paris"), Output("paris")),
    ({"type": "equals", "value": {"a": 1}}, Output('{"a": 1}'), Output('{"a": 2}')),
    ({"type": "contains", "value": "{{city}}"}, Output("I love Paris"), Output("I love Rome")),
    ({"type": "icontains", "value": "PARIS"}, Output("paris!"), Output("rome")),
    ({"type": "contains-any", "value": ["Paris", "Lyon"]}, Output("Lyon"), Output("Nice")),
    ({"type": "contains-all", "value": "Paris, Lyon"}, Output("Paris and Lyon"), Output("Paris")),
    ({"type": "regex", "value": r"\d{3}"}, Output("code 123"), Output("code 12")),
    ({"type": "starts-with", "value": "Yes"}, Output("Yes."), Output("No.")),
    ({"type": "is-json"}, Output('{"x": 1}'), Output("{x: 1}")),
    (
        {"type": "json-schema", "value": {"type": "object", "required": ["x"]}},
        Output('{"x": 1}'),
        Output('{"y": 1}'),
    ),
    ({"type": "contains-json"}, Output('Here: ```json\n{"x": [1]}\n```'), Output("no json")),
    ({"type": "is-valid-openai-tools-call"}, Output("", tool_calls=(CALL,)), Output("", tool_calls=(BAD_CALL,))),
    ({"type": "levenshtein", "value": "kitten", "threshold": 3}, Output("sitting"), Output("dog")),
    ({"type": "latency", "threshold": 500}, Output("a", latency_ms=20), Output("a", latency_ms=900)),
    ({"type": "cost", "threshold": 0.001}, Output("a", cost_usd=0.0001), Output("a", cost_usd=0.01)),
    ({"type": "not-contains", "value": "sorry"}, Output("Sure"), Output("I'm sorry")),
    ({"type": "python", "value": "tests.unit.eval_scorers:is_short"}, Output("ok"), Output("x" * 50)),
    ({"type": "python", "value": "tests.unit.eval_scorers:graded"}, Output("great"), Output("bad")),
]


def run(spec: Mapping[str, object], out: Output, **scoring: object) -> Verdict:
    s = Scoring(vars={"city": "Paris"}, tools=TOOLS, **scoring)  # type: ignore[arg-type]
    return asyncio.run(check(parse_assertion(spec), out, s))


@pytest.mark.parametrize(("spec", "good", "bad"), CASES, ids=[str(c[0]["type"]) for c in CASES])
def test_each_type_passes_and_fails(spec: dict[str, object], good: Output, bad: Output) -> None:
    ok, ko = run(spec, good), run(spec, bad)
    assert ok.passed and ok.error is None, ok
    assert not ko.passed and ko.error is None, ko
    assert ok.score > ko.score


def test_negation_inverts_pass_and_score() -> None:
    v = run({"type": "not-regex", "value": "^No"}, Output("No way"))
    assert not v.passed and v.score == 0.0 and v.type == "not-regex"


def test_unknown_type_and_key_are_named() -> None:
    with pytest.raises(InvalidSuite, match="javascript"):
        parse_assertion({"type": "javascript", "value": "1"}, "tests[0].assert[2]")
    with pytest.raises(InvalidSuite, match=r"tests\[0\]\.assert\[1\].*valeu"):
        parse_assertion({"type": "contains", "valeu": "x"}, "tests[0].assert[1]")
    with pytest.raises(InvalidSuite, match="threshold"):
        parse_assertion({"type": "latency"})
    with pytest.raises(InvalidSuite, match="no function"):
        parse_assertion({"type": "python", "value": "tests.unit.eval_scorers:missing"})


def test_expected_output_fills_a_missing_value() -> None:
    a = parse_assertion({"type": "equals"})
    assert needs_expected(a) and not needs_expected(parse_assertion({"type": "contains", "value": "x"}))
    v = asyncio.run(check(a, Output("42"), Scoring(expected="42")))
    assert v.passed
    missing = asyncio.run(check(a, Output("42"), Scoring()))
    assert not missing.passed and missing.error


def test_judge_types_without_a_judge_are_errors_not_passes() -> None:
    v = run({"type": "llm-rubric", "value": "is polite"}, Output("hi"))
    assert not v.passed and v.error and "grader" in v.error


class ScriptedJudge:
    def __init__(self, answer: str) -> None:
        self.answer, self.calls = answer, 0

    async def __call__(self, messages: Sequence[Mapping[str, object]], *, alias: str) -> Output:
        self.calls += 1
        assert alias == "judge" and "Rubric" in str(messages[-1]["content"])
        return Output(self.answer)


def test_rubric_reads_the_judges_json_and_applies_the_threshold() -> None:
    judge = ScriptedJudge('Sure. {"reason": "polite", "pass": true, "score": 0.6}')
    v = run({"type": "llm-rubric", "value": "is polite"}, Output("hi"), judge=judge, grader="judge")
    assert v.passed and v.score == 0.6 and judge.calls == 1
    strict = run({"type": "llm-rubric", "value": "x", "threshold": 0.8}, Output("hi"), judge=judge, grader="judge")
    assert not strict.passed


def test_grade_weights_and_test_threshold() -> None:
    verdicts = [Verdict("a", True, 1.0, "", 3.0), Verdict("b", False, 0.0, "", 1.0), Verdict("c", False, 0.0, "", 0.0)]
    assert grade(verdicts) == (False, 0.75)
    assert grade(verdicts, threshold=0.7) == (True, 0.75)
    assert grade(verdicts, threshold=0.8) == (False, 0.75)
    assert grade([Verdict("a", True, 1.0, ""), Verdict("c", False, 0.0, "", 0.0)]) == (True, 1.0)


def test_levenshtein_is_exact_within_its_bound() -> None:
    from keel.evals.assertions.deterministic import levenshtein_distance

    assert levenshtein_distance("kitten", "sitting", 5) == 3
    assert levenshtein_distance("kitten", "sitting", 2) == 3  # over the bound: bound + 1
    assert levenshtein_distance("", "abc", 5) == 3
    assert levenshtein_distance("a" * 20_000, "b" * 20_000, 5) == 6  # banded: fast on long outputs


def test_a_catastrophic_regex_fails_its_verdict_in_bounded_time() -> None:
    v = run({"type": "regex", "value": r"^(a|aa)+$"}, Output("a" * 40 + "!"))
    assert not v.passed and v.error and "Timeout" in v.error
