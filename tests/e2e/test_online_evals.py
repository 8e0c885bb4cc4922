"""Online evals end to end: rules over the admin API, live calls over real HTTP, scoring jobs, score
spans and rollups, and a monitor's signed webhook on a simulated quality drop.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import openai
import pytest

from keel.evals.online_builder import OnlineEvals
from keel.store.protocols import ScoreQuery
from keel.testing import FakeUpstream, Script
from tests.conftest import Gateway, base_config, until
from tests.unit.test_alerts import Receiver, receiver  # noqa: F401  (the fixture)

SECRET = "online-hook-secret"
RULES = "/api/evals/online-rules"


def admin(gw: Gateway) -> httpx.Client:
    return httpx.Client(base_url=gw.url, headers={"authorization": f"Bearer {gw.admin}"}, timeout=10)


def score_count(gw: Gateway, rule: str) -> int:
    q = ScoreQuery(since=0, until=time.time() + 60, rule=rule)
    return sum(g.count for g in gw.runtime.store.score_rollup(q))


@pytest.mark.timeout(300)
def test_a_rule_at_ten_percent_samples_within_two_points_over_5000_calls(make_gateway: Any, up: FakeUpstream,
                                                                          tmp_path: Path) -> None:  # fmt: skip
    raw = base_config(up, f"sqlite:///{tmp_path}/keel.db", tmp_path)
    raw["online_evals"] = {"flush_ms": 50, "batch_size": 200}
    gw = make_gateway(raw)
    rule = {"name": "ten", "rate": 0.1, "feature": "support", "scorers": [{"type": "is-json", "metric": "json"}]}
    with admin(gw) as a:
        assert a.post(RULES, json=rule).status_code == 201
        assert [r["name"] for r in a.get(RULES).json()["data"]] == ["ten"]

    async def calls(n: int, feature: str) -> None:
        """n calls over 16 connections, with aiohttp: httpx's client costs this process (the gateway's too)
        several times its CPU per call, and 5,200 calls made it most of the test's time."""
        headers = {"authorization": f"Bearer {gw.key}", "x-keel-feature": feature}
        body = {"model": "sim", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
        connector = aiohttp.TCPConnector(limit=16)
        timeout = aiohttp.ClientTimeout(total=30)
        async with aiohttp.ClientSession(headers=headers, connector=connector, timeout=timeout) as c:
            queue = iter(range(n))

            async def one_worker() -> None:
                for _ in queue:
                    async with c.post(gw.base_url + "/chat/completions", json=body) as r:
                        assert r.status == 200
                        await r.read()

            await asyncio.gather(*(one_worker() for _ in range(16)))

    asyncio.run(calls(5000, "support"))
    asyncio.run(calls(200, "other"))  # not the rule's feature: never picked
    online = gw.runtime.get(OnlineEvals)
    stats = online.selections.stats
    assert until(
        lambda: stats.enqueued + stats.dropped + stats.failed >= stats.selected and not online.selections.pending
    )
    assert stats.dropped == stats.failed == 0
    assert 400 <= stats.selected <= 600, stats.selected  # 10% ± 2 points of 5,000
    # Every picked call is scored once: a score row and a `score` span of its trace.
    assert until(lambda: score_count(gw, "ten") == stats.selected, timeout=60)
    rows = gw.runtime.store.list_scores(ScoreQuery(since=0, until=time.time() + 60, rule="ten", limit=10))
    assert {(r.feature, r.alias, r.scorer, r.passed) for r in rows} == {("support", "sim", "json", False)}

    def score_spans() -> list[Any]:  # a span goes through the trace writer's queue, a score row straight to the store
        return [s for s in gw.runtime.store.trace_spans(rows[0].trace_id) if s.kind == "score"]

    assert until(lambda: bool(score_spans()), timeout=30)
    [score] = score_spans()
    assert (score.name, score.span_id, score.attributes["keel.score.rule"]) == ("json", "score:ten:json", "ten")
    with admin(gw) as a:
        by_feature = a.get("/api/evals/online-scores", params={"since": "1h", "by": "feature"}).json()["data"]
    assert by_feature == [
        {"scorer": "json", "group": "support", "count": stats.selected, "mean": 0.0, "pass_rate": 0.0}
    ]


def test_rules_refuse_what_cannot_run_online_naming_the_field(make_gateway: Any, up: FakeUpstream,
                                                               tmp_path: Path) -> None:  # fmt: skip
    gw = make_gateway(base_config(up, f"sqlite:///{tmp_path}/keel.db", tmp_path))
    bad = [
        ({"name": "r", "rate": 1.5, "scorers": [{"type": "is-json"}]}, "rate"),
        ({"name": "r", "rate": 0.1, "scorers": [{"type": "equals"}]}, "scorers"),  # needs an expected output
        ({"name": "r", "rate": 0.1, "scorers": [{"type": "nope"}]}, "scorers[0].type"),
        ({"name": "r", "rate": 0.1, "scorers": [{"type": "python", "value": "os:system"}]}, "scorers[0].value"),
        ({"name": "r", "rate": 0.1, "scorers": []}, "scorers"),
        ({"name": "r r", "rate": 0.1, "scorers": [{"type": "is-json"}]}, "name"),
        ({"name": "r", "rate": 0.1, "scorers": [{"type": "is-json"}], "colour": 1}, "colour"),
    ]
    with admin(gw) as a:
        for body, field in bad:
            r = a.post(RULES, json=body)
            assert r.status_code == 400, body
            assert r.json()["error"]["param"] == field, r.json()
        assert (
            a.post(
                RULES, json={"name": "r", "rate": 0.1, "scorers": []}, headers={"authorization": "Bearer x"}
            ).status_code
            == 401
        )
        assert a.delete(RULES + "/missing").status_code == 404


def events(hook: Receiver) -> list[dict[str, Any]]:
    out = []
    for headers, body in hook.requests:
        signed = headers["x-keel-timestamp"].encode() + b"." + body
        expected = "sha256=" + hmac.new(SECRET.encode(), signed, hashlib.sha256).hexdigest()
        assert hmac.compare_digest(expected, headers["x-keel-signature"])
        out.append(json.loads(body))
    return out


def test_a_monitor_fires_once_on_a_quality_drop_and_resolves_once(
    make_gateway: Any,
    up: FakeUpstream,
    tmp_path: Path,
    receiver: Receiver,  # noqa: F811
) -> None:
    raw = base_config(up, f"sqlite:///{tmp_path}/keel.db", tmp_path)
    monitor = {"name": "paris-quality", "scorer": "mentions-paris", "below": 0.7, "window": "1h", "min_samples": 5}
    raw["online_evals"] = {
        "flush_ms": 20,
        "evaluate_every_s": 0.1,
        "webhook": {"url": receiver.url, "secret": SECRET, "retries": 1},
        "monitors": [monitor],
    }
    gw = make_gateway(raw)
    rule = {
        "name": "all",
        "rate": 1.0,
        "scorers": [{"type": "icontains", "value": "paris", "metric": "mentions-paris"}],
    }
    with admin(gw) as a:
        assert a.post(RULES, json=rule).status_code == 201
    online = gw.runtime.get(OnlineEvals)
    monitors, sender = online.monitors, online.sender
    assert monitors is not None and sender is not None

    def answer(text: str, n: int, scored_before: int) -> list[dict[str, Any]]:
        """n calls answered `text`; the events once they are scored and the monitor has judged them."""
        up.script(*[Script(text=text)] * n)
        with openai.OpenAI(base_url=gw.base_url, api_key=gw.key, max_retries=0) as c:
            for _ in range(n):
                c.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "capital?"}])
        assert until(lambda: score_count(gw, "all") == scored_before + n, timeout=30)
        return settled()

    def settled() -> list[dict[str, Any]]:
        """The events once two ticks have judged every score so far and their webhooks went out."""
        mark = monitors.evaluations
        assert until(lambda: monitors.evaluations >= mark + 3 and sender.stats.queued == 0, timeout=10)
        return events(receiver)

    assert answer("Paris is the capital of France.", 10, 0) == []  # mean 1.0
    [fired] = answer("It is London.", 10, 10)  # mean falls to 0.5
    assert (fired["event"], fired["rule"], fired["metric"], fired["threshold"]) == (
        "alert.firing",
        "paris-quality",
        "score_mean:mentions-paris",
        0.7,
    )
    assert fired["observed"] < 0.7 and fired["calls"] >= 5
    assert len(answer("It is London again.", 5, 20)) == 1  # still below: nothing more
    fired_again, resolved = answer("Paris, of course.", 40, 25)  # 50 of 65 pass: 0.77
    assert fired_again == fired
    assert (resolved["event"], resolved["since"]) == ("alert.resolved", fired["since"])
    assert resolved["observed"] >= 0.7
    assert len(settled()) == 2  # more ticks, nothing more sent


