"""Routing: strategies, task rules, the classifier hook, data residency and the explanation."""

from __future__ import annotations

import json
import random
from collections import Counter
from typing import Any

import pytest

from keel.config import parse
from keel.errors import ConfigError, InvalidRequest, ModelNotFound, PermissionDenied
from keel.gateway.health import HealthBook
from keel.gateway.routing import Router, estimate_prompt_tokens, needs
from keel.providers.prices import PriceBook
from keel.types import ChatRequest, EmbeddingRequest, Message, Principal, RoutePlan, ToolCall

PROVIDERS = {
    "us": {"type": "simulated", "region": "us"},
    "eu": {"type": "simulated", "region": "eu"},
    "eu2": {"type": "simulated", "region": "eu-west"},
    "local": {"type": "simulated"},  # no region
}
TOOL = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}
ANYONE = Principal(tenant="acme", key_id="k1")
EU_ONLY = Principal(tenant="acme", key_id="k1", regions=("eu", "eu-west"))


def classify(request: ChatRequest, *, feature: str | None, tier: str | None) -> str | None:
    """The classifier hook the tests configure as "tests.e2e.test_routing:classify"."""
    if feature == "boom":
        raise RuntimeError("classifier exploded")
    return {"hard": "big", "nowhere": "missing", "forbidden": "secret"}.get(feature or "")


NOT_CALLABLE = 42


def router(models: dict[str, Any], health: HealthBook | None = None, seed: int = 7) -> Router:
    cfg = parse({"providers": PROVIDERS, "models": models}, env={})
    regions = {name: p.region for name, p in cfg.providers.items()}
    return Router(cfg.models, regions, PriceBook.bundled(), health or HealthBook(), rng=random.Random(seed))


def targets(*specs: str, **extra: Any) -> list[dict[str, Any]]:
    """'us/gpt-4o' → a target row; keyword extras apply to every row."""
    return [{"provider": s.split("/")[0], "model": s.split("/")[1], **extra} for s in specs]


def chat(text: str = "hello", **kw: Any) -> ChatRequest:
    return ChatRequest(model="m", messages=(Message("user", text),), **kw)


def keys(plan: RoutePlan) -> list[str]:
    return [t.key for t in plan.targets]


def plan(r: Router, alias: str = "m", request: Any = None, **kw: Any) -> RoutePlan:
    kw.setdefault("principal", ANYONE)
    kw.setdefault("allowed", None)
    return r.plan(alias, request or chat(), kw.pop("principal"), kw.pop("allowed"), **kw)


# ---- estimates and needs ------------------------------------------------------------------------


def test_estimate_counts_string_content_and_framing() -> None:
    request = ChatRequest(model="m", messages=(Message("system", "a" * 40), Message("user", "b" * 80)))
    assert estimate_prompt_tokens(request) == 120 // 4 + 2 * 3


def test_estimate_counts_text_parts_but_not_images_and_tool_calls() -> None:
    parts = [{"type": "text", "text": "x" * 20}, {"type": "image_url", "image_url": {"url": "data:" + "z" * 999}}]
    call = ToolCall(id="c1", name="lookup", arguments='{"q":"a"}')  # 6 + 9 characters
    request = ChatRequest(model="m", messages=(Message("user", parts), Message("assistant", None, tool_calls=(call,))))
    assert estimate_prompt_tokens(request) == (20 + 15) // 4 + 2 * 3


def test_estimate_counts_tool_definitions_as_json() -> None:
    bare = estimate_prompt_tokens(chat("q" * 400))
    with_tools = estimate_prompt_tokens(chat("q" * 400, tools=(TOOL,)))
    assert with_tools - bare == pytest.approx(len(json.dumps(TOOL, separators=(",", ":"))) / 4, abs=1)


def test_estimate_of_embeddings_counts_inputs() -> None:
    assert estimate_prompt_tokens(EmbeddingRequest(model="e", inputs=("a" * 40, "b" * 44))) == 21


def test_needs() -> None:
    image = Message("user", [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}])
    assert needs(chat()) == frozenset()
    assert needs(chat(tools=(TOOL,))) == {"tools"}
    assert needs(chat(response_format={"type": "json_object"})) == {"json"}
    assert needs(ChatRequest(model="m", messages=(image,), tools=(TOOL,))) == {"tools", "vision"}
    assert needs(EmbeddingRequest(model="e", inputs=("a",))) == frozenset()


