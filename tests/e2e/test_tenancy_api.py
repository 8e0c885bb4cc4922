"""/api/users, /api/teams and /api/tokens over real HTTP: the admin token bootstraps an operator, an owner
manages their tenant's people (and only an owner grants owner), anyone manages their own tokens, whose
secret is in the creation answer only (only an operator issues someone else's); a revoked token or a disabled user is refused at once (401 saying
why), and tokens made by a scoped token stay within its scopes."""

from __future__ import annotations

from typing import Any

import httpx

from tests.conftest import Gateway


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def api(gw: Gateway, method: str, path: str, token: str, body: Any = None, **params: str) -> httpx.Response:
    return httpx.request(method, gw.url + path, json=body, params=params, headers=bearer(token))


def test_bootstrap_an_operator_and_a_tenants_people(gateway: Gateway) -> None:
    gw = gateway
    op = api(gw, "POST", "/api/users", gw.admin, {"id": "root", "operator": True, "email": "root@keel.test"})
    assert op.status_code == 201 and (op.json()["tenant"], op.json()["roles"]) == (None, ["operator"])
    made = api(gw, "POST", "/api/tokens", gw.admin, {"user": "root", "name": "laptop", "expires_in": 3600})
    assert made.status_code == 201
    root = made.json()["token"]
    assert root.startswith("keel_pat_") and "token_hash" not in made.json()
    assert made.json()["expires_at"] is not None

    assert api(gw, "POST", "/api/teams", root, {"tenant": "t1", "name": "ml"}).status_code == 201
    owner = api(gw, "POST", "/api/users", root, {"tenant": "t1", "id": "olga", "roles": ["owner"]})
    assert owner.status_code == 201
    olga = api(gw, "POST", "/api/tokens", root, {"user": "olga"}).json()["token"]

    # the owner manages their tenant: people, teams and roles, without naming the tenant
    dev = api(gw, "POST", "/api/users", olga, {"id": "dan", "roles": ["developer"], "team": "ml"})
    assert dev.status_code == 201 and dev.json()["tenant"] == "t1" and dev.json()["team"] == "ml"
    assert api(gw, "POST", "/api/users", olga, {"id": "x", "operator": True}).status_code == 403
    assert api(gw, "POST", "/api/users", olga, {"tenant": "other", "id": "y", "roles": ["viewer"]}).status_code == 403
    listed = api(gw, "GET", "/api/users", olga).json()["data"]
    assert [u["id"] for u in listed] == ["dan", "olga"]  # not the operator
    assert api(gw, "GET", "/api/users/root", olga).status_code == 404
    changed = api(gw, "PATCH", "/api/users/dan", olga, {"roles": ["admin"], "team": None})
    assert (changed.status_code, changed.json()["roles"], changed.json()["team"]) == (200, ["admin"], None)
    assert [t["name"] for t in api(gw, "GET", "/api/teams", olga).json()["data"]] == ["ml"]

    # an admin manages people, but grants owner to no one and cannot touch an owner
    assert api(gw, "POST", "/api/tokens", olga, {"user": "dan"}).status_code == 403  # it would act as dan
    dan = api(gw, "POST", "/api/tokens", root, {"user": "dan"}).json()["token"]
    refused = api(gw, "PATCH", "/api/users/dan", dan, {"roles": ["owner"]})
    assert refused.status_code == 403 and "owner" in refused.json()["error"]["message"]
    assert api(gw, "DELETE", "/api/users/olga", dan).status_code == 403
    assert api(gw, "POST", "/api/users", dan, {"id": "vic", "roles": ["viewer"]}).status_code == 201

    # anyone lists and revokes their own tokens; another's need users.manage
    vic = api(gw, "POST", "/api/tokens", root, {"user": "vic", "name": "vic's"}).json()
    assert [t["id"] for t in api(gw, "GET", "/api/tokens", dan, user="vic").json()["data"]] == [vic["id"]]
    mine = api(gw, "GET", "/api/tokens", vic["token"]).json()["data"]
    assert [t["id"] for t in mine] == [vic["id"]] and vic["token"] not in str(mine)
    assert api(gw, "GET", "/api/tokens", vic["token"], user="dan").status_code == 403
    second = api(gw, "POST", "/api/tokens", vic["token"], {"name": "ci"})
    assert second.status_code == 201 and second.json()["user_id"] == "vic"
    assert api(gw, "POST", f"/api/tokens/{vic['id']}/revoke", vic["token"]).status_code == 200
    gone = api(gw, "GET", "/api/tokens", vic["token"])
    assert gone.status_code == 401 and "revoked" in gone.json()["error"]["message"]
    assert api(gw, "GET", "/api/tokens", second.json()["token"]).status_code == 200

    # disabling a user refuses their tokens at once in this process
    assert api(gw, "PATCH", "/api/users/vic", olga, {"disabled": True}).json()["disabled"] is True
    off = api(gw, "GET", "/api/tokens", second.json()["token"])
    assert off.status_code == 401 and "disabled" in off.json()["error"]["message"]
    assert api(gw, "DELETE", "/api/users/vic", olga).json()["deleted"] is True
    assert api(gw, "DELETE", "/api/teams/ml", olga).json()["deleted"] is True

    # a key is no person
    assert api(gw, "GET", "/api/tokens", gw.key).status_code == 403
    assert api(gw, "GET", "/api/users", gw.key).status_code == 403


def test_a_scoped_token_makes_tokens_within_its_scopes(gateway: Gateway) -> None:
    gw = gateway
    api(gw, "POST", "/api/users", gw.admin, {"tenant": "t1", "id": "sam", "roles": ["admin"]})
    scoped = api(gw, "POST", "/api/tokens", gw.admin, {"user": "sam", "scopes": ["tokens.own", "keys.read"]}).json()
    assert scoped["scopes"] == ["tokens.own", "keys.read"]
    wider = api(gw, "POST", "/api/tokens", scoped["token"], {"scopes": ["keys.write", "keys.read"]})
    assert wider.status_code == 201 and wider.json()["scopes"] == ["keys.read"]  # keys.write dropped
    plain = api(gw, "POST", "/api/tokens", scoped["token"], {}).json()
    assert sorted(plain["scopes"]) == ["keys.read", "tokens.own"]
    assert api(gw, "POST", "/api/keys", plain["token"], {"name": "x"}).status_code == 403
    bad = api(gw, "POST", "/api/tokens", gw.admin, {"user": "sam", "scopes": ["everything"]})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "scopes"
    assert api(gw, "POST", "/api/tokens", gw.admin, {}).status_code == 400  # the admin token is no user
