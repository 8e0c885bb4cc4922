"""`keel runs replay RUN --live`: the run again, for real, under today's tools and policy: its tools run
(the side effect happens again), and its steps, model and tool, are compared with the recorded ones."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from keel.testing import FakeUpstream
from keel.testing.fake_upstream import Script

from ..conftest import Gateway
from .test_runs import admin, agw, completion, keyed, service  # noqa: F401  (fixtures and helpers)
from .tool_service import ToolService


def replay(tmp: Path, run_id: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "KEEL_CONFIG"}
    return subprocess.run([sys.executable, "-m", "keel.cli.main", "runs", "replay", run_id, "--live"], cwd=tmp,
                          capture_output=True, text=True, timeout=120, env=env)  # fmt: skip


def test_a_live_replay_runs_the_tools_again_and_names_the_divergence(
    agw: Gateway,  # noqa: F811
    up: FakeUpstream,
    service: ToolService,  # noqa: F811
    tmp_path: Path,
) -> None:
    pay = {"tenant": "t1", "name": "pay", "kind": "http", "http": {"method": "POST", "url": service.url + "/pay"}}
    with admin(agw) as a:
        assert a.post("/api/agents/tools", json=pay).status_code == 201

    def script(amount: int) -> None:
        up.script(Script(body_override=completion(("c1", "pay", {"amount": amount}))), Script(text="Paid."))

    script(5)
    with keyed(agw) as k:
        run = k.post("/api/agents/runs", json={"model": "gpt-4o-mini", "input": "pay 5", "tools": ["pay"]}).json()
    assert run["state"] == "done" and len(service.payments) == 1

    script(5)
    same = replay(tmp_path, run["id"])
    print(same.stdout)
    assert same.returncode == 0, same.stdout + same.stderr
    assert "no divergence in 3 steps" in same.stdout and "(done) against" in same.stdout
    assert len(service.payments) == 2  # live: the tool ran again

    script(7)
    other = replay(tmp_path, run["id"])
    print(other.stdout)
    assert other.returncode == 1 and "diverges at step 1" in other.stdout and '{"amount":7}' in other.stdout

    # today's policy applies: the same model answers, the tool is now denied
    with admin(agw) as a:
        r = a.post("/api/agents/tools", json={**pay, "policy": {"default": "deny"}})
        assert r.status_code == 200, r.text
    script(5)
    denied = replay(tmp_path, run["id"])
    print(denied.stdout)
    assert denied.returncode == 1 and "diverges at step 2" in denied.stdout
    assert 'tool pay({"amount":5}) denied' in denied.stdout
    assert len(service.payments) == 3  # the amount-7 replay paid; the denied one did not