# ---- strategies ---------------------------------------------------------------------------------


def test_ordered_keeps_config_order() -> None:
    r = router({"m": {"targets": targets("eu/b", "us/a", "local/c")}})
    p = plan(r)
    assert keys(p) == ["eu/b", "us/a", "local/c"]
    assert p.reason == "strategy: ordered"


def test_weighted_order_follows_weights_over_many_plans() -> None:
    rows = targets("us/a", "us/b", "us/c")
    for row, weight in zip(rows, (1, 3, 6), strict=True):
        row["weight"] = weight
    r = router({"m": {"strategy": "weighted", "targets": rows}})
    firsts = Counter(keys(plan(r))[0] for _ in range(10_000))
    assert firsts["us/a"] / 10_000 == pytest.approx(0.1, abs=0.03)
    assert firsts["us/b"] / 10_000 == pytest.approx(0.3, abs=0.03)
    assert firsts["us/c"] / 10_000 == pytest.approx(0.6, abs=0.03)
    assert all(sorted(keys(plan(r))) == ["us/a", "us/b", "us/c"] for _ in range(100))  # without replacement


def test_weighted_is_deterministic_with_a_seeded_rng() -> None:
    models = {"m": {"strategy": "weighted", "targets": targets("us/a", "us/b", "us/c")}}
    first, second = router(models, seed=3), router(models, seed=3)
    assert [keys(plan(first)) for _ in range(20)] == [keys(plan(second)) for _ in range(20)]


def test_latency_puts_unmeasured_first_then_fastest() -> None:
    health = HealthBook()
    health.observe("us/slow", True, 0.300, 0.050)
    health.observe("us/fast", True, 0.100, 0.090)
    r = router({"m": {"strategy": "latency", "targets": targets("us/slow", "us/fast", "us/new")}}, health)
    p = plan(r)
    assert keys(p) == ["us/new", "us/fast", "us/slow"]
    assert p.explain["candidates"] == [
        {"target": "us/new", "score": None},
        {"target": "us/fast", "score": 100.0},
        {"target": "us/slow", "score": 300.0},
    ]


def test_latency_uses_time_to_first_token_when_streaming() -> None:
    health = HealthBook()
    health.observe("us/slow", True, 0.300, 0.050)
    health.observe("us/fast", True, 0.100, 0.090)
    r = router({"m": {"strategy": "latency", "targets": targets("us/slow", "us/fast")}}, health)
    assert keys(plan(r, request=chat(stream=True))) == ["us/slow", "us/fast"]


def test_latency_ties_keep_config_order_and_failing_targets_go_last() -> None:
    health = HealthBook()
    for key in ("us/a", "us/b", "us/c"):
        health.observe(key, True, 0.1, None)
    for _ in range(5):
        health.observe("us/a", False, None, None)
    r = router({"m": {"strategy": "latency", "targets": targets("us/a", "us/b", "us/c")}}, health)
    assert keys(plan(r)) == ["us/b", "us/c", "us/a"]


def test_cost_orders_cheapest_first_and_unpriced_last() -> None:
    r = router({"m": {"strategy": "cost", "targets": targets("us/my-local", "us/gpt-4o", "us/gpt-4o-mini")}})
    p = plan(r, request=chat("x" * 4000, max_tokens=100))
    assert keys(p) == ["us/gpt-4o-mini", "us/gpt-4o", "us/my-local"]
    scores = [c["score"] for c in p.explain["candidates"]]
    tokens = p.explain["prompt_tokens"]
    assert scores[0] == pytest.approx((tokens * 0.15 + 100 * 0.60) / 1e6)
    assert scores[1] > scores[0] and scores[2] is None


def test_cost_skips_a_cheaper_target_without_the_needed_capability() -> None:
    rows = targets("us/gpt-4o-mini", "us/gpt-4o")
    rows[0]["capabilities"] = ["json"]
    r = router({"m": {"strategy": "cost", "targets": rows}})
    assert keys(plan(r)) == ["us/gpt-4o-mini", "us/gpt-4o"]
    p = plan(r, request=chat(tools=(TOOL,)))
    assert keys(p) == ["us/gpt-4o"]
    assert p.explain["skipped"] == [{"target": "us/gpt-4o-mini", "why": "lacks tools"}]