def test_a_judge_scores_a_live_call_through_the_gateway_traced_and_never_sampled_itself(
    make_gateway: Any, up: FakeUpstream, tmp_path: Path
) -> None:
    raw = base_config(up, f"sqlite:///{tmp_path}/keel.db", tmp_path)
    raw["online_evals"] = {"flush_ms": 20, "judge": "gpt-4o-mini"}
    raw["prices"] = {"gpt-4o-mini": {"input": 1.0, "output": 2.0}}
    gw = make_gateway(raw)
    rubric = {"type": "llm-rubric", "value": "Names the capital of France", "metric": "capital"}
    with admin(gw) as a:
        assert a.post(RULES, json={"name": "judged", "rate": 1.0, "scorers": [rubric]}).status_code == 201
    verdict = '{"reason": "it names Paris", "pass": true, "score": 0.9}'
    up.script(Script(text="Paris."), Script(text=verdict))  # the call, then the judge's call
    with openai.OpenAI(base_url=gw.base_url, api_key=gw.key, max_retries=0) as c:
        r = c.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "Capital of France?"}]
        )
    trace_id = r.headers["x-keel-trace-id"]
    assert until(lambda: score_count(gw, "judged") == 1)
    [row] = gw.runtime.store.list_scores(ScoreQuery(since=0, until=time.time() + 60, rule="judged"))
    assert (row.trace_id, row.scorer, row.value, row.passed) == (trace_id, "capital", 0.9, True)
    traces = gw.traces()
    [judge] = [t for t in traces if t.feature == "keel.online-evals"]
    assert judge.status == "ok" and judge.cost_usd and judge.cost_usd > 0  # traced and priced
    assert (judge.tags["eval_run"], judge.tags["eval_item"], judge.tenant) == ("online", trace_id, "t1")
    assert judge.request["messages"][1]["content"].startswith("<Output>\nParis.")
    online = gw.runtime.get(OnlineEvals)
    assert online.selections.stats.selected == 1  # the judge's own call was not picked
    [span] = [s for s in gw.runtime.store.trace_spans(trace_id) if s.kind == "score"]
    assert span.attributes["keel.score.reason"].startswith("llm-rubric")
