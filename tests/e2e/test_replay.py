"""Replay over real HTTP: admin API and `keel traces replay` → a running gateway → the fake upstream.

The replayed call must reach the upstream with the recorded messages, parameters and tools, be
traced under the original tenant with `keel.replay_of`, and be comparable side by side.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from keel.testing import FakeUpstream, Script
from tests.conftest import Gateway, base_config

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "lookup",
            "description": "find a record",
            "parameters": {"type": "object", "properties": {"q": {"type": "string"}}},
        },
    }
]
MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "What is the capital of France?"},
]


def make(make_gateway: Any, up: FakeUpstream, tmp_path: Path, **changes: Any) -> Gateway:
    raw = base_config(up, f"sqlite:///{tmp_path}/keel.db", tmp_path)
    raw.update(changes)
    return make_gateway(raw)  # type: ignore[no-any-return]


@pytest.fixture
def gw(make_gateway: Any, up: FakeUpstream, tmp_path: Path) -> Gateway:
    return make(make_gateway, up, tmp_path)


def call(gw: Gateway, **kwargs: Any) -> str:
    """One chat call through the gateway; its trace id, once the trace is written."""
    args: dict[str, Any] = {"model": "gpt-4o-mini", "messages": MESSAGES, **kwargs}
    with openai.OpenAI(base_url=gw.base_url, api_key=gw.key, max_retries=0, timeout=10) as c:
        raw = c.chat.completions.with_raw_response.create(**args)
    raw.parse()
    trace_id = raw.headers["x-keel-trace-id"]
    assert any(t.id == trace_id for t in gw.traces())
    return trace_id


def replay(gw: Gateway, trace_id: str, token: str | None = None, **body: Any) -> httpx.Response:
    headers = {"authorization": f"Bearer {token or gw.admin}"}
    return httpx.post(f"{gw.url}/api/traces/{trace_id}/replay", json=body or None, headers=headers, timeout=30)


def cli(gw: Gateway, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "keel.cli.main", "-c", str(tmp_path / "keel.yaml"), "traces", "replay", *args]
    return subprocess.run([*cmd, "--url", gw.url], capture_output=True, text=True, timeout=60)


def test_replay_resends_the_same_request_and_is_traced_as_the_tenant(gw: Gateway, up: FakeUpstream) -> None:
    up.script(Script(text="Paris.", usage={"prompt_tokens": 20, "completion_tokens": 2}))
    original = call(
        gw,
        max_tokens=40,
        temperature=0.3,
        tools=TOOLS,
        tool_choice="auto",
        seed=7,
        extra_headers={"x-keel-feature": "geo", "x-keel-session": "s-9", "x-keel-tags": "team=maps"},
    )
    sent = up.requests[-1]
    up.reset()
    up.script(Script(text="Paris, France.", usage={"prompt_tokens": 20, "completion_tokens": 4}))
    r = replay(gw, original)
    assert r.status_code == 200, r.text
    data = r.json()
    [again] = up.requests
    assert again["path"] == sent["path"] == "/v1/chat/completions"
    assert again["json"] == sent["json"]  # same messages, parameters, tools, and the unknown `seed`
    assert again["json"]["tools"] == TOOLS and again["json"]["seed"] == 7
    o, n = data["original"], data["replay"]
    assert o["trace_id"] == original and n["trace_id"] != original
    assert (o["content"], n["content"]) == ("Paris.", "Paris, France.")
    assert (o["output_tokens"], n["output_tokens"]) == (2, 4)
    assert n["cost_usd"] > 0 and n["latency_ms"] > 0 and data["redacted"] == [] and data["error"] is None
    rows = {t.id: t for t in gw.traces()}
    new, old = rows[n["trace_id"]], rows[original]
    assert new.tags["keel.replay_of"] == original and new.tags["team"] == "maps"
    assert (new.tenant, new.key_id, new.feature) == ("t1", old.key_id, "geo")
    assert new.session is None  # a replay is no part of the original workflow's cost


def test_cli_prints_both_answers_side_by_side(gw: Gateway, up: FakeUpstream, tmp_path: Path) -> None:
    up.script(Script(text="The first answer."), Script(text="The second answer, a different one."))
    original = call(gw)
    done = cli(gw, tmp_path, original)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "ORIGINAL" in out and "REPLAY" in out and original in out
    answer = next(line for line in out.splitlines() if line.startswith("answer"))
    assert "The first answer." in answer and "The second answer" in answer
    assert answer.index("The first answer.") < answer.index("The second answer")
    tokens = next(line for line in out.splitlines() if line.startswith("tokens in/out"))
    assert len(re.findall(r"\b\d+ / \d+\b", tokens)) == 2
    assert "cost" in out and " ms" in out
    up.script(Script(text="Third."))
    done = cli(gw, tmp_path, original, "--json")
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data["original"]["trace_id"] == original and data["replay"]["content"] == "Third."


def test_alias_routes_elsewhere_and_model_targets_one_provider_model(gw: Gateway, up: FakeUpstream) -> None:
    original = call(gw)
    up.reset()
    r = replay(gw, original, alias="claude")
    assert r.status_code == 200, r.text
    [sent] = up.requests
    assert sent["path"] == "/v1/messages" and sent["json"]["model"] == "claude-sonnet-4-5"
    assert sent["json"]["system"] in ("You are terse.", [{"type": "text", "text": "You are terse."}])
    assert sent["json"]["messages"][-1]["content"] in (
        "What is the capital of France?",
        [{"type": "text", "text": "What is the capital of France?"}],
    )
    assert (r.json()["replay"]["alias"], r.json()["replay"]["provider"]) == ("claude", "ant")
    up.reset()
    r = replay(gw, original, model="oai/gpt-4o")
    assert r.status_code == 200, r.text
    [sent] = up.requests
    assert sent["json"]["model"] == "gpt-4o" and sent["json"]["messages"] == MESSAGES
    n = r.json()["replay"]
    assert (n["provider"], n["alias"]) == ("oai", "gpt-4o-mini")
    row = next(t for t in gw.traces() if t.id == n["trace_id"])
    assert row.route == {"replay_target": "oai/gpt-4o"}


def test_errors_are_clear(gw: Gateway, up: FakeUpstream, tmp_path: Path) -> None:
    original = call(gw)
    cases = [
        (replay(gw, "nope"), 404, "No trace with id 'nope'"),
        (replay(gw, original, alias="missing"), 404, "missing"),
        (replay(gw, original, model="nowhere/x"), 400, "configured provider"),
        (replay(gw, original, model="oai/x", alias="claude"), 400, "not both"),
        (replay(gw, original, temperature=1), 400, "Unknown field 'temperature'"),
        (replay(gw, original, token=gw.key), 403, "lacks the permission 'traces.replay'"),  # keys do not replay
    ]
    for response, status, text in cases:
        assert response.status_code == status, response.text
        assert text in response.json()["error"]["message"]
    up.reset()
    up.script(Script(status=500), Script(status=500), Script(status=500), Script(status=500))
    r = replay(gw, original)  # the provider fails: that is the replay's answer, beside the original
    assert r.status_code == 200 and r.json()["error"] and r.json()["replay"]["status"] == "error"
    done = cli(gw, tmp_path, "nope")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "HTTP 404: No trace with id 'nope'" in done.stderr
    done = cli(gw, tmp_path, original, "--model", "nowhere/x")
    assert done.returncode == 1 and "configured provider" in done.stderr


def test_trace_without_stored_request_cannot_be_replayed(make_gateway: Any, up: FakeUpstream, tmp_path: Path) -> None:
    gw = make(make_gateway, up, tmp_path, traces={"spill_dir": str(tmp_path / "spill"), "store_payloads": False})
    original = call(gw)
    r = replay(gw, original)
    assert r.status_code == 400
    assert "has no stored request (traces.store_payloads was off)" in r.json()["error"]["message"]
    assert len(up.requests) == 1  # nothing was sent


def test_redacted_trace_replays_its_placeholders_and_says_so(
    make_gateway: Any, up: FakeUpstream, tmp_path: Path
) -> None:
    gw = make(make_gateway, up, tmp_path, redaction={"detectors": ["api_keys", "emails"]})
    messages = [{"role": "user", "content": "Write to ann@example.com about the invoice."}]
    original = call(gw, messages=messages)
    up.reset()
    r = replay(gw, original)
    assert r.status_code == 200, r.text
    assert up.requests[0]["json"]["messages"][0]["content"] == "Write to [REDACTED:email] about the invoice."
    assert r.json()["redacted"] == ["email"]
    done = cli(gw, tmp_path, original)
    assert done.returncode == 0, done.stderr
    assert "the recorded request was redacted (email)" in done.stdout
    assert "ann@example.com" not in done.stdout
