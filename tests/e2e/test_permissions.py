"""The permission matrix over real HTTP: every role (operator, owner, admin, developer, viewer, auditor)
and a virtual key against every /api route of the app, allowed (anything but 401/403) or refused (403
naming the permission) exactly as keel.tenancy.roles says. The routes are enumerated from the app, so a
new /api route without a guard permission fails here. Also: a tenant's viewers see traces' content only
when the tenant allows it, auditors never; tokens' scopes narrow; another tenant is out of reach."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import httpx
import orjson
import pytest
from starlette.routing import Route

from keel.api.app import create_app
from keel.api.guard import Guard, Rule
from keel.audit.log import AuditLog
from keel.tenancy.actor import OPERATOR, ROLES, Actor
from keel.tenancy.directory import Directory
from keel.tenancy.roles import KEY_PERMISSIONS, MATRIX
from tests.conftest import Gateway

TENANT = "t1"
# /api routes no credential guards, each for its reason: the OpenAPI document is public (decision on the
# OpenAPI document); a signed approval link's page checks its own signature (keel.agents.links), and the
# link's POST goes to the guard unless it carries a signature
PUBLIC = {
    ("/api/openapi.json", "GET"),
    ("/api/approvals/{call_id}/approve", "GET"),
    ("/api/approvals/{call_id}/deny", "GET"),
}


def _guard(gateway: Gateway) -> tuple[Guard, list[Route]]:
    app = create_app(gateway.runtime).app
    guard = app.state.guard
    assert isinstance(guard, Guard)
    return guard, [r for r in app.routes if isinstance(r, Route) and r.path.startswith("/api")]


def _tokens(gateway: Gateway) -> dict[str, str]:
    """A personal access token for each role in tenant t1, and an operator user's."""
    d = gateway.runtime.get(Directory)

    async def make() -> dict[str, str]:
        out = {}
        for role in ROLES:
            user = await d.add_user(TENANT, (role,), user_id=f"{role}-1")
            out[role] = (await d.issue_token(user.id)).token
        op = await d.add_user(None, (OPERATOR,), user_id="op-1")
        out[OPERATOR] = (await d.issue_token(op.id)).token
        return out

    return asyncio.run(make())


def _url(rule: Rule) -> str:
    def fill(m: re.Match[str]) -> str:
        name = m.group(1).split(":")[0]
        if name == rule.tenant_param or (name == "subject" and "limits" in rule.path):
            return TENANT
        return {"scope": "tenant", "id": "doc-1"}.get(name, "nothing-here")

    return re.sub(r"\{([^}]+)\}", fill, rule.path)


def _call(client: httpx.Client, rule: Rule, token: str) -> httpx.Response:
    body: dict[str, str] | None = None if rule.method in ("GET", "DELETE") else {}
    # the purge route really purges: ask for one unknown user's data only
    if rule.path.endswith("/purge"):
        body = {"user": "nobody"}
    return client.request(rule.method, _url(rule), json=body, headers={"authorization": f"Bearer {token}"})


def test_every_api_route_names_a_permission(gateway: Gateway) -> None:
    guard, routes = _guard(gateway)
    guarded = {(r.path, r.method) for r in guard.rules}
    missing = [
        (r.path, m)
        for r in routes
        for m in sorted(r.methods or ())
        if m != "HEAD" and (r.path, m) not in guarded | PUBLIC
    ]
    assert not missing, f"admin routes without a permission (use Guard.route): {missing}"
    assert len(guarded) >= 60


def test_every_role_and_a_key_on_every_route(gateway: Gateway) -> None:
    guard, _ = _guard(gateway)
    tokens = {**_tokens(gateway), "key": gateway.key, "admin token": gateway.admin}
    wrong: list[str] = []
    with httpx.Client(base_url=gateway.url, timeout=30) as client:
        # the purge and sweep routes last: they change what is stored
        rules = sorted(guard.rules, key=lambda r: r.permission in ("data.purge", "retention.run"))
        for who, token in tokens.items():
            held = KEY_PERMISSIONS if who == "key" else MATRIX[OPERATOR if who == "admin token" else who]
            for rule in rules:
                r = _call(client, rule, token)
                allowed = rule.permission in held
                if allowed and r.status_code in (401, 403):
                    wrong.append(f"{who} {rule.method} {rule.path}: {r.status_code} {r.text[:160]}")
                elif not allowed and not (r.status_code == 403 and r.json()["error"]["param"] == rule.permission):
                    wrong.append(
                        f"{who} {rule.method} {rule.path}: expected 403 for {rule.permission}, got {r.status_code}"
                    )
    assert not wrong, "\n".join(wrong)


def test_no_credential_or_a_bad_one_is_401(gateway: Gateway) -> None:
    for headers in ({}, {"authorization": "Bearer nope"}, {"authorization": "Bearer keel_pat_forged"},
                    {"authorization": "Bearer sk-keel-forged"}):  # fmt: skip
        r = httpx.get(gateway.url + "/api/keys", headers=headers)
        assert r.status_code == 401, (headers, r.text)


def _trace_id(gateway: Gateway) -> str:
    r = httpx.post(gateway.base_url + "/chat/completions", headers={"authorization": f"Bearer {gateway.key}"},
                   json={"model": "sim", "messages": [{"role": "user", "content": "the secret plan"}]})  # fmt: skip
    assert r.status_code == 200, r.text
    trace_id = r.headers["x-keel-trace-id"]
    assert any(t.id == trace_id for t in gateway.traces())
    return trace_id


