"""Usage over real HTTP and the real `keel usage` command: calls made through the gateway show up,
attributed by feature, session and prompt version, in `GET /api/usage` and in `keel usage --json`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import Gateway

KEEL = [sys.executable, "-m", "keel.cli.main"]


def call(gw: Gateway, feature: str, session: str, version: str | None, stream: bool = False) -> None:
    headers = {"x-keel-feature": feature, "x-keel-session": session}
    if version:
        headers["x-keel-prompt-version"] = version
    with openai.OpenAI(base_url=gw.base_url, api_key=gw.key, max_retries=0, timeout=10) as c:
        messages: Any = [{"role": "user", "content": "hello"}]
        if stream:
            with c.chat.completions.create(
                model="sim",
                messages=messages,
                stream=True,
                extra_headers=headers,
                stream_options={"include_usage": True},
            ) as s:
                list(s)
        else:
            c.chat.completions.create(model="sim", messages=messages, extra_headers=headers)


def api_usage(gw: Gateway, **params: str) -> dict[str, Any]:
    r = httpx.get(gw.url + "/api/usage", params=params, headers={"authorization": f"Bearer {gw.admin}"})
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def test_calls_through_the_gateway_add_up_in_the_admin_api_and_the_cli(gateway: Gateway, tmp_path: Path) -> None:
    for i in range(5):
        call(gateway, "chat", "wf-1", "v2", stream=bool(i % 2))
    for _ in range(3):
        call(gateway, "search", "wf-2", None)
    traces = gateway.traces()
    assert len(traces) == 8 and {t.prompt_version for t in traces} == {"v2", None}

    by_feature = {row["feature"]: row for row in api_usage(gateway, by="feature", since="1h")["data"]}
    assert {f: row["calls"] for f, row in by_feature.items()} == {"chat": 5, "search": 3}
    chat = [t for t in traces if t.feature == "chat"]
    assert by_feature["chat"]["input_tokens"] == sum(t.input_tokens or 0 for t in chat)
    assert by_feature["chat"]["output_tokens"] == sum(t.output_tokens or 0 for t in chat)
    assert by_feature["chat"]["cost_usd"] == pytest.approx(sum(t.cost_usd or 0 for t in chat))
    assert by_feature["chat"]["latency_p50_ms"] is not None

    versions = {row["prompt_version"]: row["calls"] for row in api_usage(gateway, by="prompt_version")["data"]}
    assert versions == {"v2": 5, None: 3}
    sessions = {row["session"]: row for row in api_usage(gateway, by="session", tenant="t1")["data"]}
    assert sessions["wf-1"]["calls"] == 5 and sessions["wf-2"]["calls"] == 3
    assert sessions["wf-1"]["first_seen"] <= sessions["wf-1"]["last_seen"]
    series = api_usage(gateway, by="tenant", since="2h", grain="minute")["data"]
    assert sum(row["calls"] for row in series) == 8 and all(row["tenant"] == "t1" for row in series)

    done = subprocess.run(
        [*KEEL, "usage", "--by", "feature", "--since", "1h", "--json"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    assert {row["feature"]: row for row in json.loads(done.stdout)} == by_feature


def test_the_admin_api_refuses_unbounded_or_unknown_usage_queries(gateway: Gateway) -> None:
    admin = {"authorization": f"Bearer {gateway.admin}"}
    assert httpx.get(gateway.url + "/api/usage").status_code == 401
    for params, param in (({"by": "colour"}, "by"), ({"since": "soon"}, "since"), ({"x": "1"}, "x")):
        r = httpx.get(gateway.url + "/api/usage", params=params, headers=admin)
        assert r.status_code == 400 and r.json()["error"]["param"] == param


def test_keel_usage_prints_a_table_and_fails_cleanly_on_bad_flags(gateway: Gateway, tmp_path: Path) -> None:
    call(gateway, "chat", "wf", "v1")
    gateway.traces()
    ok = subprocess.run([*KEEL, "usage", "--by", "model"], cwd=tmp_path, capture_output=True, text=True, timeout=30)
    assert ok.returncode == 0, ok.stderr
    header, row = ok.stdout.splitlines()
    assert header.split()[:3] == ["MODEL", "CALLS", "ERRORS"] and row.split()[:2] == ["simulated-1", "1"]
    bad = subprocess.run([*KEEL, "usage", "--since", "soon"], cwd=tmp_path, capture_output=True, text=True, timeout=30)
    assert bad.returncode == 1 and "since" in bad.stderr and "Traceback" not in bad.stderr