def test_cost_skips_a_cheaper_target_whose_context_window_is_too_small() -> None:
    rows = targets("us/gpt-4o-mini", "us/gpt-4o")
    rows[0]["context_window"] = 1000
    r = router({"m": {"strategy": "cost", "targets": rows}})
    assert keys(plan(r, request=chat("x" * 3000))) == ["us/gpt-4o-mini", "us/gpt-4o"]
    p = plan(r, request=chat("x" * 8000))
    assert keys(p) == ["us/gpt-4o"]
    assert p.explain["skipped"] == [{"target": "us/gpt-4o-mini", "why": "context window 1000 < ~2003 tokens"}]
    # the output the caller asks for must fit too
    assert keys(plan(r, request=chat("x" * 3000, max_tokens=500))) == ["us/gpt-4o"]


def test_cost_demotes_an_unhealthy_cheap_target() -> None:
    health = HealthBook()
    for ok in (False, False, False, True, False):
        health.observe("us/gpt-4o-mini", ok, 0.1, None)
    r = router({"m": {"strategy": "cost", "targets": targets("us/gpt-4o-mini", "us/gpt-4o", "us/my-local")}}, health)
    p = plan(r)
    assert keys(p) == ["us/gpt-4o", "us/my-local", "us/gpt-4o-mini"]
    assert p.explain["candidates"][-1]["unhealthy"] is True


def test_cost_needs_five_calls_before_calling_a_target_unhealthy() -> None:
    health = HealthBook()
    for _ in range(4):
        health.observe("us/gpt-4o-mini", False, None, None)
    r = router({"m": {"strategy": "cost", "targets": targets("us/gpt-4o", "us/gpt-4o-mini")}}, health)
    assert keys(plan(r)) == ["us/gpt-4o-mini", "us/gpt-4o"]


def test_no_capable_target_is_a_400_naming_the_parameter() -> None:
    r = router({"m": {"targets": targets("us/a", "eu/b", capabilities=["tools"])}})
    with pytest.raises(InvalidRequest) as exc:
        plan(r, request=chat(response_format={"type": "json_object"}))
    assert exc.value.param == "response_format"
    assert exc.value.message == "no target of alias 'm' supports json"


def test_no_target_with_a_large_enough_window_is_a_400() -> None:
    r = router({"m": {"targets": targets("us/a", context_window=10)}})
    with pytest.raises(InvalidRequest, match=r"can serve this request \(us/a context window 10") as exc:
        plan(r, request=chat("x" * 400))
    assert exc.value.param == "messages"


def test_unservable_alias_with_fallbacks_returns_no_targets_and_says_why() -> None:
    r = router(
        {
            "m": {"targets": targets("us/a", capabilities=["json"]), "fallbacks": ["big"], "static_answer": "later"},
            "big": {"targets": targets("us/b")},
        }
    )
    p = plan(r, request=chat(tools=(TOOL,)))
    assert p.targets == ()
    assert p.fallbacks == ("big",) and p.static_answer == "later"
    assert p.explain["unservable"] == "no target of alias 'm' supports tools; trying fallbacks"


# ---- aliases and task rules ---------------------------------------------------------------------

MEDIUM = "a question " * 20  # 58 tokens: no size rule fires
RULED = {
    "m": {
        "targets": targets("us/small"),
        "rules": [
            {"use": "big", "min_prompt_tokens": 1000},
            {"use": "tiny", "max_prompt_tokens": 30, "tools": False},
            {"use": "agent", "tools": True},
            {"use": "support", "feature": "support-bot"},
            {"use": "big", "tier": "premium"},
        ],
    },
    "big": {"targets": targets("us/large"), "rules": [{"use": "tiny"}]},
    "tiny": {"targets": targets("us/tiny")},
    "agent": {"targets": targets("us/agent")},
    "support": {"targets": targets("us/support")},
}


def test_unknown_or_forbidden_alias_is_a_404_listing_allowed_aliases() -> None:
    r = router(RULED)
    assert r.aliases(None) == ["m", "big", "tiny", "agent", "support"]
    assert r.aliases(("tiny", "m", "gone")) == ["m", "tiny"]
    with pytest.raises(ModelNotFound, match="Allowed models: m, tiny"):
        plan(r, "big", allowed=("tiny", "m"))
    with pytest.raises(ModelNotFound):
        plan(r, "nope")


