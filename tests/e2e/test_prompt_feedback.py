"""Feedback end to end: a call's x-keel-trace-id, a score posted with the app's own virtual key, stored
with the trace's prompt version and model, summed per prompt version and model (API and CLI); a
rollout guarded by `feedback>=0.7` rolls back when users score the new version low; `keel usage --by
prompt_version` matches the traces."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from keel.keys.auth import issue_key
from keel.testing import FakeUpstream
from tests.conftest import ADMIN, Gateway, base_config, until

AUTH = {"Authorization": f"Bearer {ADMIN}"}
V1: dict[str, Any] = {"name": "faq", "messages": [{"role": "user", "content": "Answer {{q}}"}], "alias": "sim"}
V2 = {**V1, "messages": [{"role": "user", "content": "Answer briefly: {{q}}"}]}


@pytest.fixture
def gw(make_gateway: Any, up: FakeUpstream, storage_url: str, tmp_path: Path) -> Gateway:
    return make_gateway(base_config(up, storage_url, tmp_path))  # type: ignore[no-any-return]


def push(gw: Gateway, body: dict[str, Any]) -> None:
    assert httpx.post(gw.url + "/api/prompts", json={"tenant": "t1", **body}, headers=AUTH).status_code in (200, 201)


def call(c: openai.OpenAI, ref: dict[str, Any], user: str, model: str = "prompt") -> tuple[str, str]:
    """(trace id, prompt version) of one call by prompt."""
    raw = c.chat.completions.with_raw_response.create(
        model=model, messages=[], user=user, extra_body={"prompt": {"id": "faq", "variables": {"q": "why"}, **ref}}
    )
    return raw.headers["x-keel-trace-id"], raw.headers["x-keel-prompt-version"]


def score(gw: Gateway, body: dict[str, Any], key: str | None = None) -> httpx.Response:
    return httpx.post(gw.url + "/api/feedback", json=body, headers={"Authorization": f"Bearer {key or gw.key}"})


def test_feedback_is_stored_per_trace_and_summed_per_prompt_version_and_model(gw: Gateway, tmp_path: Path) -> None:
    push(gw, V1)
    push(gw, V2)
    with openai.OpenAI(base_url=gw.base_url, api_key=gw.key, max_retries=0) as c:
        ones = [call(c, {"version": 1}, f"u{i}")[0] for i in range(3)]
        twos = [call(c, {"version": 2}, f"u{i}", model="gpt-4o-mini")[0] for i in range(2)]
    gw.traces()  # the writer has stored them
    for tid, s in zip(ones, (1, 1, 0), strict=True):
        r = score(gw, {"trace_id": tid, "score": s, "comment": "thanks", "user": "ada"})
        assert r.status_code == 201 and r.json()["prompt_version"] == "faq@1", r.text
    assert score(gw, {"trace_id": ones[2], "score": 1, "user": "ada"}).status_code == 201  # a rater's later score wins
    for tid in twos:
        assert score(gw, {"trace_id": tid, "score": 0.25}).json()["model"] == "gpt-4o-mini"

    bad = score(gw, {"trace_id": ones[0], "score": 5})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "score"
    assert score(gw, {"score": 1}).json()["error"]["param"] == "trace_id"
    assert score(gw, {"trace_id": ones[0], "score": 1, "stars": 5}).json()["error"]["param"] == "stars"
    assert score(gw, {"trace_id": "nope", "score": 1}).status_code == 404
    gw.runtime.store.create_tenant("t2")
    other = issue_key(gw.runtime.store, "t2", name="other").key
    assert score(gw, {"trace_id": ones[0], "score": 0}, other).status_code == 404  # not t2's trace
    assert score(gw, {"trace_id": ones[0], "score": 0}, "sk-keel-wrong").status_code == 401

    def summary(by: str) -> dict[str, Any]:
        rows = httpx.get(gw.url + "/api/feedback", params={"by": by}, headers={"Authorization": f"Bearer {gw.key}"})
        return {r[by]: (r["count"], r["mean_score"]) for r in rows.json()["data"]}

    assert summary("prompt_version") == {"faq@1": (3, 1.0), "faq@2": (2, 0.25)}
    assert summary("model") == {"simulated-1": (3, 1.0), "gpt-4o-mini": (2, 0.25)}
    env = {k: v for k, v in os.environ.items() if k != "KEEL_CONFIG"}
    out = subprocess.run(
        [sys.executable, "-m", "keel.cli.main", "prompts", "feedback", "--json"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert {r["prompt_version"]: r["count"] for r in json.loads(out.stdout)} == {"faq@1": 3, "faq@2": 2}


def test_keel_usage_by_prompt_version_matches_the_traces(gw: Gateway, tmp_path: Path) -> None:
    push(gw, V1)
    push(gw, V2)
    httpx.put(gw.url + "/api/prompts/faq/labels/production", json={"tenant": "t1", "version": 1}, headers=AUTH)
    started = httpx.post(
        gw.url + "/api/prompts/faq/rollouts",
        json={"tenant": "t1", "label": "production", "to": 2, "weight": 30},
        headers=AUTH,
    )
    assert started.status_code == 201
    with openai.OpenAI(base_url=gw.base_url, api_key=gw.key, max_retries=0) as c:
        served = [call(c, {"label": "production"}, f"user-{i}")[1] for i in range(40)]
    assert {"faq@1", "faq@2"} <= set(served)
    counted: dict[str, int] = {}
    variants: dict[str, set[str]] = {}
    for t in gw.traces():
        counted[t.prompt_version] = counted.get(t.prompt_version, 0) + 1
        variants.setdefault(t.prompt_version, set()).add(t.tags["keel.prompt_variant"])
    assert variants == {"faq@1": {"stable"}, "faq@2": {"rollout"}}
    env = {k: v for k, v in os.environ.items() if k != "KEEL_CONFIG"}
    out = subprocess.run(
        [sys.executable, "-m", "keel.cli.main", "usage", "--by", "prompt_version", "--json"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert {r["prompt_version"]: r["calls"] for r in json.loads(out.stdout)} == counted


def test_a_rollout_guarded_by_feedback_rolls_back_when_users_score_it_low(gw: Gateway) -> None:
    push(gw, V1)
    push(gw, V2)
    httpx.put(gw.url + "/api/prompts/faq/labels/production", json={"tenant": "t1", "version": 1}, headers=AUTH)
    body = {"tenant": "t1", "label": "production", "to": 2, "weight": 50, "guards": ["feedback>=0.7"], "min_calls": 5}
    assert httpx.post(gw.url + "/api/prompts/faq/rollouts", json=body, headers=AUTH).status_code == 201
    with openai.OpenAI(base_url=gw.base_url, api_key=gw.key, max_retries=0) as c:
        calls = [call(c, {"label": "production"}, f"user-{i}") for i in range(40)]
    gw.traces()
    for tid, version in calls:
        assert score(gw, {"trace_id": tid, "score": 0.9 if version == "faq@1" else 0.2}).status_code == 201

    def state() -> dict[str, Any]:
        rows = httpx.get(gw.url + "/api/prompts/faq/rollouts", params={"tenant": "t1"}, headers=AUTH).json()["data"]
        return rows[0]  # type: ignore[no-any-return]

    assert until(lambda: state()["state"] == "rolled_back", timeout=20), state()
    assert "feedback>=0.7 breached" in state()["reason"]
