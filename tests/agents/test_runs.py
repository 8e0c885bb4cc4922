"""Agent runs over real HTTP: a model scripted through the fake upstream calls two tools (one reads with a
secret that the service echoes back, one needs approval), the run pauses, an approver approves (twice),
the run completes, the side effect happened once, the secret is nowhere, and `keel runs show` prints the
step tree. Plus policy denial, schema validation and unknown tools as tool errors to the model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from keel.audit.log import AuditLog
from keel.testing import FakeUpstream
from keel.testing.fake_upstream import Script

from ..conftest import Gateway, base_config
from .tool_service import ToolService, tool_service

SECRET = "tok-SECRET-7f3a9c21e5"
MASTER = "11" * 32
T = TypeVar("T")


def completion(*calls: tuple[str, str, dict[str, Any]]) -> dict[str, Any]:
    """An OpenAI chat completion whose message calls `calls` ((id, tool, arguments), ...)."""
    tool_calls = [
        {"id": i, "type": "function", "function": {"name": n, "arguments": json.dumps(a)}} for i, n, a in calls
    ]
    return {
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-4o-mini",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": None, "tool_calls": tool_calls},
                     "finish_reason": "tool_calls"}],
        "usage": {"prompt_tokens": 20, "completion_tokens": 5, "total_tokens": 25},
    }  # fmt: skip


def until(check: Callable[[], T], timeout_s: float = 20) -> T:
    deadline = time.monotonic() + timeout_s
    while not (found := check()):
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        time.sleep(0.02)
    return found


@pytest.fixture
def service() -> Iterator[ToolService]:
    with tool_service() as svc:
        yield svc


@pytest.fixture
def agw(
    make_gateway: Any, up: FakeUpstream, storage_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Gateway:
    monkeypatch.setenv("KEEL_MASTER_KEY", MASTER)
    return make_gateway(base_config(up, storage_url, tmp_path))  # type: ignore[no-any-return]


def admin(gw: Gateway) -> httpx.Client:
    return httpx.Client(base_url=gw.url, headers={"authorization": f"Bearer {gw.admin}"}, timeout=30)


def keyed(gw: Gateway) -> httpx.Client:
    return httpx.Client(base_url=gw.url, headers={"authorization": f"Bearer {gw.key}"}, timeout=30)


def register(gw: Gateway, svc: ToolService) -> None:
    with admin(gw) as a:
        r = a.put("/api/agents/secrets/crm_token", json={"tenant": "t1", "value": SECRET})
        assert r.status_code == 201, r.text
        assert SECRET not in r.text
        lookup = {
            "tenant": "t1", "name": "lookup", "kind": "http", "description": "find a customer",
            "parameters": {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]},
            "http": {"method": "GET", "url": svc.url + "/echo"},
            "secrets": [{"name": "crm_token", "header": "Authorization", "format": "Bearer {value}"}],
        }  # fmt: skip
        pay = {
            "tenant": "t1", "name": "pay", "kind": "http", "description": "pay an invoice",
            "parameters": {"type": "object", "properties": {"amount": {"type": "number"}}, "required": ["amount"]},
            "http": {"method": "POST", "url": svc.url + "/pay"},
            "policy": {"default": "allow", "rules": [{"when": "amount > 100", "action": "approve"}]},
        }  # fmt: skip
        for spec in (lookup, pay):
            r = a.post("/api/agents/tools", json=spec)
            assert r.status_code == 201, r.text


def test_a_multi_step_run_pauses_for_approval_and_completes_once(
    agw: Gateway, up: FakeUpstream, service: ToolService, tmp_path: Path
) -> None:
    register(agw, service)
    up.script(
        Script(body_override=completion(("call_a", "lookup", {"q": "acme"}))),
        Script(body_override=completion(("call_b", "pay", {"amount": 250}))),
        Script(text="Paid ACME's invoice of 250."),
    )
    with keyed(agw) as k:
        r = k.post("/api/agents/runs", json={"model": "gpt-4o-mini", "input": "pay acme", "tools": ["lookup", "pay"]})
    assert r.status_code == 200, r.text
    run = r.json()
    assert run["state"] == "waiting", run
    (call_id,) = run["pending"]
    assert service.payments == []  # nothing paid before approval

    with admin(agw) as a:
        pending = a.get("/api/approvals", params={"tenant": "t1"}).json()["data"]
        assert [(p["id"], p["tool"], p["arguments"]) for p in pending] == [(call_id, "pay", {"amount": 250})]
        first = a.post(f"/api/approvals/{call_id}/approve", json={"by": "alice"})
        second = a.post(f"/api/approvals/{call_id}/approve", json={"by": "bob"})
        assert (first.status_code, first.json()["changed"]) == (200, True)
        assert (second.status_code, second.json()["changed"], second.json()["decided_by"]) == (
            409,
            False,
            "admin:alice",
        )

        done = until(lambda: (v := a.get(f"/api/agents/runs/{run['id']}").json())["state"] in ("done", "failed") and v)
    assert done["state"] == "done", done
    assert done["answer"] == "Paid ACME's invoice of 250."
    assert len(service.payments) == 1
    assert service.payments[0]["key"] == call_id  # the call's idempotency key travels to the service
    tools = [s for s in done["steps"] if s["kind"] == "tool"]
    assert [(s["tool"], s["state"]) for s in tools] == [("lookup", "done"), ("pay", "done")]
    assert [s["n"] for s in done["steps"] if s["kind"] == "model"] == [1, 2, 3]

    # The model saw the echo, with the secret replaced; the secret is in no message, trace, span, API or log.
    bodies = [json.dumps(q["json"]) for q in up.requests]
    assert any("[secret]" in b for b in bodies)
    leaks = {"model requests": bodies, "run": [json.dumps(done)]}
    store = agw.runtime.store
    agw.traces()
    spans = until(lambda: (s := store.trace_spans(done["trace_id"])) and len(s) >= 5 and s)
    leaks["spans"] = [json.dumps(s.attributes) for s in spans]
    leaks["audit"] = [line.decode() for line in AuditLog(store).export()]
    with admin(agw) as a:
        leaks["api"] = [
            a.get(p, params={"tenant": "t1"}).text for p in ("/api/agents/secrets", "/api/agents/tools", "/api/audit")
        ]
    for where, texts in leaks.items():
        assert not any(SECRET in t for t in texts), f"the secret leaked into {where}"
    assert {s.kind for s in spans} >= {"model", "tool"}
    assert [s.name for s in spans if s.kind == "tool"] == ["lookup", "pay"]
    actions = [json.loads(x)["action"] for x in leaks["audit"]]
    for action in ("secret.set", "tool.register", "secret.use", "approval.requested", "approval.approved", "tool.run"):
        assert action in actions, actions
    assert AuditLog(store).verify().ok

    shown = subprocess.run(
        [sys.executable, "-m", "keel.cli.main", "runs", "show", run["id"]], cwd=tmp_path, capture_output=True,
        text=True, timeout=60, env={k: v for k, v in os.environ.items() if k != "KEEL_CONFIG"},
    )  # fmt: skip
    print("\n" + shown.stdout)
    assert shown.returncode == 0, shown.stderr
    tree = shown.stdout
    assert "step 1 model" in tree and "step 3 model" in tree
    assert "tool lookup" in tree and "tool pay" in tree and "approved by admin:alice" in tree
    assert "answer: Paid ACME's invoice of 250." in tree
    assert SECRET not in tree

    # Replay: the model steps again, with the recorded tool results (no tool runs: the payment count stays 1).
    def replay() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "keel.cli.main", "runs", "replay", run["id"]], cwd=tmp_path, capture_output=True,
            text=True, timeout=60, env={k: v for k, v in os.environ.items() if k != "KEEL_CONFIG"},
        )  # fmt: skip

    up.script(
        Script(body_override=completion(("call_a", "lookup", {"q": "acme"}))),
        Script(body_override=completion(("call_b", "pay", {"amount": 250}))),
        Script(text="Paid ACME's invoice of 250."),
    )
    same = replay()
    assert same.returncode == 0, same.stdout + same.stderr
    assert "no divergence in 3 steps" in same.stdout, same.stdout + same.stderr
    up.script(
        Script(body_override=completion(("call_a", "lookup", {"q": "acme"}))),
        Script(body_override=completion(("call_b", "pay", {"amount": 2500}))),
        Script(text="Paid."),
    )
    other = replay()
    print(other.stdout)
    assert other.returncode == 1 and "diverges at step 2" in other.stdout and '{"amount":2500}' in other.stdout
    assert len(service.payments) == 1


def test_denials_bad_arguments_and_unknown_tools_go_back_to_the_model(
    agw: Gateway, up: FakeUpstream, service: ToolService
) -> None:
    register(agw, service)
    with admin(agw) as a:
        r = a.post("/api/agents/tools", json={
            "tenant": "t1", "name": "wipe", "kind": "http", "http": {"url": service.url + "/pay"},
            "policy": {"default": "deny"},
        })  # fmt: skip
        assert r.status_code == 201, r.text
    up.script(
        Script(body_override=completion(
            ("c1", "wipe", {}), ("c2", "pay", {"amount": "lots"}), ("c3", "rm_rf", {}), ("c4", "pay", {"amount": 5})
        )),
        Script(text="I could not do most of that."),
    )  # fmt: skip
    with keyed(agw) as k:
        r = k.post("/api/agents/runs", json={"model": "gpt-4o-mini", "input": "x", "tools": ["wipe", "pay"]})
    run = r.json()
    assert run["state"] == "done", run
    tool_msgs = [m["content"] for m in up.requests[-1]["json"]["messages"] if m["role"] == "tool"]
    assert "denied by policy" in tool_msgs[0]
    assert "invalid arguments for 'pay'" in tool_msgs[1] and "amount" in tool_msgs[1]
    assert "'rm_rf' is not a tool of this run" in tool_msgs[2]
    assert "receipt" in tool_msgs[3]  # amount 5: allowed without approval
    assert len(service.payments) == 1


def test_bad_input_is_a_4xx_naming_the_field(agw: Gateway, service: ToolService) -> None:
    with admin(agw) as a:
        r = a.post("/api/agents/tools", json={"tenant": "t1", "name": "x", "kind": "http", "http": {"url": "ftp://x"}})
        assert r.status_code == 400 and r.json()["error"]["param"] == "http.url", r.text
        r = a.post("/api/agents/tools", json={"tenant": "t1", "name": "x", "kind": "code"})
        assert r.status_code == 400 and "needs its 'code' section" in r.text
        r = a.post(
            "/api/agents/tools",
            json={"tenant": "t1", "name": "x", "kind": "http", "bogus": 1, "http": {"url": "http://a"}},
        )
        assert r.status_code == 400 and r.json()["error"]["param"] == "bogus"
        r = a.post("/api/agents/tools", json={
            "tenant": "t1", "name": "x", "kind": "http", "http": {"url": "http://a"},
            "policy": {"rules": [{"when": "amount >> 3", "action": "approve"}]},
        })  # fmt: skip
        assert r.status_code == 400 and "condition" in r.text
    with keyed(agw) as k:
        r = k.post("/api/agents/runs", json={"model": "gpt-4o-mini", "input": "x", "tools": ["nope"]})
        assert r.status_code == 400 and r.json()["error"]["param"] == "tools"
        r = k.post("/api/agents/runs", json={"model": "gpt-4o-mini"})
        assert r.status_code == 400 and r.json()["error"]["param"] == "input"
        r = k.get("/api/agents/tools", params={"tenant": "other"})
        assert r.status_code == 403


def test_a_chat_call_with_keel_tools_runs_them_and_hands_client_tools_back(
    agw: Gateway, up: FakeUpstream, service: ToolService
) -> None:
    import openai

    register(agw, service)
    client = openai.OpenAI(base_url=agw.base_url, api_key=agw.key)
    up.script(Script(body_override=completion(("c1", "lookup", {"q": "acme"}))), Script(text="ACME is a customer."))
    r = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "who is acme?"}],
        extra_body={"keel_tools": ["lookup"]},
    )
    assert r.choices[0].message.content == "ACME is a customer."
    sent = up.requests[-1]["json"]
    assert [m["role"] for m in sent["messages"]] == ["user", "assistant", "tool"]
    assert "keel_tools" not in sent and SECRET not in json.dumps(sent)

    weather = {
        "type": "function",
        "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {}}},
    }
    up.script(Script(body_override=completion(("c9", "get_weather", {}))))
    r = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "weather?"}], tools=[weather],  # type: ignore[list-item]
        extra_body={"keel_tools": ["lookup"]},
    )  # fmt: skip
    assert r.choices[0].finish_reason == "tool_calls"
    assert [c.function.name for c in r.choices[0].message.tool_calls or []] == ["get_weather"]
    assert {t["function"]["name"] for t in up.requests[-1]["json"]["tools"]} == {"lookup", "get_weather"}
    client.close()


def test_a_call_whose_claim_never_happened_is_proposed_again_on_resume_and_runs_once(
    agw: Gateway, up: FakeUpstream, service: ToolService
) -> None:
    """A call that needs no approval is stored by its claim, with its `tool.run` entry (one commit). A run
    whose process stopped after saving the step but before that claim has the call pending and no row of
    it: the runs worker resumes it, proposes the call again (the policy decides it now), runs it once, and
    the run completes; resuming again changes nothing."""
    register(agw, service)
    up.script(Script(body_override=completion(("call_p", "pay", {"amount": 5}))), Script(text="Paid."))
    with keyed(agw) as k:
        r = k.post("/api/agents/runs", json={"model": "gpt-4o-mini", "input": "pay", "tools": ["pay"]})
    assert r.status_code == 200 and r.json()["state"] == "done", r.text
    store = agw.runtime.store
    first = store.get_run(r.json()["id"])
    assert first is not None
    # the same run as it was saved after its first model step, under a new id: its call has no row yet
    data = dict(first.data, id="run_stopped", trace_id="trc_stopped", answer=None)
    data["messages"] = first.data["messages"][:2]
    data["steps"] = first.data["steps"][:1]
    data["pending"] = [{"call_id": "run_stopped:call_p", "tool_call_id": "call_p"}]
    assert store.get_call("run_stopped:call_p") is None
    up.script(Script(text="Paid, again."))
    stale = time.time() - 3600  # its process is gone: the runs worker takes it over
    store.put_run(type(first)("run_stopped", "t1", "running", data, stale, stale))
    with admin(agw) as a:
        done = until(lambda: (v := a.get("/api/agents/runs/run_stopped").json())["state"] in ("done", "failed") and v)
    assert done["state"] == "done" and done["answer"] == "Paid, again.", done
    assert [p["key"] for p in service.payments] == [f"{first.id}:call_p", "run_stopped:call_p"]
    call = store.get_call("run_stopped:call_p")
    assert call is not None and call.state == "done"
    log = AuditLog(store)
    runs = [json.loads(e.detail)["result"]["call"] for e in log.entries() if e.action == "tool.run"]
    assert runs == [f"{first.id}:call_p", "run_stopped:call_p"]
    assert log.verify().ok
    time.sleep(1.5)  # three sweeps of the runs worker: nothing is run again
    assert len(service.payments) == 2
