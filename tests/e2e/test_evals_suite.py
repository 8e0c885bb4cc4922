"""Every assertion type, each with an item that passes and one that fails, over real HTTP through the
gateway: the run is created with the admin API as a virtual key, runs as a job, and calls the fake
upstream through the pipeline. The fake answers `echo: <last user message>`, so a test's prompt decides
its output; a judge's verdict is scripted the same way (the JSON it echoes sits in the rubric, the
reference or the context it is shown). Judge calls are traces of their own, tagged and priced."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from keel.testing import FakeUpstream, Script
from tests.conftest import Gateway, base_config, until
from tests.e2e.evals_helpers import run_suite, start_run

PASS_JUDGE = json.dumps({"pass": True, "score": 0.9, "reason": "polite"})
FAIL_JUDGE = json.dumps({"pass": False, "score": 0.1, "reason": "rude"})


def case(kind: str, outcome: str, q: str, assertion: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"description": f"{kind}:{outcome}", "vars": {"q": q, **extra}, "assert": [assertion]}


def both(kind: str, good: tuple[str, dict[str, Any]], bad: tuple[str, dict[str, Any]], **extra: Any) -> list[Any]:
    return [case(kind, "pass", good[0], good[1], **extra), case(kind, "fail", bad[0], bad[1], **extra)]


CONTEXT_OK = json.dumps({"sentences": [{"sentence": "Paris is the capital", "attributed": True}]})
CONTEXT_KO = json.dumps({"sentences": [{"sentence": "a", "attributed": True}, {"sentence": "b", "attributed": False}]})
STATEMENTS_OK = json.dumps({"statements": [{"statement": "Paris is the capital", "supported": True}]})
STATEMENTS_KO = json.dumps({"statements": [{"statement": "Lyon is the capital", "supported": False}]})
QUESTIONS_OK = json.dumps({"questions": ["What is the capital of France?", "Which city is France's capital?"]})
QUESTIONS_KO = json.dumps({"questions": ["How do I bake sourdough bread?", "What temperature for a pizza oven?"]})

TESTS: list[Any] = [
    *both("equals", ("Paris", {"type": "equals", "value": "echo: Paris"}), ("Rome", {"type": "equals", "value": "echo: Paris"})),
    *both("contains", ("I love Paris", {"type": "contains", "value": "{{city}}"}), ("I love Rome", {"type": "contains", "value": "{{city}}"}), city="Paris"),
    *both("icontains", ("PARIS", {"type": "icontains", "value": "paris"}), ("Rome", {"type": "icontains", "value": "paris"})),
    *both("contains-any", ("Lyon", {"type": "contains-any", "value": ["Paris", "Lyon"]}), ("Nice", {"type": "contains-any", "value": ["Paris", "Lyon"]})),
    *both("contains-all", ("Paris Lyon", {"type": "contains-all", "value": ["Paris", "Lyon"]}), ("Paris", {"type": "contains-all", "value": ["Paris", "Lyon"]})),
    *both("regex", ("code 123", {"type": "regex", "value": r"\d{3}"}), ("code 12", {"type": "regex", "value": r"\d{3}"})),
    *both("starts-with", ("x", {"type": "starts-with", "value": "echo:"}), ("x", {"type": "starts-with", "value": "Yes"})),
    *both("not-contains", ("fine", {"type": "not-contains", "value": "sorry"}), ("sorry", {"type": "not-contains", "value": "sorry"})),
    *both("is-json", ("x", {"type": "not-is-json"}), ("x", {"type": "is-json"})),
    *both("contains-json", ('{"a": 1}', {"type": "contains-json"}), ("none", {"type": "contains-json"})),
    *both("contains-json-schema", ('{"a": 1}', {"type": "contains-json", "value": {"required": ["a"]}}), ('{"b": 1}', {"type": "contains-json", "value": {"required": ["a"]}})),
    *both("levenshtein", ("kitten", {"type": "levenshtein", "value": "echo: sitting", "threshold": 3}), ("dog", {"type": "levenshtein", "value": "echo: sitting", "threshold": 3})),
    *both("similar", ("Paris is the capital of France", {"type": "similar", "value": "The capital of France is Paris", "threshold": 0.7}), ("I like turtles", {"type": "similar", "value": "The capital of France is Paris", "threshold": 0.7})),
    *both("latency", ("x", {"type": "latency", "threshold": 60000}), ("x", {"type": "latency", "threshold": 0})),
    *both("cost", ("x", {"type": "cost", "threshold": 1}), ("x", {"type": "cost", "threshold": 0})),
    *both("python", ("ok", {"type": "python", "value": "tests.unit.eval_scorers:is_short"}), ("x" * 40, {"type": "python", "value": "tests.unit.eval_scorers:is_short"})),
    *both("llm-rubric", ("hi", {"type": "llm-rubric", "value": f"Is polite. {PASS_JUDGE}"}), ("hi", {"type": "llm-rubric", "value": f"Is polite. {FAIL_JUDGE}"})),
    *both("factuality", ("Paris", {"type": "factuality", "value": '{"category": "C", "reason": "same"}'}), ("Lyon", {"type": "factuality", "value": '{"category": "D", "reason": "disagrees"}'})),
    case("answer-relevance", "pass", QUESTIONS_OK, {"type": "answer-relevance", "threshold": 0.7}, query="What is the capital of France?"),
    case("answer-relevance", "fail", QUESTIONS_KO, {"type": "answer-relevance", "threshold": 0.7}, query="What is the capital of France?"),
    case("context-faithfulness", "pass", "Paris", {"type": "context-faithfulness"}, query=STATEMENTS_OK, context="Paris is the capital of France."),
    case("context-faithfulness", "fail", "Lyon", {"type": "context-faithfulness"}, query=STATEMENTS_KO, context="Paris is the capital of France."),
    case("context-recall", "pass", "x", {"type": "context-recall", "value": "Paris is the capital"}, context=CONTEXT_OK),
    case("context-recall", "fail", "x", {"type": "context-recall", "value": "Paris is the capital"}, context=CONTEXT_KO),
]  # fmt: skip

SUITE = {"description": "every type", "prompts": ["{{q}}"], "providers": ["openai:gpt-4o-mini"], "tests": TESTS}


@pytest.fixture
def gw(make_gateway: Any, up: FakeUpstream, tmp_path: Any) -> Gateway:
    raw = base_config(up, f"sqlite:///{tmp_path}/keel.db", tmp_path)
    raw["evals"] = {"python_modules": ["tests.unit.eval_scorers"]}  # the operator allows these scorers
    return make_gateway(raw)  # type: ignore[no-any-return]


def by_description(run: dict[str, Any]) -> dict[str, dict[str, Any]]:
    keys = {f"t{i}": t["description"] for i, t in enumerate(TESTS, 1)}
    return {keys[r["item"]]: r for r in run["results"]}


def test_every_assertion_type_passes_and_fails_through_the_gateway(gw: Gateway, up: FakeUpstream) -> None:
    run = run_suite(gw, SUITE, concurrency=4)
    assert run["status"] == "finished", run
    results = by_description(run)
    assert set(results) == {t["description"] for t in TESTS}
    kinds = {d.split(":")[0] for d in results}
    for description, r in sorted(results.items()):
        want = description.endswith(":pass")
        assert r["passed"] is want and r["error"] is None, (description, r)
        assert r["trace_id"], description
    assert len(kinds) == len(TESTS) // 2
    # every model and judge call is a trace of this run, priced; judge calls say so
    traces = [t for t in gw.traces() if (t.tags or {}).get("eval_run") == run["id"]]
    judges = [t for t in traces if (t.tags or {}).get("eval_judge")]
    assert len(judges) == 10  # llm-rubric, factuality, answer-relevance, context-* × pass and fail
    assert all(t.cost_usd and t.cost_usd > 0 for t in traces)
    assert len(traces) == len(TESTS) + len(judges)
    assert run["summary"]["pass_rate"] == 0.5


def test_json_schema_on_scripted_outputs(gw: Gateway, up: FakeUpstream) -> None:
    up.script(Script(text='{"a": 1}'), Script(text='{"b": 1}'))
    schema = {"type": "object", "required": ["a"]}
    suite = {
        "prompts": ["{{q}}"],
        "providers": ["gpt-4o-mini"],
        "tests": [{"vars": {"q": "one"}, "assert": [{"type": "json-schema", "value": schema}]},
                  {"vars": {"q": "two"}, "assert": [{"type": "json-schema", "value": schema}]}],
    }  # fmt: skip
    run = run_suite(gw, suite, concurrency=1)
    passed = {r["item"]: r["passed"] for r in run["results"]}
    assert passed == {"t1": True, "t2": False}, run["results"]


def test_tool_calls_are_checked_against_the_tools_offered(gw: Gateway) -> None:
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]  # fmt: skip
    other = [{"type": "function", "function": {"name": "book_flight", "parameters": {"type": "object"}}}]
    forced = {"type": "function", "function": {"name": "get_weather"}}
    suite = {
        "prompts": ["Weather in {{city}}?"],
        "providers": [{"id": "claude", "config": {"tools": tools, "tool_choice": forced}}],
        "tests": [
            {"vars": {"city": "Paris"}, "assert": [{"type": "is-valid-openai-tools-call"}]},
            {"vars": {"city": "Paris"}, "assert": [{"type": "is-valid-openai-tools-call", "value": other}]},
        ],
    }
    run = run_suite(gw, suite)
    passed = {r["item"]: r["passed"] for r in run["results"]}
    assert passed == {"t1": True, "t2": False}, run["results"]


def test_bad_suites_are_400_naming_the_field(gw: Gateway) -> None:
    def create(suite: dict[str, Any]) -> httpx.Response:
        return httpx.post(
            gw.url + "/api/evals/runs", json={"suite": suite}, headers={"authorization": f"Bearer {gw.key}"}
        )

    r = create({**SUITE, "tests": [{"vars": {"q": "x"}, "assert": [{"type": "javascript", "value": "1"}]}]})
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "tests[0].assert[0].type" and "javascript" in r.json()["error"]["message"]
    python = {"type": "python", "value": "builtins:exec"}  # the gateway's process: only allowed modules
    r = create({**SUITE, "tests": [{"vars": {"q": "x"}, "assert": [python]}]})
    assert r.status_code == 400 and r.json()["error"]["param"] == "tests[0].assert[0].value"
    assert "evals.python_modules" in r.json()["error"]["message"]
    r = create({**SUITE, "scenarios": []})
    assert r.status_code == 400 and "scenarios" in r.json()["error"]["message"]
    assert start_run(gw, SUITE)["status"] == "queued"


def test_a_keel_prompt_version_is_rendered_by_the_gateway(gw: Gateway, up: FakeUpstream) -> None:
    headers = {"authorization": f"Bearer {gw.key}"}
    for text in ("Reply to: {{q}}", "Answer politely: {{q}}"):
        body = {"name": "support", "messages": [{"role": "user", "content": text}], "label": "production"}
        assert httpx.post(gw.url + "/api/prompts", json=body, headers=headers).status_code == 201
    suite = {
        "prompts": ["keel:support@1", "keel:support@production"],
        "providers": ["gpt-4o-mini"],
        "tests": [{"vars": {"q": "refund?"}, "assert": [{"type": "contains", "value": "refund?"}]}],
    }
    run = run_suite(gw, suite)
    outputs = {r["item"]: r["output"] for r in run["results"]}
    assert outputs == {"t1|p1": "echo: Reply to: refund?", "t1|p2": "echo: Answer politely: refund?"}
    traces = [t for t in gw.traces() if (t.tags or {}).get("eval_run") == run["id"]]
    assert sorted(t.prompt_version or "" for t in traces) == ["support@1", "support@2"]


def test_runs_skip_the_cache_unless_asked(make_gateway: Any, up: FakeUpstream, tmp_path: Any) -> None:
    raw = base_config(up, f"sqlite:///{tmp_path}/keel.db", tmp_path)
    raw["cache"] = {"enabled": True, "ttl_s": 60, "url": "memory://"}
    gw = make_gateway(raw)
    suite = {"prompts": ["{{q}}"], "providers": [{"id": "gpt-4o-mini", "config": {"temperature": 0}}],
             "tests": [{"vars": {"q": "same"}, "assert": [{"type": "contains", "value": "same"}]}]}  # fmt: skip
    traces: dict[str, Any] = {}

    def hit() -> bool:  # a cached run: the cache is filled by the first answer (written off the reply path)
        run = run_suite(gw, suite, cache=True)
        traces.update({t.id: t for t in gw.traces()})
        return traces[run["results"][0]["trace_id"]].cache == "hit"

    assert until(hit, 20)
    asked = len(up.requests)
    run_suite(gw, suite, repeat=3, concurrency=1)
    assert len(up.requests) == asked + 3  # by default every repeat asks the model, cache or not
