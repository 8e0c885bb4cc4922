"""The dashboard's control-plane pages over plain HTTP: keys (list, create once, revoke after a confirm step)
and the audit log (filters, paging, chain status, JSONL export), their CSRF tokens and refusals.

A real gateway on SQLite with the fake upstream; keys made on the page are used for real calls.
"""

from __future__ import annotations

import contextlib
import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from keel.audit.export import TRAILER, read_jsonl
from keel.audit.log import AuditLog
from keel.dashboard.forms import csrf_token
from keel.dashboard.session import COOKIE, Sessions, SignedIn
from keel.keys.auth import KEY_PREFIX, issue_key
from keel.tenancy.roles import KEY_PERMISSIONS, MATRIX, PERMISSIONS
from keel.testing import FakeUpstream
from tests.conftest import Gateway, base_config, until
from tests.e2e.test_dashboard import XSS, markup_of

CSRF = re.compile(r'name="csrf" value="([0-9a-f]{64})"')


@pytest.fixture
def gw(make_gateway: Any, up: FakeUpstream, tmp_path: Path) -> Gateway:
    return make_gateway(base_config(up, f"sqlite:///{tmp_path}/keel.db", tmp_path))  # type: ignore[no-any-return]


@contextlib.contextmanager
def login(gw: Gateway) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gw.url, timeout=10) as c:
        assert c.post("/ui/login", data={"token": gw.admin, "next": "/ui"}).status_code == 303
        yield c


def csrf(page: httpx.Response) -> str:
    found = CSRF.search(page.text)
    assert found, page.text[:2000]
    return found.group(1)


def chat(gw: Gateway, key: str) -> int:
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    r = httpx.post(gw.base_url + "/chat/completions", json=body, headers={"authorization": f"Bearer {key}"})
    return r.status_code


def create(c: httpx.Client, **fields: str) -> httpx.Response:
    token = csrf(c.get("/ui/keys"))
    return c.post("/ui/keys", data={"csrf": token, **fields})


def test_a_key_is_created_on_the_page_shown_once_and_works(gw: Gateway) -> None:
    with login(gw) as c:
        listing = c.get("/ui/keys")
        assert listing.status_code == 200 and 'id="create-key"' in listing.text
        assert '<option value="t1"' in listing.text  # the tenants to choose from
        r = create(c, tenant="t1", name="ci", user="ann", models="gpt-4o-mini, claude")
        assert r.status_code == 201, r.text
        (key,) = re.findall(r'<pre id="new-key">([^<]+)</pre>', r.text)
        assert key.startswith(KEY_PREFIX) and "shown only this once" in r.text
        assert r.headers["cache-control"] == "no-store" and key not in str(r.url)
        assert chat(gw, key) == 200
        after = c.get("/ui/keys?tenant=t1")
        assert key not in after.text and key[: len(KEY_PREFIX) + 4] in after.text
        (row,) = [k for k in gw.runtime.store.list_keys("t1") if k.name == "ci"]
        assert row.user == "ann" and row.models == ("gpt-4o-mini", "claude") and row.key_hash not in after.text
        (entry,) = [e for e in AuditLog(gw.runtime.store).entries() if e.target == row.id]
        assert (entry.actor, entry.action, entry.tenant) == ("admin", "keys.write POST /ui/keys", "t1")
        assert key not in entry.detail and row.key_hash not in entry.detail


def test_creating_a_key_is_refused_without_the_sessions_csrf_token_or_with_bad_fields(gw: Gateway) -> None:
    before = len(gw.runtime.store.list_keys())
    with login(gw) as c:
        assert c.post("/ui/keys", data={"tenant": "t1", "name": "x"}).status_code == 403
        assert c.post("/ui/keys", data={"tenant": "t1", "csrf": "0" * 64}).status_code == 403
        with login(gw) as other:  # another session's token does not fit this one
            assert c.post("/ui/keys", data={"tenant": "t1", "csrf": csrf(other.get("/ui/keys"))}).status_code == 403
        r = create(c, tenant="nope")
        assert r.status_code == 400 and "no tenant" in r.text
        r = create(c, tenant="t1", name="n" * 300)
        assert r.status_code == 400 and "&#x27;name&#x27; must be 1 to 256 characters" in r.text
        r = create(c, tenant="t1", name=XSS)
        assert r.status_code == 201 and markup_of(r.text) == []
    assert len(gw.runtime.store.list_keys()) == before + 1
    r = httpx.post(gw.url + "/ui/keys", data={"tenant": "t1"})  # no session: to the login form
    assert r.status_code == 303 and r.headers["location"].startswith("/ui/login")