def test_viewers_see_content_only_where_their_tenant_allows(gateway: Gateway) -> None:
    tokens = _tokens(gateway)
    trace_id = _trace_id(gateway)

    def show(role: str) -> httpx.Response:
        return httpx.get(f"{gateway.url}/api/traces/{trace_id}", headers={"authorization": f"Bearer {tokens[role]}"})

    def content(r: httpx.Response) -> bool:
        assert r.status_code == 200, r.text
        return "request" in r.json() and "the secret plan" in str(r.json()["request"])

    assert content(show("developer")) and content(show("owner"))
    assert not content(show("viewer"))
    assert show("auditor").status_code == 403
    owner = {"authorization": f"Bearer {tokens['owner']}"}
    # a viewer cannot change the setting; the owner can
    r = httpx.patch(f"{gateway.url}/api/tenants/{TENANT}", json={"viewer_content": True},
                    headers={"authorization": f"Bearer {tokens['viewer']}"})  # fmt: skip
    assert r.status_code == 403 and r.json()["error"]["param"] == "tenants.write"
    r = httpx.patch(f"{gateway.url}/api/tenants/{TENANT}", json={"viewer_content": True}, headers=owner)
    assert (r.status_code, r.json()["viewer_content"]) == (200, True)
    assert content(show("viewer"))
    assert show("auditor").status_code == 403  # auditors never see content
    r = httpx.patch(f"{gateway.url}/api/tenants/{TENANT}", json={"viewer_content": False}, headers=owner)
    assert not content(show("viewer"))


def test_a_tenant_reaches_only_its_own(gateway: Gateway) -> None:
    gateway.runtime.store.create_tenant("other")
    tokens = _tokens(gateway)
    owner = {"authorization": f"Bearer {tokens['owner']}"}
    for method, path, body in (
        ("GET", "/api/keys?tenant=other", None),
        ("POST", "/api/keys", {"tenant": "other", "name": "x"}),
        ("PATCH", "/api/tenants/other", {"viewer_content": True}),
        ("POST", "/api/tenants/other/purge", {}),
        ("GET", "/api/prompts?tenant=other", None),
        ("GET", "/api/agents/tools?tenant=other", None),
    ):
        r = httpx.request(method, gateway.url + path, json=body, headers=owner)
        assert r.status_code == 403, (path, r.text)
    listed = httpx.get(gateway.url + "/api/tenants", headers=owner).json()["data"]
    assert [t["name"] for t in listed] == [TENANT]
    mine = httpx.get(gateway.url + "/api/keys", headers=owner).json()["data"]
    assert mine and {k["tenant"] for k in mine} == {TENANT}


def test_scopes_narrow_a_token(gateway: Gateway) -> None:
    d = gateway.runtime.get(Directory)

    async def make() -> str:
        user = await d.add_user(TENANT, ("owner",), user_id="scoped")
        return (await d.issue_token(user.id, scopes=("keys.read",))).token

    token = asyncio.run(make())
    headers = {"authorization": f"Bearer {token}"}
    assert httpx.get(gateway.url + "/api/keys", headers=headers).status_code == 200
    r = httpx.post(gateway.url + "/api/keys", json={"name": "x"}, headers=headers)
    assert r.status_code == 403 and r.json()["error"]["param"] == "keys.write"
    assert "scopes" in r.json()["error"]["message"]


def test_actor_vocabulary() -> None:
    viewer = Actor("user", "user:v", TENANT, frozenset({"viewer"}))
    assert viewer.can("traces.read") and not viewer.can("traces.content")
    assert viewer.tenant_for(None) == TENANT and viewer.scope(None) == TENANT
    with pytest.raises(Exception, match="own tenant"):
        viewer.tenant_for("other")
    op = Actor("operator", "admin", None, frozenset({OPERATOR}))
    assert op.scope(None) is None and op.tenant_for("x") == "x"


def test_admin_changes_are_audit_entries_with_their_actor(gateway: Gateway) -> None:
    tokens = _tokens(gateway)
    store = gateway.runtime.store
    before = store.audit_head()[0]

    def call(method: str, path: str, who: str, body: Any = None) -> httpx.Response:
        return httpx.request(method, gateway.url + path, json=body, headers={"authorization": f"Bearer {who}"})

    assert call("POST", "/api/keys", tokens["owner"], {"name": "ci", "password": "hunter2"}).status_code == 201
    assert call("POST", "/api/keys", tokens["viewer"], {"name": "nope"}).status_code == 403
    assert call("PATCH", f"/api/tenants/{TENANT}", gateway.admin, {"viewer_content": True}).status_code == 200
    assert call("GET", "/api/keys", tokens["owner"]).status_code == 200  # reads are not entries
    tool = {"name": "t1", "kind": "http", "description": "d", "http": {"method": "POST", "url": "http://127.0.0.1:9/x"}}
    assert call("POST", "/api/agents/tools", tokens["developer"], tool).status_code == 201
    entries = store.list_audit(after_seq=before)
    generic = [(e.actor, e.action, e.tenant, orjson.loads(e.detail)) for e in entries if " /api/" in e.action]
    assert [(a, act, t) for a, act, t, _ in generic] == [
        ("user:owner-1", "keys.write POST /api/keys", TENANT),
        ("user:viewer-1", "keys.write POST /api/keys", TENANT),
        ("admin", "tenants.write PATCH /api/tenants/{name}", TENANT),
    ]
    ok, refused, patched = (d for *_, d in generic)
    assert ok["result"] == {"status": 201, "outcome": "ok"}
    assert ok["arguments"] == {"name": "ci", "password": "[redacted]"}  # secret-looking fields never stored
    assert refused["result"] == {"status": 403, "outcome": "refused"}
    assert patched["arguments"] == {"viewer_content": True}
    assert [e.actor for e in entries if e.action == "tool.register"] == ["user:developer-1"]  # its own entry only
    assert gateway.runtime.get(AuditLog).verify().ok
