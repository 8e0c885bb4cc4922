"""Rollouts that judge themselves, end to end: calls by prompt label through the real gateway, the
rollups, the guard worker, the label moving by itself and a signed webhook arriving at a real receiver.

A new version whose alias is a simulated provider scripted to fail one call in five is rolled back
within its window; a healthy one steps 10% → 50% → 100% and becomes the label's version. The window and
step period are short by parameters; the tests wait on conditions (the rollout's state), never sleep.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from keel.testing import FakeUpstream
from tests.conftest import ADMIN, Gateway, base_config, until
from tests.unit.test_alerts import Receiver, receiver  # noqa: F401  (the fixture)

AUTH = {"Authorization": f"Bearer {ADMIN}"}
SECRET = "rollout-hook-secret"
STABLE: dict[str, Any] = {"name": "greet", "messages": [{"role": "user", "content": "Hello {{who}}"}], "alias": "sim"}
FLAKY = {**STABLE, "messages": [{"role": "user", "content": "Hi there {{who}}"}], "alias": "flaky"}
STEADY = {**STABLE, "messages": [{"role": "user", "content": "Good day {{who}}"}]}


@pytest.fixture
def gw(make_gateway: Any, up: FakeUpstream, storage_url: str, tmp_path: Path, receiver: Receiver) -> Gateway:  # noqa: F811
    raw = base_config(up, storage_url, tmp_path)
    raw["providers"]["flaky"] = {"type": "simulated", "faults": ["ok", "ok", "ok", "ok", "server"]}  # 20% fail
    raw["models"]["flaky"] = {"targets": [{"provider": "flaky", "model": "simulated-1"}]}
    raw["resilience"] = {"retries_per_target": 0}
    raw["alerts"] = {"webhook": {"url": receiver.url, "secret": SECRET, "retries": 1}}
    return make_gateway(raw)  # type: ignore[no-any-return]


def push(gw: Gateway, body: dict[str, Any]) -> int:
    r = httpx.post(gw.url + "/api/prompts", json={"tenant": "t1", **body}, headers=AUTH)
    assert r.status_code in (200, 201), r.text
    return int(r.json()["version"])


def rollout(gw: Gateway, **body: Any) -> httpx.Response:
    return httpx.post(gw.url + "/api/prompts/greet/rollouts", json={"tenant": "t1", **body}, headers=AUTH)


def state(gw: Gateway) -> dict[str, Any]:
    rows = httpx.get(gw.url + "/api/prompts/greet/rollouts", params={"tenant": "t1"}, headers=AUTH).json()["data"]
    return next(r for r in rows if r["label"] == "production")


def call(c: openai.OpenAI, user: str) -> str | None:
    """The prompt version that served `user`, or None when the call failed."""
    try:
        raw = c.chat.completions.with_raw_response.create(
            model="prompt", messages=[], user=user,
            extra_body={"prompt": {"id": "greet", "label": "production", "variables": {"who": user}}},
        )  # fmt: skip
    except openai.APIStatusError:
        return None
    return str(raw.headers["x-keel-prompt-version"])


def drive(gw: Gateway, done: Any, seconds: float = 60.0) -> int:
    """Calls from ever new users until `done()` holds; how many it took. Bounded by time, not by a count:
    the guards judge once a second, so how many calls fit before a step depends on the machine's speed
    (2,000 calls took ~3 s on a quick VM, less than the three passes a 10% → 50% → 100% rollout needs)."""
    deadline = time.monotonic() + seconds
    with openai.OpenAI(base_url=gw.base_url, api_key=gw.key, max_retries=0, timeout=10) as c:
        i = 0
        while time.monotonic() < deadline:
            call(c, f"user-{i}")
            i += 1
            if i % 10 == 0 and done():
                return i
    raise AssertionError(f"not done after {i} calls in {seconds:g} s: {state(gw)}")


def signed_events(hook: Receiver) -> list[dict[str, Any]]:
    out = []
    for headers, body in hook.requests:
        signed = headers["x-keel-timestamp"].encode() + b"." + body
        expected = "sha256=" + hmac.new(SECRET.encode(), signed, hashlib.sha256).hexdigest()
        assert hmac.compare_digest(expected, headers["x-keel-signature"])
        event = json.loads(body)
        assert headers["x-keel-event-id"] == event["id"]
        out.append(event)
    return out


def test_a_failing_rollout_rolls_back_by_itself_and_says_so_signed(gw: Gateway, receiver: Receiver) -> None:  # noqa: F811
    assert push(gw, STABLE) == 1 and push(gw, FLAKY) == 2
    moved = httpx.put(
        gw.url + "/api/prompts/greet/labels/production", json={"tenant": "t1", "version": 1}, headers=AUTH
    )
    assert moved.status_code == 200
    bad = rollout(gw, label="production", to=2, weight=50, guards=["error_rate<0.02", "p95 < 4000"])
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "guards[1]"
    started = rollout(
        gw, label="production", to=2, weight=50, guards=["error_rate<0.02", "p95_ms<4000"], window="1m", min_calls=20
    )
    assert started.status_code == 201, started.text
    assert started.json()["label"]["rollout"] == [{"version": 2, "weight": 50.0}]

    drive(gw, lambda: state(gw)["state"] != "running")
    r = state(gw)
    assert r["state"] == "rolled_back", r
    assert r["updated_at"] - r["started_at"] < 60  # within its window
    assert "error_rate<0.02 breached" in r["reason"] and "v2" in r["reason"]
    judged = re.search(r"v2 [0-9.]+ over (\d+)", r["reason"])  # "… breached: v2 0.1991 over 221, v1 0 over 229"
    assert judged is not None and int(judged.group(1)) >= 20, r["reason"]  # on its min_calls, not before

    assert until(lambda: len(receiver.requests) >= 1, timeout=15)
    (event,) = signed_events(receiver)
    assert (event["event"], event["prompt"], event["label"], event["stable"], event["version"]) == (
        "prompt.rollout.rolled_back", "greet", "production", 1, 2
    )  # fmt: skip

    label = httpx.get(gw.url + "/api/prompts/greet", params={"tenant": "t1", "label": "production"}, headers=AUTH)
    assert label.json()["version"] == 1
    with openai.OpenAI(base_url=gw.base_url, api_key=gw.key, max_retries=0, timeout=10) as c:
        assert until(lambda: call(c, "user-after-0") == "greet@1", timeout=10)  # this process refreshed at once
        assert {call(c, f"user-{i}") for i in range(40)} == {"greet@1"}  # those who had v2 included

    history = httpx.get(gw.url + "/api/prompts/greet/history", params={"tenant": "t1"}, headers=AUTH).json()["data"]
    latest = history[0]
    assert (latest["actor"], latest["version"], latest["rollout"]) == ("keel:rollout-guard", 1, [])
    assert "breached" in latest["reason"]
    assert [m["actor"] for m in history[1:3]] == ["admin", "admin"]  # the rollout's start, the label's first move

    # every label move and the rollout's start are entries of the hash-chained audit log, which verifies
    audit = httpx.get(gw.url + "/api/audit", params={"tenant": "t1"}, headers=AUTH).json()["data"]
    moves = [
        (e["actor"], e["action"], e["target"], e["detail"]["after"]["version"])
        for e in audit
        if e["action"].startswith("prompt.")  # not the guard's generic entries of the pushes
    ]
    assert moves[-3:] == [
        ("admin", "prompt.label.move", "greet:production", 1),
        ("admin", "prompt.rollout.start", "greet:production", 2),
        ("keel:rollout-guard", "prompt.label.move", "greet:production", 1),
    ]
    assert "breached" in audit[-1]["detail"]["result"]
    assert httpx.get(gw.url + "/api/audit/verify", headers=AUTH).json()["ok"] is True


def test_a_healthy_rollout_steps_up_to_the_whole_label(gw: Gateway, receiver: Receiver) -> None:  # noqa: F811
    push(gw, STABLE)
    assert push(gw, STEADY) == 2
    httpx.put(gw.url + "/api/prompts/greet/labels/production", json={"tenant": "t1", "version": 1}, headers=AUTH)
    no_every = rollout(gw, label="production", to=2, weight=10, steps=[50])
    assert no_every.status_code == 400 and no_every.json()["error"]["param"] == "every"
    started = rollout(
        gw, label="production", to=2, weight=10, steps=[50], every="1s", guards=["error_rate<0.02"], min_calls=10
    )
    assert started.status_code == 201, started.text
    drive(gw, lambda: state(gw)["state"] != "running")
    r = state(gw)
    assert (r["state"], r["weight"]) == ("done", 100.0), r
    label = httpx.get(gw.url + "/api/prompts/greet", params={"tenant": "t1", "label": "production"}, headers=AUTH)
    assert label.json()["version"] == 2
    assert until(lambda: len(receiver.requests) >= 2, timeout=15)
    assert [e["event"] for e in signed_events(receiver)] == ["prompt.rollout.stepped", "prompt.rollout.completed"]
    history = httpx.get(gw.url + "/api/prompts/greet/history", params={"tenant": "t1"}, headers=AUTH).json()["data"]
    assert [(m["version"], m["rollout"]) for m in reversed(history)] == [
        (1, []), (1, [{"version": 2, "weight": 10.0}]), (1, [{"version": 2, "weight": 50.0}]), (2, [])
    ]  # fmt: skip


def test_keel_prompts_rollout_and_rollback_on_the_command_line(gw: Gateway, tmp_path: Path) -> None:
    push(gw, STABLE)
    push(gw, STEADY)
    httpx.put(gw.url + "/api/prompts/greet/labels/production", json={"tenant": "t1", "version": 1}, headers=AUTH)
    env = {k: v for k, v in os.environ.items() if k != "KEEL_CONFIG"}

    def keel(*args: str, code: int = 0) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "keel.cli.main", "prompts", *args],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert done.returncode == code, done.stderr
        return done.stdout + done.stderr

    out = keel(
        "rollout", "greet", "--label", "production", "--to", "v2", "--weight", "10", "--guard", "error_rate<0.02",
        "--guard", "p95_ms<4000", "--step", "50", "--every", "1h", "--window", "5m", "--min-calls", "50",
        "--tenant", "t1",
    )  # fmt: skip
    assert "v1 stable, v2 10%" in out and "10% → 50% → 100%" in out
    refused = keel(
        "rollout", "greet", "--label", "production", "--to", "2", "--weight", "10", "--guard", "latency<3",
        "--tenant", "t1", code=1,
    )  # fmt: skip
    assert "guards[0]" in refused and "error_rate" in refused
    assert state(gw)["state"] == "running"
    assert "greet production: v1 stable" in keel("rollback", "greet", "--label", "production", "--tenant", "t1")
    r = state(gw)
    assert r["state"] == "rolled_back" and r["reason"] == "rolled back by cli"
    history = keel("history", "greet", "--tenant", "t1")
    assert "rolled back by cli" in history and "rollout started: v2 10%" in history

    protect = {"tenant": "t1", "version": 1, "protected": True}
    assert httpx.put(gw.url + "/api/prompts/greet/labels/production", json=protect, headers=AUTH).status_code == 200
    key = {"Authorization": f"Bearer {gw.key}"}
    by_key = httpx.post(
        gw.url + "/api/prompts/greet/rollouts", json={"label": "production", "to": 2, "weight": 5}, headers=key
    )
    assert by_key.status_code == 403  # a protected label: only the admin token rolls it out
    assert httpx.post(gw.url + "/api/prompts/greet/labels/production/rollback", headers=key).status_code == 403
    missing = httpx.post(
        gw.url + "/api/prompts/greet/rollouts",
        json={"tenant": "t1", "label": "beta", "to": 2, "weight": 5},
        headers=AUTH,
    )
    assert missing.status_code == 404


def test_an_online_eval_score_guards_a_rollout(gw: Gateway, receiver: Receiver) -> None:  # noqa: F811
    """The new version answers without the greeting an online eval rule checks on every call: its mean
    score falls under the guard's bound while its error rate and latency are fine, and it is rolled back."""
    rule = {"name": "greets", "rate": 1.0, "scorers": [{"type": "icontains", "value": "hello", "metric": "greeting"}]}
    assert httpx.post(gw.url + "/api/evals/online-rules", json=rule, headers=AUTH).status_code == 201
    assert push(gw, STABLE) == 1 and push(gw, STEADY) == 2
    moved = httpx.put(
        gw.url + "/api/prompts/greet/labels/production", json={"tenant": "t1", "version": 1}, headers=AUTH
    )
    assert moved.status_code == 200
    bad = rollout(gw, label="production", to=2, weight=50, guards=["score:<bad>>=0.8"])
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "guards[0]"
    guards = ["error_rate<0.02", "score:greeting>=0.8"]
    started = rollout(gw, label="production", to=2, weight=50, guards=guards, window="1m", min_calls=10)
    assert started.status_code == 201, started.text

    drive(gw, lambda: state(gw)["state"] != "running")
    r = state(gw)
    assert r["state"] == "rolled_back", r
    assert "score:greeting>=0.8 breached" in r["reason"] and "v2 0 over" in r["reason"], r["reason"]
    assert until(lambda: len(receiver.requests) >= 1, timeout=15)
    (event,) = signed_events(receiver)
    assert event["event"] == "prompt.rollout.rolled_back" and event["version"] == 2