def test_a_key_is_revoked_after_a_confirm_step(gw: Gateway) -> None:
    with login(gw) as c:
        r = create(c, tenant="t1", name="doomed")
        (key,) = re.findall(r'<pre id="new-key">([^<]+)</pre>', r.text)
        (row,) = [k for k in gw.runtime.store.list_keys("t1") if k.name == "doomed"]
        listing = c.get("/ui/keys")
        assert f'href="/ui/keys/{row.id}/revoke"' in listing.text
        confirm = c.get(f"/ui/keys/{row.id}/revoke")
        assert (
            confirm.status_code == 200 and "cannot be undone" in confirm.text and 'id="confirm-revoke"' in confirm.text
        )
        assert next(k for k in gw.runtime.store.list_keys("t1") if k.id == row.id).revoked_at is None  # GET: no change
        assert c.post(f"/ui/keys/{row.id}/revoke", data={}).status_code == 403
        assert chat(gw, key) == 200
        done = c.post(f"/ui/keys/{row.id}/revoke", data={"csrf": csrf(confirm)})
        assert done.status_code == 303 and done.headers["location"].startswith(f"/ui/keys?revoked={row.id}")
        assert until(lambda: chat(gw, key) == 401, timeout=10)
        notice = c.get(done.headers["location"] + "&state=revoked")
        assert f"Key {row.id} revoked." in notice.text and f'data-key="{row.id}"' in notice.text
        assert f'data-key="{row.id}"' not in c.get("/ui/keys?state=active").text
        again = c.get(f"/ui/keys/{row.id}/revoke")
        assert again.status_code == 200 and "Already revoked" in again.text
        actions = [e.action for e in AuditLog(gw.runtime.store).entries() if e.target == row.id]
        assert actions == ["keys.write POST /ui/keys", f"keys.write POST /ui/keys/{row.id}/revoke"]
        assert c.get("/ui/keys/key_missing/revoke").status_code == 404
        assert c.post("/ui/keys/key_missing/revoke", data={"csrf": csrf(confirm)}).status_code == 404
        assert c.get("/ui/keys?state=odd").status_code == 400


def _entries(gw: Gateway, n: int, tenant: str = "t1", actor: str = "user:ann") -> None:
    log = AuditLog(gw.runtime.store)
    for i in range(n):
        log.append(actor, f"prompts.write step{i}", f"p{i}", tenant=tenant, after={"i": i, "api_key": "sk-hidden"})


def test_the_audit_page_filters_pages_and_shows_the_chain_verified(gw: Gateway) -> None:
    base = gw.runtime.store.audit_head()[0]  # the gateway's own entries at start (its config)
    _entries(gw, 150)
    _entries(gw, 3, tenant="t2", actor="key:k2")
    AuditLog(gw.runtime.store).append("admin", "tenants.manage POST /api/tenants", "t3", after={"name": XSS})
    with login(gw) as c:
        page = c.get("/ui/audit")
        assert (
            page.status_code == 200 and 'data-ok="true"' in page.text and f"all {base + 154} entries hold" in page.text
        )
        assert markup_of(page.text) == []
        seqs = [int(s) for s in re.findall(r'<tr data-seq="(\d+)">', page.text)]
        assert seqs == list(range(1, 101)) and "sk-hidden" not in page.text and "[redacted]" in page.text
        (nxt,) = re.findall(r'<a id="next" href="([^"]+)"', page.text)
        rest = c.get(nxt.replace("&amp;", "&"))
        assert [int(s) for s in re.findall(r'<tr data-seq="(\d+)">', rest.text)] == list(range(101, base + 155))
        assert 'id="next"' not in rest.text
        by_actor = c.get("/ui/audit", params={"actor": "key:k2"})
        assert re.findall(r'<tr data-seq="(\d+)">', by_actor.text) == [str(base + n) for n in (151, 152, 153)]
        by_action = c.get("/ui/audit", params={"action": "tenants.", "tenant": ""})
        assert re.findall(r'<tr data-seq="(\d+)">', by_action.text) == [str(base + 154)]
        assert markup_of(by_action.text) == [] and "&lt;script&gt;" in by_action.text
        by_tenant = c.get("/ui/audit", params={"tenant": "t2"})
        assert re.findall(r'<tr data-seq="(\d+)">', by_tenant.text) == [str(base + n) for n in (151, 152, 153)]
        future = c.get("/ui/audit", params={"since": "2999-01-01T00:00:00"})
        assert "No entries" in future.text
        bad = c.get("/ui/audit", params={"since": "yesterday"})
        assert bad.status_code == 400 and "&#x27;since&#x27; must be" in bad.text
        assert c.get("/ui/audit", params={"after": "-1"}).status_code == 400


