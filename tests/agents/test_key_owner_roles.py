"""A virtual key issued for a user acts, in agent runs and at /mcp, with that user's roles: a tool policy
naming a role applies to the key's runs. Issuing a key for a user who holds permissions the issuer lacks is
refused (403 naming `user`) by the admin API and by the dashboard's keys page. Over real HTTP."""

from __future__ import annotations

import re

import httpx

from keel.dashboard.session import COOKIE, Sessions, SignedIn
from keel.testing import FakeUpstream
from keel.testing.fake_upstream import Script

from ..conftest import Gateway
from .test_runs import admin, agw, completion, service  # noqa: F401  (fixtures and helpers)
from .tool_service import ToolService

CSRF = re.compile(r'name="csrf" value="([0-9a-f]{64})"')


def _user(a: httpx.Client, user: str, role: str) -> dict[str, str]:
    """Add a user of t1 with `role`; the Authorization header of a personal access token of theirs."""
    r = a.post("/api/users", json={"tenant": "t1", "id": user, "roles": [role]})
    assert r.status_code == 201, r.text
    r = a.post("/api/tokens", json={"user": user})
    assert r.status_code == 201, r.text
    return {"authorization": f"Bearer {r.json()['token']}"}


def _key(c: httpx.Client, user: str | None) -> httpx.Response:
    return c.post("/api/keys", json={"tenant": "t1", "name": f"for-{user}", "user": user})


def _pay(gw: Gateway, up: FakeUpstream, key: str) -> str:
    """Run the agent with `key`; the state of its `pay` call."""
    up.script(Script(body_override=completion(("c1", "pay", {"amount": 5}))), Script(text="done"))
    with httpx.Client(base_url=gw.url, headers={"authorization": f"Bearer {key}"}, timeout=30) as k:
        run = k.post("/api/agents/runs", json={"model": "gpt-4o-mini", "input": "pay", "tools": ["pay"]}).json()
    assert run["state"] == "done", run
    return str(next(s["state"] for s in run["steps"] if s["kind"] == "tool"))


def test_a_keys_runs_act_with_its_users_roles(agw: Gateway, up: FakeUpstream, service: ToolService) -> None:  # noqa: F811
    pay = {"tenant": "t1", "name": "pay", "kind": "http", "http": {"method": "POST", "url": service.url + "/pay"},
           "policy": {"default": "allow", "rules": [{"roles": ["viewer"], "action": "deny"}]}}  # fmt: skip
    with admin(agw) as a:
        assert a.post("/api/agents/tools", json=pay).status_code == 201
        _user(a, "vic", "viewer")
        _user(a, "dev", "developer")
        keys = {u: _key(a, u).json()["key"] for u in ("vic", "dev", "someone")}

    assert _pay(agw, up, keys["dev"]) == "done"
    assert _pay(agw, up, keys["someone"]) == "done"  # a free-text user is attribution only: no roles
    assert _pay(agw, up, keys["vic"]) == "denied"  # the viewer's key may not pay
    assert len(service.payments) == 2
    with admin(agw) as a:  # a disabled user's roles no longer apply to their keys' runs
        assert a.patch("/api/users/vic", json={"disabled": True}).status_code == 200
    assert _pay(agw, up, keys["vic"]) == "done"
    assert len(service.payments) == 3


def test_a_key_for_a_more_privileged_user_is_refused(agw: Gateway) -> None:  # noqa: F811
    with admin(agw) as a:
        dev = _user(a, "dev", "developer")
        _user(a, "own", "owner")
        _user(a, "vic", "viewer")
        _user(a, "aud", "auditor")
        assert _key(a, "own").status_code == 201  # the operator holds everything
    with httpx.Client(base_url=agw.url, headers=dev, timeout=30) as d:
        for user in ("own", "aud"):  # an owner holds more; an auditor holds audit.read, which a developer lacks
            r = _key(d, user)
            assert r.status_code == 403, r.text
            assert r.json()["error"]["param"] == "user" and "may not issue a key for" in r.json()["error"]["message"]
        for user in ("vic", "dev", "someone", None):
            assert _key(d, user).status_code == 201, user
    # the dashboard, signed in as the developer (the session an SSO sign-in makes)
    cookie = Sessions(agw.admin).issue(SignedIn("user:dev", "t1", ("developer",), 0, "Dev"))
    with httpx.Client(base_url=agw.url, timeout=30, cookies={COOKIE: cookie}) as d:
        page = d.get("/ui/keys")
        token = CSRF.search(page.text)
        assert token, page.text[:2000]
        refused = d.post("/ui/keys", data={"csrf": token.group(1), "tenant": "t1", "name": "x", "user": "own"})
        assert refused.status_code == 403 and "may not issue a key for" in refused.text
        made = d.post("/ui/keys", data={"csrf": token.group(1), "tenant": "t1", "name": "y", "user": "vic"})
        assert made.status_code == 201, made.text[:2000]
    with admin(agw) as a:
        owners = sorted(k["user"] for k in a.get("/api/keys", params={"tenant": "t1"}).json()["data"] if k["user"])
    assert owners == ["dev", "own", "someone", "vic", "vic"]