@pytest.mark.parametrize(
    ("request_", "attribution", "alias", "reason"),
    [
        (chat("x" * 4000), {}, "big", "rules[0] → big"),
        (chat("hi"), {}, "tiny", "rules[1] → tiny"),
        (chat(MEDIUM, tools=(TOOL,)), {}, "agent", "rules[2] → agent"),
        (chat(MEDIUM), {"feature": "support-bot"}, "support", "rules[3] → support"),
        (chat(MEDIUM), {"tier": "premium"}, "big", "rules[4] → big"),
        (chat(MEDIUM), {"feature": "other", "tier": "free"}, "m", "strategy: ordered"),
    ],
)
def test_each_rule_condition(request_: ChatRequest, attribution: dict[str, str], alias: str, reason: str) -> None:
    p = plan(router(RULED), request=request_, **attribution)
    assert (p.alias, p.reason) == (alias, reason)
    assert p.explain["requested"] == "m" and p.explain["alias"] == alias


def test_a_rule_needs_every_condition_and_a_routed_alias_rules_are_not_followed() -> None:
    p = plan(router(RULED), request=chat("x" * 4000, tools=(TOOL,)))
    assert p.alias == "big"  # big's own rule (always → tiny) is not a second hop
    p = plan(router(RULED), request=chat("hi", tools=(TOOL,)))  # rules[1] wants no tools
    assert p.alias == "agent"
    assert {"rule": "rules[1] → tiny", "why": "tools present"} in p.explain["skipped"]


def test_follow_rules_false_plans_the_alias_itself() -> None:
    p = plan(router(RULED), request=chat("x" * 4000), follow_rules=False)
    assert (p.alias, p.reason, keys(p)) == ("m", "strategy: ordered", ["us/small"])


def test_a_rule_to_an_alias_the_key_may_not_use_is_skipped_and_explained() -> None:
    p = plan(router(RULED), request=chat("x" * 4000), tier="premium", allowed=("m", "tiny"))
    assert p.alias == "m"
    assert p.explain["skipped"][0] == {"rule": "rules[0] → big", "why": "alias 'big' is not allowed for this key"}
    assert p.explain["skipped"][4] == {"rule": "rules[4] → big", "why": "alias 'big' is not allowed for this key"}


def test_unmatched_rules_say_which_condition_failed() -> None:
    p = plan(router(RULED), request=chat(MEDIUM), feature="x")
    assert p.explain["rule"] is None
    assert [s["why"] for s in p.explain["skipped"]] == [
        "prompt_tokens 58 < min_prompt_tokens 1000",
        "prompt_tokens 58 > max_prompt_tokens 30",
        "no tools",
        "feature 'x' is not 'support-bot'",
        "tier None is not 'premium'",
    ]


# ---- the classifier hook ------------------------------------------------------------------------

CLASSIFIED = {
    "m": {"targets": targets("us/small"), "classifier": "tests.e2e.test_routing:classify", "rules": [{"use": "big"}]},
    "big": {"targets": targets("us/large")},
    "secret": {"targets": targets("us/secret")},
}


def test_classifier_routes_when_no_rule_fires() -> None:
    models = {**CLASSIFIED, "m": {**CLASSIFIED["m"], "rules": [{"use": "secret", "feature": "never"}]}}
    p = plan(router(models), feature="hard")
    assert (p.alias, p.reason, keys(p)) == ("big", "classifier → big", ["us/large"])
    assert plan(router(models), feature="easy").explain["skipped"][-1] == {"rule": "classifier", "why": "returned None"}


def test_a_rule_that_fires_wins_over_the_classifier() -> None:
    assert plan(router(CLASSIFIED), feature="forbidden").reason == "rules[0] → big"


@pytest.mark.parametrize(
    ("feature", "why"),
    [
        ("boom", "raised RuntimeError: classifier exploded"),
        ("nowhere", "unknown alias 'missing'"),
        ("forbidden", "alias 'secret' is not allowed for this key"),
    ],
)
def test_classifier_failures_are_explained_and_ignored(feature: str, why: str) -> None:
    models = {**CLASSIFIED, "m": {**CLASSIFIED["m"], "rules": []}}
    p = plan(router(models), feature=feature, allowed=("m", "big"))
    assert (p.alias, p.reason) == ("m", "strategy: ordered")
    assert p.explain["skipped"] == [{"rule": "classifier", "why": why}]


