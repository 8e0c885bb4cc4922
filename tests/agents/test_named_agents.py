"""Named agents (`keel agents add`, runs started with {agent: NAME}) and roles and agents as policy
subjects: a rule naming a role applies to runs of an agent acting as that role, and not to others."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from keel.agents.policy import Subject, decide
from keel.agents.tools import parse_spec
from keel.testing import FakeUpstream
from keel.testing.fake_upstream import Script

from ..conftest import Gateway
from .test_runs import admin, agw, completion, keyed, service  # noqa: F401  (fixtures and helpers)
from .tool_service import ToolService


def keel(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "KEEL_CONFIG"}
    return subprocess.run([sys.executable, "-m", "keel.cli.main", *args], cwd=tmp, capture_output=True, text=True,
                          timeout=60, env=env)  # fmt: skip


def test_a_named_agent_runs_with_its_settings_and_its_roles_in_policy(
    agw: Gateway,  # noqa: F811
    up: FakeUpstream,
    service: ToolService,  # noqa: F811
    tmp_path: Path,
) -> None:
    lookup = {"tenant": "t1", "name": "lookup", "kind": "http", "http": {"method": "GET", "url": service.url + "/echo"},
              "policy": {"default": "allow", "rules": [{"agents": ["intern"], "action": "deny"}]}}  # fmt: skip
    pay = {"tenant": "t1", "name": "pay", "kind": "http", "http": {"method": "POST", "url": service.url + "/pay"},
           "policy": {"default": "allow", "rules": [{"roles": ["viewer", "auditor"], "action": "deny"}]}}  # fmt: skip
    with admin(agw) as a:
        for spec in (lookup, pay):
            assert a.post("/api/agents/tools", json=spec).status_code == 201
    missing = keel(tmp_path, "agents", "add", "helper", "--tenant", "t1", "--model", "gpt-4o-mini", "--tools", "nope")
    assert missing.returncode == 1 and "no tool nope" in missing.stderr
    added = keel(tmp_path, "agents", "add", "helper", "--tenant", "t1", "--model", "gpt-4o-mini", "--tools",
                 "lookup,pay", "--max-steps", "3", "--system", "You are careful.", "--roles", "viewer")  # fmt: skip
    assert added.returncode == 0, added.stderr
    listed = keel(tmp_path, "agents", "list", "--tenant", "t1", "--json")
    assert [(a["name"], a["model"], a["tools"], a["roles"]) for a in json.loads(listed.stdout)] == [
        ("helper", "gpt-4o-mini", ["lookup", "pay"], ["viewer"])
    ]

    up.script(Script(body_override=completion(("c1", "lookup", {}), ("c2", "pay", {"amount": 5}))), Script(text="ok"))
    with keyed(agw) as k:
        run = k.post("/api/agents/runs", json={"agent": "helper", "input": "pay the invoice"}).json()
        assert run["state"] == "done", run
        first = up.requests[-2]["json"]
        assert first["messages"][0] == {"role": "system", "content": "You are careful."}
        assert [t["function"]["name"] for t in first["tools"]] == ["lookup", "pay"]
        with admin(agw) as a:
            steps = a.get(f"/api/agents/runs/{run['id']}").json()["steps"]
        assert [(s["tool"], s["state"]) for s in steps if s["kind"] == "tool"] == [
            ("lookup", "done"),
            ("pay", "denied"),
        ]
        assert service.payments == []  # the role 'viewer' may not pay

        # the same tools without the agent: no role in play, so the rule does not apply and the payment goes
        up.script(Script(body_override=completion(("c3", "pay", {"amount": 5}))), Script(text="paid"))
        plain = k.post("/api/agents/runs", json={"model": "gpt-4o-mini", "input": "pay", "tools": ["pay"]}).json()
        assert plain["state"] == "done", plain
        assert len(service.payments) == 1

        for body, word in [({"agent": "nope", "input": "x"}, "No agent 'nope'"),
                           ({"agent": "helper", "model": "gpt-4o-mini", "input": "x"}, "not both")]:  # fmt: skip
            r = k.post("/api/agents/runs", json=body)
            assert r.status_code == 400 and word in r.json()["error"]["message"], r.text
            assert r.json()["error"]["param"] == "agent"

    shown = keel(tmp_path, "agents", "show", "helper", "--tenant", "t1")
    assert json.loads(shown.stdout)["system"] == "You are careful."
    assert keel(tmp_path, "agents", "remove", "helper", "--tenant", "t1").returncode == 0
    assert keel(tmp_path, "agents", "show", "helper", "--tenant", "t1").returncode == 1


def test_rules_name_roles_and_agents() -> None:
    spec = parse_spec({
        "name": "pay", "kind": "http", "http": {"url": "http://127.0.0.1:9/pay"},
        "policy": {"default": "allow", "rules": [
            {"roles": ["viewer"], "action": "deny"},
            {"agents": ["bot"], "when": "amount > 10", "action": "approve"},
        ]},
    })  # fmt: skip
    assert decide(spec, {"amount": 50}) == "allow"
    assert decide(spec, {"amount": 50}, Subject(None, frozenset({"viewer", "developer"}))) == "deny"
    assert decide(spec, {"amount": 50}, Subject("bot", frozenset({"developer"}))) == "approve"
    assert decide(spec, {"amount": 5}, Subject("bot")) == "allow"
    assert decide(spec, {"amount": 50}, Subject("other")) == "allow"
