"""When the schema rejects part of keel.yaml, the checks beyond it still run, on typed sections of a draft
without that part (keel.config.draft): one report, each problem once, at the path the file has."""

from __future__ import annotations

from typing import Any

import pytest

from keel import config
from keel.errors import ConfigError

SIM: dict[str, Any] = {
    "providers": {"sim": {"type": "simulated"}},
    "models": {"a": {"targets": [{"provider": "sim", "model": "m"}]}},
}
HOOK = {"url": "http://127.0.0.1:9/h", "secret": "s"}
RULE = {"name": "r", "metric": "cost_usd", "threshold": 1}


def report(raw: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(ConfigError) as info:
        config.parse({**SIM, **raw}, {})
    found = {i.path: i.message for i in info.value.issues}
    assert len(found) == len(info.value.issues), info.value.message  # each problem once
    return found


def test_a_check_after_a_rejected_list_item_names_the_item_the_file_has() -> None:
    rules = [
        {**RULE, "metric": "p99"},
        {**RULE, "name": "t", "scope": "tenant", "tenant": "acme"},
        {**RULE, "name": "u"},
    ]
    found = report({"alerts": {"webhook": HOOK, "rules": rules}})
    assert set(found) == {"alerts.rules[0].metric", "alerts.rules[1].tenant"}
    assert "picks its tenant with match" in found["alerts.rules[1].tenant"]


def test_a_check_on_a_rejected_items_sibling_still_runs() -> None:
    found = report({"alerts": {"webhook": HOOK, "rules": [{**RULE, "window": "5x", "match": "acme"}]}})
    assert set(found) == {"alerts.rules[0].window", "alerts.rules[0].match"}


@pytest.mark.parametrize(
    ("raw", "path"),
    [
        ({"otel": {"preset": "nope", "public_key": "pk"}}, "otel.preset"),  # not "only used with a preset"
        ({"alerts": {"webhook": HOOK, "rules": [{**RULE, "scope": "planet", "match": "x"}]}}, "alerts.rules[0].scope"),
        (
            {"traces": {"blobs_url": "s3://b/p", "s3": {"access_key_id": 5, "secret_access_key": "s"}}},
            "traces.s3.access_key_id",
        ),
        (
            {"providers": {"sim": {"type": "simulated"}, "az": {"type": "azure", "base_url": 5}}},
            "providers.az.base_url",
        ),
        ({"limits": {"webhook": {"url": "http://h"}}, "alerts": {"rules": [RULE]}}, "limits.webhook.secret"),
        ({"admin_token": 5, "metrics": {"require_token": True}}, "admin_token"),
    ],
)
def test_a_rejected_value_is_not_read_as_its_default_or_as_missing(raw: dict[str, Any], path: str) -> None:
    assert list(report(raw)) == [path]


def test_a_malformed_provider_or_alias_is_still_a_name_others_may_use() -> None:
    raw = {
        "providers": {"sim": {"type": "simulated", "timeout_s": -1}},
        "models": {
            "a": {"targets": [{"provider": "sim", "model": "m"}], "fallbacks": ["b"]},
            "b": {"targets": [{"provider": "sim"}]},
        },
        "cache": {"enabled": True, "semantic": {"enabled": True, "embedder": "b"}},
    }
    assert list(report(raw)) == ["providers.sim.timeout_s", "models.b.targets[0].model"]
