"""Alert rules end to end: calls through the real gateway → rollups → the evaluator → a signed webhook.

A real receiver on 127.0.0.1 records each POST; the test checks the HMAC itself (not with Keel's
`sign`). Each rule fires once when its condition becomes true, stays silent while it holds, and sends
one `alert.resolved` when it clears. Two evaluators sharing one store stand in for two processes.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from pathlib import Path
from typing import Any

import openai
import pytest

from keel import config as keel_config
from keel.alerts.rules import RuleEvaluator
from keel.alerts.sender import RuleEvent
from keel.config import AlertRuleConfig
from keel.errors import ConfigError
from keel.store.open import open_store
from keel.testing import FakeUpstream, Script
from keel.types import TraceRecord
from tests.conftest import Gateway, base_config, until
from tests.unit.test_alerts import Receiver, receiver  # noqa: F401  (the fixture)

SECRET = "rule-hook-secret"
ASK: Any = [{"role": "user", "content": "hi"}]
TICK = 0.1  # evaluate_every_s in these tests


def gateway(make_gateway: Any, up: FakeUpstream, tmp: Path, hook: Receiver, *rules: dict[str, Any]) -> Gateway:
    raw = base_config(up, f"sqlite:///{tmp}/keel.db", tmp)
    raw["alerts"] = {
        "evaluate_every_s": TICK,
        "webhook": {"url": hook.url, "secret": SECRET, "retries": 1},
        "rules": list(rules),
    }
    raw["prices"] = {"gpt-4o-mini": {"input": 10_000, "output": 10_000}}  # $0.01 a token
    return make_gateway(raw)  # type: ignore[no-any-return]


def events(hook: Receiver) -> list[dict[str, Any]]:
    """The bodies received so far, each after checking its signature as a receiver would."""
    out = []
    for headers, body in hook.requests:
        signed = headers["x-keel-timestamp"].encode() + b"." + body
        expected = "sha256=" + hmac.new(SECRET.encode(), signed, hashlib.sha256).hexdigest()
        assert hmac.compare_digest(expected, headers["x-keel-signature"])
        event = json.loads(body)
        assert headers["x-keel-event-id"] == event["id"]
        out.append(event)
    return out


def settled(gw: Gateway, hook: Receiver) -> list[dict[str, Any]]:
    """The events once the rules have judged every call made so far and their webhooks have been delivered.

    The calls' rows (and rollups) are written first; the tick running then may have read before them, the
    next one reads after; the one after that starts only once the previous one's events were queued; then
    nothing is left to deliver. So whatever these calls cause has arrived, and nothing more is coming.
    """
    gw.traces()
    rules, sender = gw.runtime.rules, gw.runtime.rule_alerts or gw.runtime.alerts
    assert rules is not None and sender is not None
    mark = rules.evaluations
    assert until(lambda: rules.evaluations >= mark + 3 and sender.stats.queued == 0, timeout=10)
    return events(hook)


def chat(gw: Gateway, n: int, model: str = "gpt-4o-mini") -> None:
    with openai.OpenAI(base_url=gw.base_url, api_key=gw.key, max_retries=0) as c:
        for _ in range(n):
            c.chat.completions.create(model=model, messages=ASK, max_tokens=5)


def failing(gw: Gateway, up: FakeUpstream, n: int) -> None:
    up.script(*[Script(status=400, error_code="invalid_value")] * n)
    with openai.OpenAI(base_url=gw.base_url, api_key=gw.key, max_retries=0) as c:
        for _ in range(n):
            with pytest.raises(openai.BadRequestError):
                c.chat.completions.create(model="gpt-4o-mini", messages=ASK)


def test_error_rate_fires_once_while_it_holds_and_resolves_once(
    make_gateway: Any,
    up: FakeUpstream,
    tmp_path: Path,
    receiver: Receiver,  # noqa: F811
) -> None:
    rule = {"name": "errors", "metric": "error_rate", "threshold": 0.5, "window": "5m", "scope": "alias"}
    gw = gateway(make_gateway, up, tmp_path, receiver, {**rule, "min_calls": 4})
    chat(gw, 2, model="sim")  # another alias, all fine: never fires
    failing(gw, up, 3)
    assert settled(gw, receiver) == []  # 3 calls: fewer than min_calls, no verdict yet
    failing(gw, up, 1)
    [fired] = settled(gw, receiver)
    assert (fired["event"], fired["rule"], fired["scope"], fired["value"]) == (
        "alert.firing",
        "errors",
        "alias",
        "gpt-4o-mini",
    )
    assert (fired["observed"], fired["calls"], fired["threshold"], fired["window"]) == (1.0, 4, 0.5, "5m")
    failing(gw, up, 2)  # still over: nothing more
    assert len(settled(gw, receiver)) == 1
    chat(gw, 10)  # 6 errors in 16 calls at the end: under half
    fired_again, resolved = settled(gw, receiver)
    assert fired_again == fired
    assert (resolved["event"], resolved["value"], resolved["since"]) == (
        "alert.resolved",
        "gpt-4o-mini",
        fired["since"],
    )
    # Resolved at the first tick under half, which may come before the tenth ok call.
    assert resolved["observed"] == pytest.approx(6 / resolved["calls"]) and resolved["observed"] < 0.5
    assert resolved["id"] != fired["id"]
    failing(gw, up, 12)  # over again: a new episode fires once more
    assert [e["event"] for e in settled(gw, receiver)] == ["alert.firing", "alert.resolved", "alert.firing"]
    scrape = gw.runtime.rules
    assert scrape is not None and scrape.firing == {"errors": 1}


def test_cost_per_tenant_fires_once(
    make_gateway: Any,
    up: FakeUpstream,
    tmp_path: Path,
    receiver: Receiver,  # noqa: F811
) -> None:
    rule = {"name": "spend", "metric": "cost_usd", "threshold": 0.5, "window": "1h", "scope": "tenant"}
    gw = gateway(make_gateway, up, tmp_path, receiver, rule)
    chat(gw, 1)
    cost = sum(t.cost_usd or 0 for t in gw.traces())
    assert 0 < cost < 0.5
    assert settled(gw, receiver) == []
    chat(gw, int(0.5 / cost) + 2)
    [fired] = settled(gw, receiver)
    total = sum(t.cost_usd or 0 for t in gw.traces())
    assert (fired["event"], fired["scope"], fired["value"]) == ("alert.firing", "tenant", "t1")
    assert 0.5 <= fired["observed"] <= total + 1e-9


def test_global_p95_latency_fires_once(
    make_gateway: Any,
    up: FakeUpstream,
    tmp_path: Path,
    receiver: Receiver,  # noqa: F811
) -> None:
    rule = {"name": "slow", "metric": "p95_latency_ms", "threshold": 200, "min_calls": 3}
    gw = gateway(make_gateway, up, tmp_path, receiver, rule)
    chat(gw, 3)
    assert settled(gw, receiver) == []  # fast calls: p95 well under 200 ms
    up.script(*[Script(delay=0.35)] * 3)
    chat(gw, 3)
    [fired] = settled(gw, receiver)
    assert (fired["event"], fired["scope"], fired["value"]) == ("alert.firing", "global", None)
    assert 4 <= fired["calls"] <= 6  # one slow call in four already puts the p95 in its bucket
    assert fired["observed"] >= 200


def record(status: str = "ok", tenant: str = "acme") -> TraceRecord:
    return TraceRecord(
        id=uuid.uuid4().hex, started_at=time.time(), tenant=tenant, alias="a", status=status,  # type: ignore[arg-type]
        error_kind=None if status == "ok" else "timeout", latency_ms=5.0,
    )  # fmt: skip


def test_two_processes_send_each_change_once(storage_url: str) -> None:
    """Two evaluators on their own connections to one store, as two gateway processes would be."""
    stores = [open_store(storage_url) for _ in range(2)]
    for s in stores:
        s.migrate()
    rule = AlertRuleConfig(name="errors", metric="error_rate", threshold=0.5, scope="tenant", min_calls=2)
    sent: list[RuleEvent] = []
    evaluators = [RuleEvaluator([rule], s, sent.append) for s in stores]
    try:
        stores[0].append_traces([record("error") for _ in range(4)] + [record(tenant="globex")])
        for ev in evaluators * 3:
            sent += ev.evaluate(time.time())
        assert [(e.event, e.value) for e in sent] == [("alert.firing", "acme")]
        stores[1].append_traces([record() for _ in range(10)])
        for ev in evaluators * 3:
            sent += ev.evaluate(time.time())
        assert [(e.event, e.value) for e in sent] == [("alert.firing", "acme"), ("alert.resolved", "acme")]
        assert sent[1].since == sent[0].since and sent[1].observed == pytest.approx(4 / 14)
    finally:
        for s in stores:
            s.close()


def issues(alerts: dict[str, Any], **top: Any) -> dict[str, str]:
    raw = {
        "providers": {"sim": {"type": "simulated"}},
        "models": {"a": {"targets": [{"provider": "sim", "model": "m"}]}},
    }
    with pytest.raises(ConfigError) as info:
        keel_config.parse({**raw, "alerts": alerts, **top}, {})
    return {i.path: f"{i.message} | {i.fix}" for i in info.value.issues}


def test_config_errors_name_the_key_and_the_fix() -> None:
    ok = {"name": "r", "metric": "cost_usd", "threshold": 1}
    found = issues({"rules": [ok]})
    assert "no webhook" in found["alerts.webhook"] and "alerts.webhook: {url:" in found["alerts.webhook"]
    hook = {"url": "http://127.0.0.1:9/h", "secret": "s"}
    found = issues(
        {
            "webhook": hook,
            "rules": [
                {**ok, "window": "5x", "match": "acme"},
                {**ok, "metric": "error_rate", "threshold": 5},
                {**ok, "metric": "p99"},
                {**ok, "name": "t", "scope": "tenant", "tenant": "acme"},
            ],
        }
    )
    assert "e.g. 5m, 1h, 1d" in found["alerts.rules[0].window"]
    assert "remove match, or set scope" in found["alerts.rules[0].match"]
    assert "duplicate rule name" in found["alerts.rules[1].name"]
    assert "0.05 for 5%" in found["alerts.rules[1].threshold"]
    assert "p95_latency_ms" in found["alerts.rules[2].metric"]
    assert "match: <tenant>" in found["alerts.rules[3].tenant"]
    found = issues({}, metrics={"require_token": True})
    assert "set admin_token" in found["metrics.require_token"]
    cfg = keel_config.parse({"alerts": {"webhook": hook, "rules": [{**ok, "window": "2h"}]}}, {})
    assert cfg.alerts.rules[0].window_s == 7200