def test_the_audit_export_holds_the_shown_range_with_its_chain(gw: Gateway) -> None:
    base, prev = gw.runtime.store.audit_head()  # the gateway's own entries at start (its config)
    _entries(gw, 5)
    _entries(gw, 2, tenant="t2", actor="key:k2")
    with login(gw) as c:
        page = c.get("/ui/audit", params={"tenant": "t1"})
        (link,) = re.findall(r'<a id="export" href="([^"]+)"', page.text)
        r = c.get(link.replace("&amp;", "&"))
        assert r.status_code == 200 and r.headers["content-type"].startswith("application/x-ndjson")
        assert r.headers["content-disposition"].startswith("attachment; filename=")
        rows = list(read_jsonl(r.content.splitlines()))
        entries = [x for x in rows if TRAILER not in x]
        assert [x["seq"] for x in entries] == [base + n for n in (1, 2, 3, 4, 5)]
        assert {x["tenant"] for x in entries} == {"t1"} and entries[0]["prev_hash"] == prev
        stored = {e.seq: e.hash for e in AuditLog(gw.runtime.store).entries()}
        assert [x["hash"] for x in entries] == [stored[x["seq"]] for x in entries]
        assert [x["prev_hash"] for x in entries[1:]] == [x["hash"] for x in entries[:-1]]  # the links hold
        trailer = rows[-1][TRAILER]
        assert (trailer["count"], trailer["last_hash"], trailer["prev_hash"]) == (5, entries[-1]["hash"], prev)
        everything = c.get("/ui/audit/export", params={"since": "1h", "tenant": ""})
        whole = list(read_jsonl(everything.content.splitlines()))
        assert len(whole) == base + 7 + 1 and TRAILER in whole[-1]  # every entry, and the trailer
        csv = c.get("/ui/audit/export", params={"tenant": "t1", "format": "csv"})
        assert csv.headers["content-type"].startswith("text/csv") and len(csv.text.splitlines()) == 1 + 5
        assert c.get("/ui/audit/export", params={"format": "xml"}).status_code == 400


def test_the_audit_page_says_where_the_chain_breaks(gw: Gateway, tmp_path: Path) -> None:
    _entries(gw, 4)
    with login(gw) as c:
        assert 'data-ok="true"' in c.get("/ui/audit").text
        verified = gw.runtime.store.audit_head()[0]
        _entries(gw, 2)  # the head moves: the page verifies the entries appended since the last verified head
        with sqlite3.connect(tmp_path / "keel.db") as db:
            db.execute("UPDATE audit_log SET detail = ? WHERE seq = ?", ('{"after":{"i":99}}', verified + 1))
        page = c.get("/ui/audit")
        assert 'data-ok="false"' in page.text and f"Chain broken at entry {verified + 1}" in page.text, page.text
        assert 'data-ok="false"' in c.get("/ui/audit").text  # and it stays broken


# ---- users, teams and roles


def test_the_roles_page_is_the_matrix_tenancy_enforces(gw: Gateway) -> None:
    with login(gw) as c:
        page = c.get("/ui/roles")
    assert page.status_code == 200
    rows = re.findall(r'<tr data-permission="([^"]+)">(.*?)</tr>', page.text)
    assert [p for p, _ in rows] == list(PERMISSIONS)
    for permission, cells in rows:
        marks = dict(re.findall(r'<td class="matrix" data-role="([^"]+)">(✓?)</td>', cells))
        for role, held in MATRIX.items():
            assert (marks[role] == "✓") == (permission in held), (permission, role)
        assert (marks["key"] == "✓") == (permission in KEY_PERMISSIONS), permission


