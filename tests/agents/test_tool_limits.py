"""Per-tool rate limits and budgets on the shared limit counters: refused calls reach the model as tool
errors naming the limit; two processes sharing Redis count the same calls."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from keel.agents.tools import SpecError, parse_spec
from keel.testing import FakeUpstream
from keel.testing.fake_upstream import Script

from ..conftest import Gateway
from .test_runs import admin, agw, completion, keyed, service  # noqa: F401  (fixtures and helpers)
from .tool_service import ToolService


def test_a_tools_limits_refuse_calls_back_to_the_model(agw: Gateway, up: FakeUpstream, service: ToolService) -> None:  # noqa: F811
    ping = {
        "tenant": "t1", "name": "ping", "kind": "http", "http": {"method": "GET", "url": service.url + "/echo"},
        "limits": {"rpm": 2},
    }  # fmt: skip
    pay = {
        "tenant": "t1", "name": "pay", "kind": "http", "http": {"method": "POST", "url": service.url + "/pay"},
        "limits": {"usd_day": 1.0, "usd_per_call": 0.4},
    }  # fmt: skip
    with admin(agw) as a:
        for spec in (ping, pay):
            r = a.post("/api/agents/tools", json=spec)
            assert r.status_code == 201, r.text
    calls = [(f"p{i}", "ping", {}) for i in range(3)] + [(f"c{i}", "pay", {"amount": 1}) for i in range(3)]
    up.script(Script(body_override=completion(*calls)), Script(text="two pings and two payments"))
    with keyed(agw) as k:
        r = k.post("/api/agents/runs", json={"model": "gpt-4o-mini", "input": "go", "tools": ["ping", "pay"]})
    assert r.status_code == 200, r.text
    run = r.json()
    assert run["state"] == "done", run
    with admin(agw) as a:
        steps = a.get(f"/api/agents/runs/{run['id']}").json()["steps"]
    tools = [(s["tool"], s["state"], s["result"]) for s in steps if s["kind"] == "tool"]
    print("\n" + "\n".join(f"{t} {st}: {res[:100]}" for t, st, res in tools))
    assert [(t, st) for t, st, _ in tools] == [("ping", "done")] * 2 + [("ping", "failed")] + [("pay", "done")] * 2 + [
        ("pay", "failed")
    ]
    assert "limit rpm 2 is reached" in tools[2][2]
    assert "limit usd_day $1 is reached (used $0.8)" in tools[5][2]
    assert len(service.payments) == 2
    # the model heard each refusal as the result of its call
    seen = {m["tool_call_id"]: m["content"] for m in up.requests[-1]["json"]["messages"] if m["role"] == "tool"}
    assert "limit rpm 2" in seen["p2"] and "limit usd_day" in seen["c2"]
    assert "error" not in seen["p0"]


def test_limits_are_checked_whole() -> None:
    base = {"name": "t", "kind": "http", "http": {"url": "http://127.0.0.1/x"}}
    with pytest.raises(SpecError, match="usd_per_call"):
        parse_spec({**base, "limits": {"usd_day": 5}})
    with pytest.raises(SpecError, match=r"limits\.rpm"):
        parse_spec({**base, "limits": {"rpm": 0}})
    with pytest.raises(SpecError, match=r"limits\.hourly"):
        parse_spec({**base, "limits": {"hourly": 3}})


CALLER = """
import asyncio, json, sys
from keel.agents.budgets import ToolBudgets
from keel.agents.tools import parse_spec
from keel.store.redis.limits import RedisLimits

async def main():
    counters = RedisLimits(sys.argv[1], prefix=sys.argv[2])
    spec = parse_spec({"name": "send", "kind": "http", "http": {"url": "http://127.0.0.1/x"},
                       "limits": {"calls_day": 7}})
    out = [await ToolBudgets(counters).admit("t1", spec) for _ in range(5)]
    await counters.aclose()
    print(json.dumps(out))

asyncio.run(main())
"""


def test_two_processes_sharing_redis_count_the_same_calls(redis_url: str, redis_prefix: str, tmp_path: Path) -> None:
    script = tmp_path / "caller.py"
    script.write_text(CALLER)
    procs = [
        subprocess.Popen([sys.executable, str(script), redis_url, redis_prefix], stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    results = []
    for p in procs:
        out, _ = p.communicate(timeout=60)
        assert p.returncode == 0
        results += json.loads(out)
    admitted = [r for r in results if r is None]
    refused = [r for r in results if r is not None]
    assert len(admitted) == 7 and len(refused) == 3  # 10 calls from two processes, 7 a day
    assert all("limit calls_day 7 is reached (used 7)" in r for r in refused)
