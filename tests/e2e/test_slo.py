"""SLOs per alias: objectives and error budgets from the rollups, burn-rate alerts, `GET /api/slo`,
`keel slo` and the dashboard's SLO page.

End to end, calls through the real gateway to a fake upstream that fails half of them burn an alias's
availability budget at 50x: both the fast (1h and 5m at 14.4x) and the slow (6h and 30m at 6x) alerts
fire once each, signed, to a real receiver. Resolution needs the short window to recover, which takes
minutes of wall time: that part drives the evaluator's clock over traces written at chosen times into
a real SQLite store.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml

import keel
from keel.alerts.builder import Alerts
from keel.alerts.sender import RuleEvent
from keel.alerts.slo import SloEvaluator, statuses
from keel.config import SloConfig
from keel.store.open import open_store
from keel.store.protocols.usage import count_over, hist_bucket
from keel.testing import FakeUpstream, Script
from keel.types import TraceRecord
from tests.conftest import Gateway, base_config, until
from tests.e2e.test_alert_rules import events
from tests.unit.test_alerts import Receiver, receiver  # noqa: F401  (the fixture)

SECRET = "rule-hook-secret"  # the one tests.e2e.test_alert_rules.events checks signatures with
ENV = {**os.environ, "PYTHONPATH": str(Path(keel.__file__).parents[1])}
ENV.pop("KEEL_CONFIG", None)


def slo_gateway(make_gateway: Any, up: FakeUpstream, tmp: Path, hook: Receiver) -> Gateway:
    raw = base_config(up, f"sqlite:///{tmp}/keel.db", tmp)
    raw["models"]["gpt-4o-mini"]["slo"] = {"availability": 99.0, "p95_ms": 5000}
    raw["alerts"] = {"evaluate_every_s": 0.1, "webhook": {"url": hook.url, "secret": SECRET, "retries": 1}}
    return make_gateway(raw)  # type: ignore[no-any-return]


def test_a_burning_budget_fires_the_fast_and_slow_alerts_once_and_shows_in_api_cli_and_dashboard(
    make_gateway: Any,
    up: FakeUpstream,
    tmp_path: Path,
    receiver: Receiver,  # noqa: F811
) -> None:
    gw = slo_gateway(make_gateway, up, tmp_path, receiver)
    slo = gw.runtime.context.get(Alerts).slo
    assert slo is not None
    up.script(*[Script(status=400, error_code="invalid_value"), Script(text="ok")] * 10)
    with openai.OpenAI(base_url=gw.base_url, api_key=gw.key, max_retries=0) as c:
        for _ in range(20):
            with contextlib.suppress(openai.BadRequestError):
                c.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    gw.traces()
    mark = slo.evaluations
    assert until(lambda: slo.evaluations >= mark + 3 and len(receiver.requests) >= 2, timeout=15)
    fired = {e["rule"]: e for e in events(receiver)}
    assert set(fired) == {"slo:gpt-4o-mini:availability:fast", "slo:gpt-4o-mini:availability:slow"}
    fast = fired["slo:gpt-4o-mini:availability:fast"]
    assert fast["event"] == "alert.firing" and fast["value"] == "gpt-4o-mini" and fast["scope"] == "alias"
    # a tick may judge before the last calls' traces are written: it fires on what it saw, burning ≥ 14.4x
    assert fast["observed"] >= 14.4 and fast["threshold"] == 14.4
    assert until(lambda: slo.evaluations >= mark + 6)
    assert len(receiver.requests) == 2  # held: nothing more while it burns

    api = httpx.get(f"{gw.url}/api/slo", headers={"authorization": f"Bearer {gw.admin}"}).json()["data"]
    (status,) = api
    availability = next(o for o in status["objectives"] if o["objective"] == "availability")
    assert availability["calls"] == 20 and availability["good"] == pytest.approx(0.5)
    assert availability["budget_remaining"] == pytest.approx(1 - 10 / (0.01 * 20))
    assert availability["burn_rate"]["5m"] == pytest.approx(50.0)
    latency = next(o for o in status["objectives"] if o["objective"] == "latency")
    assert latency["budget_remaining"] == pytest.approx(1.0)  # every answer was fast

    out = subprocess.run(
        [sys.executable, "-m", "keel.cli.main", "-c", str(tmp_path / "keel.yaml"), "slo", "--json"],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=60,
    )
    assert out.returncode == 1, out.stderr  # a spent budget
    assert json.loads(out.stdout)[0]["objectives"][0]["budget_remaining"] < 0

    with httpx.Client(base_url=gw.url, follow_redirects=False) as c:
        assert c.post("/ui/login", data={"token": gw.admin, "next": "/ui/slo"}).status_code == 303
        page = c.get("/ui/slo")
    assert page.status_code == 200
    assert 'data-alias="gpt-4o-mini" data-objective="availability"' in page.text
    assert "50.00×" in page.text


def record(i: int, at: float, *, failed: bool = False, latency_ms: float = 200.0) -> TraceRecord:
    return TraceRecord(
        id=f"slo-{i}",
        started_at=at,
        tenant="t",
        alias="chat",
        provider="p",
        model="m",
        status="error" if failed else "ok",
        error_kind="overloaded" if failed else None,
        http_status=503 if failed else 200,
        latency_ms=latency_ms,
    )


def test_alerts_resolve_when_the_short_window_recovers_and_latency_burns_its_own_budget(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path}/keel.db")
    try:
        t1 = (time.time() // 60) * 60 - 3600  # an hour ago, on a minute boundary
        bad = [record(i, t1 - 120 + i, failed=i % 2 == 0) for i in range(40)]  # 50% failing, 2 min before t1
        good = [record(100 + i, t1 + 420 + i * 5) for i in range(40)]  # t1+7m..t1+10m20s: all fine
        slow = [record(200 + i, t1 + 420 + i * 5, latency_ms=8000.0) for i in range(8)]  # 8 of 48 over 5 s
        store.append_traces(bad + good + slow)
        slos = {"chat": SloConfig(availability=99.9, p95_ms=5000)}
        sent: list[RuleEvent] = []
        evaluator = SloEvaluator(slos, store, sent.append)
        fired = evaluator.evaluate(t1)
        assert sorted(e.rule for e in fired) == ["slo:chat:availability:fast", "slo:chat:availability:slow"]
        assert all(e.event == "alert.firing" for e in fired)
        assert evaluator.evaluate(t1 + 60) == []  # still burning: no repeat
        # 12 minutes later the last 5 minutes hold only good calls: fast resolves; the 30-minute window
        # still holds the failures, so the slow alert keeps firing
        later = evaluator.evaluate(t1 + 720)
        assert [(e.rule, e.event) for e in later] == [("slo:chat:availability:fast", "alert.resolved")]
        (st,) = statuses(slos, store, t1 + 720)
        latency = next(o for o in st.objectives if o.name == "latency")
        assert latency.calls == 88 and latency.bad == pytest.approx(8, abs=0.5)
        assert latency.burn["5m"] == pytest.approx((8 / 48) / 0.05, rel=0.1)  # the slow ones fall in the last 5 min
    finally:
        store.close()


def test_count_over_interpolates_inside_the_bucket() -> None:
    hist = [0] * 36
    hist[hist_bucket(300.0)] = 10  # ten calls somewhere in the bucket holding 300 ms
    hist[hist_bucket(9000.0)] = 5
    assert count_over(hist, 100.0) == 15
    assert count_over(hist, 20_000.0) == 0
    assert 0 < count_over(hist, 300.0) - 5 < 10


def test_an_slo_config_out_of_range_is_refused_naming_the_key(tmp_path: Path) -> None:
    raw = {"providers": {"s": {"type": "simulated"}}, "models": {"a": {"targets": [{"provider": "s", "model": "m"}]}}}
    raw["models"]["a"]["slo"] = {"availability": 100, "p95_ms": -1}  # type: ignore[index]
    (tmp_path / "keel.yaml").write_text(yaml.safe_dump(raw))
    out = subprocess.run(
        [sys.executable, "-m", "keel.cli.main", "-c", str(tmp_path / "keel.yaml"), "config", "check"],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=60,
    )
    assert out.returncode == 2
    assert "models.a.slo.availability" in out.stderr and "models.a.slo.p95_ms" in out.stderr