def test_teams_are_added_on_the_page(gw: Gateway) -> None:
    with login(gw) as c:
        page = c.get("/ui/teams")
        assert page.status_code == 200 and 'id="add-team"' in page.text
        assert c.post("/ui/teams", data={"tenant": "t1", "name": "ml"}).status_code == 403  # no CSRF token
        r = c.post("/ui/teams", data={"csrf": csrf(page), "tenant": "t1", "name": "ml"})
        assert r.status_code == 303 and r.headers["location"].startswith("/ui/teams?done=")
        listing = c.get(r.headers["location"])
        assert 'data-team="ml"' in listing.text and "Team ml added." in listing.text
        again = c.post("/ui/teams", data={"csrf": csrf(page), "tenant": "t1", "name": "ml"})
        assert again.status_code == 400
        bad = c.post("/ui/teams", data={"csrf": csrf(page), "tenant": "t1", "name": "<b>x</b>"})
        assert bad.status_code == 400 and "<b>x</b>" not in bad.text
        missing = c.post("/ui/teams", data={"csrf": csrf(page), "tenant": "nope", "name": "ml"})
        assert missing.status_code == 404
    assert [(t.tenant, t.name) for t in gw.runtime.store.list_teams("t1")] == [("t1", "ml")]
    (entry,) = [e for e in AuditLog(gw.runtime.store).entries() if e.action == "users.manage POST /ui/teams"]
    assert (entry.actor, entry.target, entry.tenant) == ("admin", "ml", "t1")


def test_users_are_added_given_a_role_disabled_and_enabled_on_the_page(gw: Gateway) -> None:
    store = gw.runtime.store
    store.create_team("t1", "ml")
    with login(gw) as c:
        page = c.get("/ui/users?tenant=t1")
        assert page.status_code == 200 and 'id="add-user"' in page.text and '<option value="ml">' in page.text
        token = csrf(page)
        add = {"csrf": token, "tenant": "t1", "id": "ann", "email": "ann@example.com", "name": XSS, "role": "viewer",
               "team": "ml"}  # fmt: skip
        assert c.post("/ui/users", data={**add, "csrf": ""}).status_code == 403
        r = c.post("/ui/users", data=add)
        assert r.status_code == 303, r.text
        listing = c.get(r.headers["location"])
        assert 'data-user="ann"' in listing.text and markup_of(listing.text) == []
        user = store.get_user("ann")
        assert user is not None and (user.tenant, user.roles, user.team) == ("t1", ("viewer",), "ml")
        assert c.post("/ui/users", data=add).status_code == 400  # the id is taken
        assert c.post("/ui/users", data={**add, "id": "bob", "role": "operator"}).status_code == 403
        assert c.post("/ui/users", data={**add, "id": "bob", "tenant": "nope"}).status_code == 404

        r = c.post("/ui/users/ann/role", data={"csrf": token, "role": "developer"})
        assert r.status_code == 303 and store.get_user("ann").roles == ("developer",)  # type: ignore[union-attr]
        assert c.post("/ui/users/ann/role", data={"csrf": token, "role": "king"}).status_code == 403
        assert c.post("/ui/users/nobody/role", data={"csrf": token, "role": "viewer"}).status_code == 404
        r = c.post("/ui/users/ann/disable", data={"csrf": token, "disabled": "1"})
        assert r.status_code == 303 and store.get_user("ann").disabled_at is not None  # type: ignore[union-attr]
        shown = c.get("/ui/users?tenant=t1")
        assert re.search(r'data-user="ann".*?<td data-col="disabled">\d{4}-', shown.text)
        assert ">Enable</button>" in shown.text
        r = c.post("/ui/users/ann/disable", data={"csrf": token, "disabled": "0"})
        assert r.status_code == 303 and store.get_user("ann").disabled_at is None  # type: ignore[union-attr]
    actions = [e.action for e in AuditLog(store).entries() if e.target == "user:ann"]
    assert actions == [
        "users.manage POST /ui/users",
        "users.manage POST /ui/users/ann/role",
        "users.manage POST /ui/users/ann/disable",
        "users.manage POST /ui/users/ann/disable",
    ]


# ---- every page gated by the actor's role (a personal access token as the credential)


