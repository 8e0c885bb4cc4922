"""The audit log keeps evidence of a tool call cut short: `tool.run` (who, which tool, the arguments) is
committed while the tool executes, before its result is used, and `tool.result` after. `keel serve` runs as
a real process and is killed (kill -9) while a tool hangs in a test HTTP service: the log holds the call's
`tool.run` and no `tool.result`, and `keel audit verify` passes on it."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
from pathlib import Path

import httpx
import yaml

from keel.audit.log import AuditLog
from keel.testing import FakeUpstream
from keel.testing.fake_upstream import Script

from .test_approval_crash import ADMIN, KEEL, configured, env, serve
from .test_runs import completion, until
from .tool_service import tool_service


def run_in_background(url: str, key: str, spec: dict[str, object], body: dict[str, object]) -> threading.Thread:
    """Register the tool `spec` over the admin API, then start a run of `body` in a thread that outlives
    the gateway's kill (its answer is never read)."""
    r = httpx.post(url + "/api/agents/tools", json=spec, headers={"authorization": f"Bearer {ADMIN}"})
    assert r.status_code == 201, r.text

    def start() -> None:
        with contextlib.suppress(httpx.HTTPError):  # the gateway dies under it
            httpx.post(url + "/api/agents/runs", json=body, headers={"authorization": f"Bearer {key}"}, timeout=120)

    client = threading.Thread(target=start, daemon=True)
    client.start()
    return client


def test_a_tool_cut_short_by_kill_9_leaves_its_tool_run_entry(
    up: FakeUpstream, storage_url: str, tmp_path: Path
) -> None:
    store, key, url = configured(up, storage_url, tmp_path)
    log = AuditLog(store)

    def entries(action: str) -> list[dict[str, object]]:
        return [json.loads(e.detail) | {"target": e.target} for e in log.entries() if e.action == action]

    with tool_service() as svc:
        up.script(Script(body_override=completion(("call_h", "hang", {"order": 7}))), Script(text="never"))
        with serve(tmp_path, "first", url) as gateway:
            spec = {"tenant": "t1", "name": "hang", "kind": "http", "timeout_s": 120,
                    "http": {"method": "POST", "url": svc.url + "/hang"}}  # fmt: skip
            client = run_in_background(url, key, spec, {"model": "gpt-4o-mini", "input": "go", "tools": ["hang"]})
            assert svc.entered.wait(60), "the tool was never called"
            (started,) = until(lambda: entries("tool.run"), 30)  # committed while the tool still hangs
            assert not svc.release.is_set()
            os.kill(gateway.pid, signal.SIGKILL)
            gateway.wait()
            client.join(30)

    print(f"\n  after kill -9 mid-tool: tool.run {started}; tool.result entries: {entries('tool.result')}")
    assert started["target"] == "hang" and started["arguments"] == {"order": 7}
    assert entries("tool.result") == []
    verified = subprocess.run([*KEEL, "audit", "verify"], cwd=tmp_path, env=env(), capture_output=True, text=True,
                              timeout=60)  # fmt: skip
    assert verified.returncode == 0, verified.stdout + verified.stderr
    (call,) = [c for c in store.list_calls(tenant="t1") if c.tool == "hang"]
    assert call.state == "running"  # and a resumed run reports it interrupted, never re-runs it
    assert started["result"] == {"call": call.id, "run": call.run_id}
    store.close()


def test_with_fast_outcomes_a_kill_9_after_the_tool_loses_nothing(
    up: FakeUpstream, storage_url: str, tmp_path: Path
) -> None:
    """`audit.tool_outcomes: fast` (no WAL-flush wait for the outcome): `keel serve` killed (kill -9) while the
    model is being told a tool's result still leaves the call `done` with its result, its `tool.result`
    entry, a chain that verifies, and the side effect once — only a database server crash may lose them."""
    store, key, url = configured(up, storage_url, tmp_path)
    raw = yaml.safe_load((tmp_path / "keel.yaml").read_text())
    (tmp_path / "keel.yaml").write_text(yaml.safe_dump({**raw, "audit": {"tool_outcomes": "fast"}}))
    log = AuditLog(store)
    with tool_service() as svc:
        up.script(Script(body_override=completion(("call_p", "pay", {"amount": 5}))), Script(text="late", delay=20))
        with serve(tmp_path, "first", url) as gateway:
            spec = {"tenant": "t1", "name": "pay", "kind": "http", "http": {"method": "POST", "url": svc.url + "/pay"},
                    "parameters": {"type": "object", "properties": {"amount": {"type": "number"}}}}  # fmt: skip
            client = run_in_background(url, key, spec, {"model": "gpt-4o-mini", "input": "pay", "tools": ["pay"]})
            (result,) = until(lambda: [e for e in log.entries() if e.action == "tool.result"], 30)
            until(lambda: len(up.requests) >= 2, 30)  # the model is being told the result
            os.kill(gateway.pid, signal.SIGKILL)
            gateway.wait()
            client.join(30)
        assert len(svc.payments) == 1

    (call,) = [c for c in store.list_calls(tenant="t1") if c.tool == "pay"]
    assert call.state == "done" and call.result is not None and "r-1" in call.result
    assert json.loads(result.detail)["result"]["call"] == call.id
    verified = subprocess.run([*KEEL, "audit", "verify"], cwd=tmp_path, env=env(), capture_output=True, text=True,
                              timeout=60)  # fmt: skip
    assert verified.returncode == 0, verified.stdout + verified.stderr
    store.close()