@pytest.mark.parametrize(
    "spec", ["tests.no_such_module:classify", "tests.e2e.test_routing:nope", "tests.e2e.test_routing:NOT_CALLABLE"]
)
def test_a_classifier_that_cannot_be_imported_is_a_config_error(spec: str) -> None:
    with pytest.raises(ConfigError) as exc:
        router({"m": {"targets": targets("us/a"), "classifier": spec}})
    assert [i.path for i in exc.value.issues] == ["models.m.classifier"]


# ---- data residency ----------------------------------------------------------------------------


def test_residency_keeps_only_targets_in_the_tenants_regions() -> None:
    r = router({"m": {"targets": targets("us/a", "eu/b", "local/c", "eu2/d")}})
    assert keys(plan(r)) == ["us/a", "eu/b", "local/c", "eu2/d"]
    p = plan(r, principal=EU_ONLY)
    assert keys(p) == ["eu/b", "eu2/d"]
    assert p.explain["regions"] == ["eu", "eu-west"]
    assert p.explain["skipped"] == [
        {"target": "us/a", "why": "region us not in tenant's [eu, eu-west]"},
        {"target": "local/c", "why": "region unset not in tenant's [eu, eu-west]"},
    ]


def test_residency_fails_closed_with_a_403_naming_the_regions() -> None:
    r = router(
        {
            "gpt-4o": {"targets": targets("us/gpt-4o", "local/gpt-4o"), "fallbacks": ["eu"]},
            "eu": {"targets": targets("eu/x")},
        }
    )
    with pytest.raises(PermissionDenied) as exc:
        plan(r, "gpt-4o", principal=Principal("acme", "k1", regions=("eu",)))
    assert exc.value.status == 403
    assert exc.value.message == "tenant 'acme' is restricted to regions eu; no target of alias 'gpt-4o' is in them"


def test_residency_applies_before_capabilities() -> None:
    rows = targets("us/a", "eu/b")
    rows[1]["capabilities"] = ["json"]
    r = router({"m": {"targets": rows}})
    with pytest.raises(InvalidRequest, match="supports tools"):
        plan(r, request=chat(tools=(TOOL,)), principal=EU_ONLY)


def test_a_rule_to_an_alias_outside_the_tenants_regions_is_skipped() -> None:
    r = router(
        {"m": {"targets": targets("eu/a"), "rules": [{"use": "us-only"}]}, "us-only": {"targets": targets("us/b")}}
    )
    assert plan(r).alias == "us-only"
    p = plan(r, principal=EU_ONLY)
    assert keys(p) == ["eu/a"]
    assert p.explain["skipped"] == [
        {"rule": "rules[0] → us-only", "why": "alias 'us-only' has no target in tenant's regions [eu, eu-west]"}
    ]


# ---- the explanation ---------------------------------------------------------------------------


def test_explain_is_json_and_complete() -> None:
    rows = targets("us/gpt-4o", "eu/gpt-4o-mini", "eu2/gpt-4o")
    rows[2]["capabilities"] = ["json"]
    r = router(
        {
            "m": {"strategy": "cost", "targets": rows, "rules": [{"use": "x", "feature": "f"}]},
            "x": {"targets": targets("eu/y")},
        }
    )
    p = plan(r, request=chat("x" * 400, tools=(TOOL,)), principal=EU_ONLY)
    assert json.loads(json.dumps(p.explain)) == p.explain
    assert p.explain == {
        "requested": "m",
        "alias": "m",
        "rule": None,
        "strategy": "cost",
        "prompt_tokens": estimate_prompt_tokens(chat("x" * 400, tools=(TOOL,))),
        "needs": ["tools"],
        "regions": ["eu", "eu-west"],
        "candidates": [{"target": "eu/gpt-4o-mini", "score": p.explain["candidates"][0]["score"]}],
        "skipped": [
            {"rule": "rules[0] → x", "why": "feature None is not 'f'"},
            {"target": "us/gpt-4o", "why": "region us not in tenant's [eu, eu-west]"},
            {"target": "eu2/gpt-4o", "why": "lacks tools"},
        ],
    }
    assert p.reason == "strategy: cost"