def pat(gw: Gateway, user: str, tenant: str, role: str) -> dict[str, str]:
    """A user of `tenant` with `role`, and the Authorization header of a personal access token of theirs."""
    admin = {"authorization": f"Bearer {gw.admin}"}
    r = httpx.post(gw.url + "/api/users", json={"tenant": tenant, "id": user, "roles": [role]}, headers=admin)
    assert r.status_code == 201, r.text
    r = httpx.post(gw.url + "/api/tokens", json={"user": user}, headers=admin)
    assert r.status_code == 201, r.text
    return {"authorization": f"Bearer {r.json()['token']}"}


def nav(page: httpx.Response) -> list[str]:
    return re.findall(r'<a href="(/ui[^"]*)">[^<]+</a>', page.text.split("</header>")[0])


def two_tenants(gw: Gateway) -> tuple[str, str]:
    """A call in t1 and one in t2 (their trace ids), a key and an audit entry in each."""
    store = gw.runtime.store
    store.create_tenant("t2")
    t2_key = issue_key(store, "t2", name="t2-key").key
    ids = []
    for key in (gw.key, t2_key):
        body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "secret question " + XSS}]}
        r = httpx.post(gw.base_url + "/chat/completions", json=body, headers={"authorization": f"Bearer {key}"})
        assert r.status_code == 200, r.text
        ids.append(r.headers["x-keel-trace-id"])
    gw.traces()
    _entries(gw, 2, tenant="t1")
    _entries(gw, 2, tenant="t2", actor="user:zed")
    return ids[0], ids[1]


def test_a_viewer_reads_its_tenants_pages_without_forms_or_content(gw: Gateway) -> None:
    mine, theirs = two_tenants(gw)
    viewer = pat(gw, "vic", "t1", "viewer")
    with httpx.Client(base_url=gw.url, timeout=10, headers=viewer) as c:
        home = c.get("/ui")
        assert home.status_code == 200
        assert nav(home) == ["/ui", "/ui/traces", "/ui/jobs", "/ui/prompts", "/ui/evals", "/ui/slo", "/ui/keys"]
        listing = c.get("/ui/traces", params={"since": "1h", "tenant": "t2"})  # the tenant filter is forced to t1
        assert f'data-trace="{mine}"' in listing.text and f'data-trace="{theirs}"' not in listing.text
        trace = c.get(f"/ui/traces/{mine}")
        assert trace.status_code == 200 and 'id="content-hidden"' in trace.text and "secret question" not in trace.text
        assert c.get(f"/ui/traces/{theirs}").status_code == 404
        keys = c.get("/ui/keys")
        assert keys.status_code == 200 and 'id="create-key"' not in keys.text and 'class="revoke"' not in keys.text
        assert 'data-key="' in keys.text and "t2-key" not in keys.text
        refused = c.post("/ui/keys", data={"tenant": "t1", "name": "x"})
        assert refused.status_code == 403 and "(keys.write)" in refused.text
        (entry,) = [e for e in AuditLog(gw.runtime.store).entries() if e.actor == "user:vic"]
        assert (entry.action, entry.tenant, orjson.loads(entry.detail)["result"]["outcome"]) == (
            "keys.write POST /ui/keys",
            "t1",
            "refused",
        )
        for path in ("/ui/audit", "/ui/audit/export", "/ui/users", "/ui/teams", "/ui/roles"):
            assert c.get(path).status_code == 403, path
        assert c.post("/ui/users", data={"role": "owner"}).status_code == 403
    gw.runtime.store.set_tenant_viewer_content("t1", True)  # the tenant lets its viewers see content
    with httpx.Client(base_url=gw.url, timeout=10, headers=viewer) as c:
        trace = c.get(f"/ui/traces/{mine}")
        assert (
            "secret question" in trace.text and 'id="content-hidden"' not in trace.text and markup_of(trace.text) == []
        )


