"""A model A/B test: an alias splits its callers between its own targets and another alias's, sticky by
the same hash as prompt rollouts (user, else session, else key); the variant is in the plan's
explanation and the trace; a variant the key may not use keeps the caller on the control."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import openai
import pytest

from keel.errors import ConfigError
from keel.testing import FakeUpstream
from keel.types import Principal
from tests.conftest import Gateway, base_config
from tests.e2e.test_routing import ANYONE, chat, router, targets

MODELS: dict[str, Any] = {
    "m": {"targets": targets("us/gpt-4o"), "split": [{"use": "b", "weight": 10}]},
    "b": {"targets": targets("eu/claude")},
}


def test_ten_thousand_users_split_90_10_and_keep_their_variant() -> None:
    r = router(MODELS)
    variants = [r.plan("m", chat(), ANYONE, None, subject=f"user-{i}").explain["split"] for i in range(10_000)]
    share = variants.count("b") / len(variants)
    assert abs(share - 0.10) <= 0.015, share
    assert set(variants) == {"b", "control"}
    again = [r.plan("m", chat(), ANYONE, None, subject=f"user-{i}").explain["split"] for i in range(200)]
    assert again == variants[:200]  # sticky
    plan = next(r.plan("m", chat(), ANYONE, None, subject=f"user-{i}") for i in range(100) if variants[i] == "b")
    assert (plan.alias, plan.reason, [t.model for t in plan.targets]) == ("b", "split → b", ["claude"])
    assert r.plan("m", chat(), ANYONE, None).explain.get("split") == "control"  # no subject: the control
    assert "split" not in r.plan("b", chat(), ANYONE, None, subject="user-1").explain


def test_a_variant_the_key_may_not_use_keeps_the_caller_on_the_control() -> None:
    r = router(MODELS)
    picks = []
    for i in range(200):
        p = r.plan("m", chat(), ANYONE, ("m",), subject=f"user-{i}")
        picks.append(p.alias)
        if p.explain["skipped"]:
            assert p.explain["skipped"][0]["why"] == "alias 'b' is not allowed for this key"
    assert set(picks) == {"m"}
    other = Principal(tenant="other", key_id="k1")  # the hash includes the tenant
    mine = [r.plan("m", chat(), ANYONE, None, subject=f"u{i}").alias for i in range(300)]
    theirs = [r.plan("m", chat(), other, None, subject=f"u{i}").alias for i in range(300)]
    assert mine != theirs


def test_a_split_names_known_aliases_within_100_percent() -> None:
    with pytest.raises(ConfigError) as err:
        router({"m": {"targets": targets("us/gpt-4o"), "split": [{"use": "nope", "weight": 10}]}})
    assert "models.m.split[0].use" in str(err.value)
    with pytest.raises(ConfigError) as err:
        router({**MODELS, "m": {**MODELS["m"], "split": [{"use": "b", "weight": 60}, {"use": "c", "weight": 50}]},
                "c": {"targets": targets("us/gpt-4o-mini")}})  # fmt: skip
    assert "models.m.split" in str(err.value)


def test_the_variant_is_in_the_trace_and_each_user_keeps_it(
    make_gateway: Any, up: FakeUpstream, tmp_path: Path
) -> None:
    raw = base_config(up, f"sqlite:///{tmp_path}/keel.db", tmp_path)
    raw["models"]["gpt-4o-mini"]["split"] = [{"use": "sim", "weight": 50}]
    gw: Gateway = make_gateway(raw)
    seen: dict[str, set[str]] = {}
    with openai.OpenAI(base_url=gw.base_url, api_key=gw.key, max_retries=0) as c:
        for i in range(30):
            for _ in range(2):
                raw_reply = c.chat.completions.with_raw_response.create(
                    model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], user=f"user-{i}"
                )
                seen.setdefault(f"user-{i}", set()).add(raw_reply.headers["x-keel-model"])
    assert all(len(v) == 1 for v in seen.values()), seen
    assert {m for v in seen.values() for m in v} == {"gpt-4o-mini", "simulated-1"}
    traces = gw.traces()
    assert {(t.tags["keel.split"], t.model) for t in traces} == {
        ("gpt-4o-mini:control", "gpt-4o-mini"), ("gpt-4o-mini:sim", "simulated-1")
    }  # fmt: skip
    assert {t.alias for t in traces} == {"gpt-4o-mini"}  # the alias asked for; the variants differ by model
