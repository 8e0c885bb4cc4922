"""Named agents over the admin API, over real HTTP: create, list, get, replace, delete; each change an audit
entry with before and after; a name taken by another agents route (tools, secrets, runs) refused with a 400
naming `name`; a tenant's key reaches only its own tenant; a created agent starts runs by name."""

from __future__ import annotations

import httpx

from keel.testing import FakeUpstream
from keel.testing.fake_upstream import Script

from ..conftest import Gateway
from .test_runs import admin, agw, keyed  # noqa: F401  (fixtures and helpers)

LOOKUP = {"tenant": "t1", "name": "lookup", "kind": "http", "http": {"method": "GET", "url": "http://127.0.0.1:9/x"}}


def _audit(a: httpx.Client, action: str) -> list[dict[str, object]]:
    entries = a.get("/api/audit", params={"limit": 1000}).json()["data"]
    return [e for e in entries if e["action"] == action]


def test_named_agents_crud_over_http_is_audited(agw: Gateway, up: FakeUpstream) -> None:  # noqa: F811
    with admin(agw) as a:
        assert a.post("/api/agents/tools", json=LOOKUP).status_code == 201
        spec = {"tenant": "t1", "name": "helper", "model": "gpt-4o-mini", "tools": ["lookup"], "roles": ["viewer"]}
        r = a.post("/api/agents", json=spec)
        assert r.status_code == 201, r.text
        assert r.json()["max_steps"] == 8 and r.json()["tools"] == ["lookup"]
        again = a.post("/api/agents", json=spec)
        assert again.status_code == 409 and "PUT /api/agents/helper" in again.json()["error"]["message"]

        assert [x["name"] for x in a.get("/api/agents", params={"tenant": "t1"}).json()["data"]] == ["helper"]
        assert a.get("/api/agents", params={"tenant": "t2"}).json()["data"] == []
        assert a.get("/api/agents/helper", params={"tenant": "t1"}).json()["roles"] == ["viewer"]
        assert a.get("/api/agents/helper", params={"tenant": "t2"}).status_code == 404

        put = a.put("/api/agents/helper", json={"tenant": "t1", "model": "gpt-4o-mini", "max_steps": 2})
        assert put.status_code == 200, put.text
        assert put.json()["tools"] == [] and put.json()["max_steps"] == 2
        fresh = a.put("/api/agents/second", json={"tenant": "t1", "model": "gpt-4o-mini"})
        assert fresh.status_code == 201, fresh.text

        registered = _audit(a, "agent.register")
        assert [(e["target"], e["tenant"]) for e in registered] == [("helper", "t1")] * 2 + [("second", "t1")]
        assert registered[1]["detail"]["before"]["tools"] == ["lookup"]  # type: ignore[index]
        assert registered[1]["detail"]["after"]["max_steps"] == 2  # type: ignore[index]

        assert a.delete("/api/agents/second", params={"tenant": "t1"}).json() == {"deleted": "second"}
        assert a.delete("/api/agents/second", params={"tenant": "t1"}).status_code == 404
        assert [e["target"] for e in _audit(a, "agent.remove")] == ["second"]
        assert a.get("/api/audit/verify").json()["ok"] is True
        # this machine allows per-run cgroups (v1, writable): readyz says the sandbox uses them
        assert a.get("/readyz").json()["sandbox_cgroups"] == "ok"

        # with a virtual key: its own tenant only, and runs start by the agent's name
        with keyed(agw) as k:
            assert [x["name"] for x in k.get("/api/agents").json()["data"]] == ["helper"]
            assert k.get("/api/agents", params={"tenant": "t2"}).status_code == 403
            up.script(Script(text="hello from helper"))
            run = k.post("/api/agents/runs", json={"agent": "helper", "input": "hi"}).json()
            assert run["state"] == "done" and run["answer"] == "hello from helper", run


def test_bad_agents_are_refused_naming_the_field(agw: Gateway) -> None:  # noqa: F811
    with admin(agw) as a:
        cases = [
            (a.post, "/api/agents", {"tenant": "t1", "name": "tools", "model": "m"}, "name"),
            (a.post, "/api/agents", {"tenant": "t1", "name": "runs", "model": "m"}, "name"),
            (a.put, "/api/agents/secrets", {"tenant": "t1", "model": "m"}, "name"),
            (a.put, "/api/agents/runs", {"tenant": "t1", "model": "m"}, "name"),
            (a.put, "/api/agents/x", {"tenant": "t1", "name": "y", "model": "m"}, "name"),
            (a.post, "/api/agents", {"tenant": "t1", "name": "a b", "model": "m"}, "name"),
            (a.post, "/api/agents", {"tenant": "t1", "name": "ok"}, "model"),
            (a.post, "/api/agents", {"tenant": "t1", "name": "ok", "model": "m", "max_steps": 0}, "max_steps"),
            (a.post, "/api/agents", {"tenant": "t1", "name": "ok", "model": "m", "tools": ["nope"]}, "tools"),
            (a.post, "/api/agents", {"tenant": "t1", "name": "ok", "model": "m", "colour": "red"}, "colour"),
            (a.post, "/api/agents", {"name": "ok", "model": "m"}, "tenant"),
        ]
        for send, path, body, field in cases:
            r = send(path, json=body)
            assert r.status_code == 400, (path, body, r.text)
            assert r.json()["error"]["param"] == field, (body, r.json())
        r = a.delete("/api/agents/tools", params={"tenant": "t1"})
        assert r.status_code == 400 and r.json()["error"]["param"] == "name"
        assert a.get("/api/agents/tools", params={"tenant": "t1"}).json() == {"data": []}  # the tools route
        assert a.get("/api/agents", params={"tenant": "t1"}).json() == {"data": []}
        assert _audit(a, "agent.register") == []