def test_an_auditor_sees_its_tenants_audit_and_usage_only(gw: Gateway) -> None:
    mine, _ = two_tenants(gw)
    auditor = pat(gw, "aud", "t1", "auditor")
    with httpx.Client(base_url=gw.url, timeout=10, headers=auditor) as c:
        home = c.get("/ui")
        assert home.status_code == 200 and nav(home) == ["/ui", "/ui/audit"]
        page = c.get("/ui/audit", params={"tenant": "t2"})  # forced to its own tenant
        assert page.status_code == 200 and 'name="tenant"' not in page.text
        tenants = set(re.findall(r'<tr data-seq="\d+"><td class="n">\d+</td><td>[^<]+</td><td>([^<]+)</td>', page.text))
        assert tenants == {"t1"}
        export = c.get("/ui/audit/export", params={"since": "1h"})
        lines = [orjson.loads(x) for x in export.text.splitlines()]
        assert {x["tenant"] for x in lines if TRAILER not in x} == {"t1"} and TRAILER in lines[-1]
        for path in ("/ui/traces", f"/ui/traces/{mine}", "/ui/keys", "/ui/jobs", "/ui/prompts", "/ui/users"):
            assert c.get(path).status_code == 403, path


def test_a_tenant_admin_manages_its_own_tenant_below_owner(gw: Gateway) -> None:
    two_tenants(gw)
    admin = pat(gw, "ada", "t1", "admin")
    pat(gw, "zed", "t2", "viewer")
    pat(gw, "own", "t1", "owner")
    with httpx.Client(base_url=gw.url, timeout=10, headers=admin) as c:
        users = c.get("/ui/users", params={"tenant": "t2"})
        assert users.status_code == 200 and 'data-user="ada"' in users.text and 'data-user="zed"' not in users.text
        assert '<option value="owner">' not in users.text  # an admin grants admin and below
        keys = c.get("/ui/keys")
        assert 'id="create-key"' in keys.text and "t2-key" not in keys.text
        (t2_key,) = [k for k in gw.runtime.store.list_keys("t2")]
        assert c.get(f"/ui/keys/{t2_key.id}/revoke").status_code == 404  # another tenant's key: not found
        assert c.get("/ui/roles").status_code == 200
        assert c.get("/ui/audit").status_code == 403  # admins hold no audit.read
        # A browser's forms need the session's CSRF token: a bearer alone changes nothing.
        assert c.post("/ui/keys", data={"tenant": "t1", "name": "x"}).status_code == 403
    with login(gw) as operator:  # the operator may do what the admin may not
        token = csrf(operator.get("/ui/users"))
        r = operator.post("/ui/users/own/role", data={"csrf": token, "role": "viewer"})
        assert r.status_code == 303 and gw.runtime.store.get_user("own").roles == ("viewer",)  # type: ignore[union-attr]


def test_a_signed_in_users_session_follows_the_directory(gw: Gateway) -> None:
    """A session naming a user (as an SSO sign-in makes) takes the user's roles from the directory on
    every request: a role change applies at once, a disabled user is sent back to the login form."""
    pat(gw, "vic", "t1", "viewer")
    cookie = Sessions(gw.admin).issue(SignedIn("user:vic", "t1", ("viewer",), 0, "Vic"))
    admin = {"authorization": f"Bearer {gw.admin}"}
    with httpx.Client(base_url=gw.url, timeout=10, cookies={COOKIE: cookie}) as c:
        home = c.get("/ui")
        assert home.status_code == 200 and "Vic (viewer in t1)" in home.text and "/ui/users" not in nav(home)
        refused = c.post("/ui/keys", data={"csrf": csrf_token(cookie), "tenant": "t1", "name": "x"})
        assert refused.status_code == 403 and "(keys.write)" in refused.text
        assert c.get("/ui/users").status_code == 403
        r = httpx.patch(gw.url + "/api/users/vic", json={"roles": ["admin"]}, headers=admin)
        assert r.status_code == 200, r.text
        assert c.get("/ui/users").status_code == 200  # the same cookie, the new role
        created = c.post("/ui/keys", data={"csrf": csrf_token(cookie), "tenant": "t1", "name": "by-vic"})
        assert created.status_code == 201
        entries = [e for e in AuditLog(gw.runtime.store).entries() if e.action == "keys.write POST /ui/keys"]
        outcomes = [(e.actor, orjson.loads(e.detail).get("result", {}).get("outcome")) for e in entries]
        assert outcomes == [("user:vic", "refused"), ("user:vic", None)]  # refused as a viewer, then made as admin
        r = httpx.patch(gw.url + "/api/users/vic", json={"disabled": True}, headers=admin)
        assert r.status_code == 200, r.text
        gone = c.get("/ui")
        assert gone.status_code == 303 and gone.headers["location"].startswith("/ui/login")
