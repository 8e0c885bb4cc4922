"""Replay by prompt version: a recorded call by prompt, replayed with another version (admin API and
`keel traces replay --prompt-version`), renders that version with the call's own variables."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import openai

from keel.testing import FakeUpstream
from tests.conftest import ADMIN, Gateway

AUTH = {"Authorization": f"Bearer {ADMIN}"}
V1: dict[str, Any] = {
    "name": "ask",
    "messages": [{"role": "user", "content": "Tell {{who}} a fact"}],
    "alias": "gpt-4o-mini",
}
V2 = {**V1, "messages": [{"role": "user", "content": "Tell {{who}} two facts"}]}


def test_a_call_by_prompt_replays_with_another_version(gateway: Gateway, up: FakeUpstream, tmp_path: Path) -> None:
    for body in (V1, V2):
        assert httpx.post(gateway.url + "/api/prompts", json={"tenant": "t1", **body}, headers=AUTH).status_code == 201
    httpx.put(gateway.url + "/api/prompts/ask/labels/production", json={"tenant": "t1", "version": 1}, headers=AUTH)
    with openai.OpenAI(base_url=gateway.base_url, api_key=gateway.key, max_retries=0) as c:
        raw = c.chat.completions.with_raw_response.create(
            model="prompt",
            messages=[],
            extra_body={"prompt": {"id": "ask", "label": "production", "variables": {"who": "Ada"}}},
        )
        plain = c.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
        )
    trace_id = raw.headers["x-keel-trace-id"]
    gateway.traces()
    done = httpx.post(
        f"{gateway.url}/api/traces/{trace_id}/replay", json={"prompt_version": 2}, headers=AUTH, timeout=30
    )
    assert done.status_code == 200, done.text
    assert up.requests[-1]["json"]["messages"] == [{"role": "user", "content": "Tell Ada two facts"}]
    replayed = {t.id: t for t in gateway.traces()}[done.json()["replay"]["trace_id"]]
    assert replayed.prompt_version == "ask@2"
    bad = httpx.post(f"{gateway.url}/api/traces/{trace_id}/replay", json={"prompt_version": 0}, headers=AUTH)
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "prompt_version"
    not_prompted = plain.headers["x-keel-trace-id"]
    refused = httpx.post(f"{gateway.url}/api/traces/{not_prompted}/replay", json={"prompt_version": 2}, headers=AUTH)
    assert refused.status_code == 400 and "not a call by prompt" in refused.json()["error"]["message"]

    cmd = [sys.executable, "-m", "keel.cli.main", "-c", str(tmp_path / "keel.yaml"), "traces", "replay", trace_id]
    out = subprocess.run(
        [*cmd, "--prompt-version", "1", "--json", "--url", gateway.url], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["replay"]["trace_id"] != trace_id
    assert up.requests[-1]["json"]["messages"] == [{"role": "user", "content": "Tell Ada a fact"}]
