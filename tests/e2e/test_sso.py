"""Single sign-on against a real OpenID Connect issuer on 127.0.0.1 (keel.testing.oidc).

JWT bearers on the admin API: accepted with the role their groups map to; refused (401, OpenAI's
error format, the token never echoed) when expired, signed by an unpublished key, for another
audience, or `alg: none`; a key rotation picked up; a flood of unknown kids refetching the JWKS once.
Dashboard sign-in over plain HTTP (the browser's walk is test_sso_browser.py): the authorization code
flow with PKCE, state checked, the session cookie naming the user and their mapped roles, logout.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from keel.dashboard.session import Sessions
from keel.testing import FakeUpstream
from keel.testing.oidc import FakeIssuer, FakeUser
from tests.conftest import Gateway, base_config

USERS = {
    "ann": FakeUser("ann-pw", groups=("eng-admins", "everyone"), email="ann@example.com", name="Ann Admin"),
    "bob": FakeUser("bob-pw", groups=("everyone",), name="Bob Viewer"),
    "carl": FakeUser("carl-pw", groups=("contractors",)),
}
SECRET = "keel-client-secret-" + "x" * 16


@pytest.fixture
def idp() -> Iterator[FakeIssuer]:
    with FakeIssuer(USERS, {"keel": SECRET}) as issuer:
        yield issuer


def sso_config(up: FakeUpstream, tmp: Path, idp: FakeIssuer, **extra: Any) -> dict[str, Any]:
    raw = base_config(up, f"sqlite:///{tmp}/keel.db", tmp)
    provider = {
        "issuer": idp.url,
        "client_id": "keel",
        "client_secret": SECRET,
        "tenant": "t1",
        "display_name": "Corp SSO",
        "roles": {"eng-admins": "admin", "everyone": "viewer"},
    }
    raw["sso"] = {"providers": {"corp": provider}, "session_secret": "s" * 40, **extra}
    return raw


@pytest.fixture
def gw(make_gateway: Any, up: FakeUpstream, tmp_path: Path, idp: FakeIssuer) -> Gateway:
    return make_gateway(sso_config(up, tmp_path, idp))  # type: ignore[no-any-return]


def whoami(gw: Gateway, token: str) -> httpx.Response:
    return httpx.get(gw.url + "/api/whoami", headers={"authorization": f"Bearer {token}"})


def refused(r: httpx.Response, token: str, why: str) -> None:
    assert r.status_code == 401, r.text
    error = r.json()["error"]
    assert error["type"] and error["code"] == "invalid_api_key"
    assert re.search(why, error["message"]), error["message"]
    assert token not in r.text and token.split(".")[1] not in r.text


def test_a_valid_jwt_is_the_user_with_the_roles_their_groups_map_to(gw: Gateway, idp: FakeIssuer) -> None:
    r = whoami(gw, idp.mint("ann"))
    assert r.status_code == 200, r.text
    me = r.json()
    assert me["kind"] == "user" and me["id"].startswith("user:") and me["tenant"] == "t1"
    assert me["roles"] == ["admin", "viewer"]
    admin = {"authorization": f"Bearer {gw.admin}"}
    (ann,) = httpx.get(gw.url + "/api/users", params={"tenant": "t1"}, headers=admin).json()["data"]
    assert f"user:{ann['id']}" == me["id"]  # created at first sight (jit), linked to the issuer's subject
    assert (ann["issuer"], ann["subject"], ann["email"]) == (idp.url, "sub-ann", "ann@example.com")
    assert whoami(gw, idp.mint("ann")).json()["id"] == me["id"]  # the same user next time
    assert whoami(gw, idp.mint("bob")).json()["roles"] == ["viewer"]
    assert whoami(gw, gw.admin).json() == {"kind": "operator", "id": "admin", "tenant": None, "roles": ["operator"],
                                           "team": None}  # fmt: skip


def test_the_admin_api_acts_as_the_jwts_user_with_their_mapped_role(gw: Gateway, idp: FakeIssuer) -> None:
    ann, bob = ({"authorization": f"Bearer {idp.mint(u)}"} for u in ("ann", "bob"))
    made = httpx.post(gw.url + "/api/keys", json={"tenant": "t1", "name": "from-sso"}, headers=ann)
    assert made.status_code in (200, 201), made.text  # admin: keys.write in their own tenant
    refused = httpx.post(gw.url + "/api/keys", json={"tenant": "t1", "name": "nope"}, headers=bob)
    assert refused.status_code == 403 and "keys.write" in refused.json()["error"]["message"]  # viewer
    assert httpx.get(gw.url + "/api/keys", params={"tenant": "t1"}, headers=bob).status_code == 200
    other = httpx.get(gw.url + "/api/keys", params={"tenant": "t2"}, headers=ann)
    assert other.status_code == 403  # another tenant is out of reach
    entries = httpx.get(gw.url + "/api/audit", headers={"authorization": f"Bearer {gw.admin}"}).json()["data"]
    me = whoami(gw, idp.mint("ann")).json()["id"]
    assert any(e["actor"] == me and "POST /api/keys" in e["action"] for e in entries), entries


def test_a_provider_without_jit_signs_in_only_users_added_beforehand(
    make_gateway: Any, up: FakeUpstream, tmp_path: Path, idp: FakeIssuer
) -> None:
    raw = sso_config(up, tmp_path, idp)
    raw["sso"]["providers"]["corp"]["jit"] = False
    gw = make_gateway(raw)
    r = whoami(gw, idp.mint("ann"))
    assert r.status_code == 403 and "ask an admin to add you" in r.json()["error"]["message"]
    admin = {"authorization": f"Bearer {gw.admin}"}
    assert httpx.get(gw.url + "/api/users", params={"tenant": "t1"}, headers=admin).json()["data"] == []
    half = httpx.post(
        gw.url + "/api/users", json={"tenant": "t1", "roles": ["viewer"], "issuer": idp.url}, headers=admin
    )
    assert half.status_code == 400 and half.json()["error"]["param"] == "subject", half.text
    body = {"id": "ann", "tenant": "t1", "roles": ["viewer"], "issuer": idp.url, "subject": "sub-ann"}
    added = httpx.post(gw.url + "/api/users", json=body, headers=admin)
    assert added.status_code == 201 and added.json()["subject"] == "sub-ann", added.text
    me = whoami(gw, idp.mint("ann")).json()
    assert me["id"] == "user:ann" and me["roles"] == ["admin", "viewer"]  # roles follow the mapping
    twice = httpx.post(gw.url + "/api/users", json={**body, "id": "ann2"}, headers=admin)
    assert twice.status_code == 400 and twice.json()["error"]["param"] == "subject", twice.text
    # the CLI links the same way, on the configured store
    cmd = [sys.executable, "-m", "keel.cli.main", "-c", str(tmp_path / "keel.yaml"), "users", "add", "bob"]
    cmd += ["--tenant", "t1", "--roles", "viewer", "--issuer", idp.url, "--subject", "sub-bob", "--json"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and json.loads(out.stdout)["subject"] == "sub-bob", out.stderr
    assert whoami(gw, idp.mint("bob")).json()["id"] == "user:bob"


def test_bad_jwts_are_refused_without_echoing_them(gw: Gateway, idp: FakeIssuer) -> None:
    assert whoami(gw, idp.mint("ann")).status_code == 200  # the keys are fetched: what follows is not an outage
    cases = {
        "expired": (idp.mint("ann", expires_in=-600), "expired"),
        "unpublished key": (idp.mint("ann", unpublished_key=True), "signature does not verify"),
        "audience": (idp.mint("ann", audience="someone-else"), "audience match no configured"),
        "alg none": (idp.mint("ann", alg_none=True), "algorithm 'none' is not allowed"),
        "issuer": (idp.mint("ann", issuer="http://127.0.0.1:9/other"), "issuer and audience match no"),
        "not yet valid": (idp.mint("ann", extra={"nbf": 2**31}), "not yet valid"),
        "no subject": (idp.mint("ann", extra={"sub": ""}), "subject|claim"),
    }
    for name, (token, why) in cases.items():
        r = whoami(gw, token)
        try:
            refused(r, token, why)
        except AssertionError as exc:
            raise AssertionError(f"{name}: {exc}") from None
    r = whoami(gw, "eyJhbGciOiJSUzI1NiJ9.e30.c2ln")  # shaped like a JWT, payload {} with no issuer
    assert r.status_code == 401 and "c2ln" not in r.text
    odd = idp.mint("ann", extra={"aud": [["keel"], {"a": 1}]})  # JSON, but odd shapes: refused, not a 500
    assert whoami(gw, odd).status_code == 401
    assert whoami(gw, idp.mint("ann", extra={"aud": [["x"], "keel"]})).status_code == 200  # one of its audiences


def test_hs256_signed_with_the_public_key_is_refused(gw: Gateway, idp: FakeIssuer) -> None:
    """The classic confusion: an attacker signs HS256 with the RSA public key as the HMAC secret."""
    import base64
    import hashlib
    import hmac
    import json

    good = idp.mint("ann")
    header = base64.urlsafe_b64encode(json.dumps({"alg": "HS256", "kid": idp.kid}).encode()).rstrip(b"=")
    payload = good.split(".")[1].encode()
    public = json.dumps(idp.jwks()["keys"][0]).encode()
    sig = base64.urlsafe_b64encode(hmac.new(public, header + b"." + payload, hashlib.sha256).digest()).rstrip(b"=")
    token = b".".join((header, payload, sig)).decode()
    refused(whoami(gw, token), token, "algorithm 'HS256' is not allowed")


def test_no_mapped_group_and_no_default_role_is_forbidden(
    make_gateway: Any, up: FakeUpstream, tmp_path: Path, idp: FakeIssuer
) -> None:
    gw = make_gateway(sso_config(up, tmp_path, idp))
    r = whoami(gw, idp.mint("carl"))
    assert r.status_code == 403 and "no role in tenant 't1'" in r.json()["error"]["message"]


def test_a_rotated_key_is_accepted_and_unknown_kids_refetch_the_jwks_at_most_once(
    make_gateway: Any, up: FakeUpstream, tmp_path: Path, idp: FakeIssuer
) -> None:
    gw = make_gateway(sso_config(up, tmp_path, idp, jwks_refetch_s=3600))
    assert whoami(gw, idp.mint("ann")).status_code == 200
    assert idp.log.jwks_requests == 1
    for i in range(5):  # unknown kids: none refetches before jwks_refetch_s has passed since the last fetch
        token = idp.mint("ann", unpublished_key=True, kid=f"forged-{i}")
        refused(whoami(gw, token), token, "key its issuer does not publish")
    assert idp.log.jwks_requests == 1

    old = idp.kid
    idp.rotate()
    assert whoami(gw, idp.mint("ann")).status_code == 401  # new kid, but refetched too recently
    assert idp.log.jwks_requests == 1

    (tmp_path / "b").mkdir()
    gw2 = make_gateway(sso_config(up, tmp_path / "b", idp, jwks_refetch_s=0))
    assert whoami(gw2, idp.mint("ann")).status_code == 200
    requests = idp.log.jwks_requests
    idp.rotate()
    idp.retire(old)
    assert whoami(gw2, idp.mint("ann")).status_code == 200  # the new kid refetched the JWKS
    assert idp.log.jwks_requests == requests + 1


# ---- dashboard sign-in over HTTP -------------------------------------------------------------------


@pytest.fixture
def clients() -> Iterator[Callable[[Gateway], httpx.Client]]:
    made: list[httpx.Client] = []

    def make(gw: Gateway) -> httpx.Client:
        made.append(httpx.Client(base_url=gw.url))
        return made[-1]

    yield make
    for c in made:
        c.close()


def sign_in(c: httpx.Client, idp: FakeIssuer, user: str, password: str, next_path: str = "/ui") -> httpx.Client:
    """Walk the authorization code flow as a browser would; the client then holds the session cookie."""
    gw_url = str(c.base_url).rstrip("/")
    login = c.get("/ui/login", params={"next": next_path})
    assert 'href="/ui/sso/corp/login' in login.text and "Sign in with Corp SSO" in login.text
    start = c.get("/ui/sso/corp/login", params={"next": next_path})
    assert start.status_code == 303
    authorize = start.headers["location"]
    query = parse_qs(urlsplit(authorize).query)
    assert authorize.startswith(idp.url + "/authorize?")
    assert query["code_challenge_method"] == ["S256"] and len(query["code_challenge"][0]) == 43
    assert query["state"][0] and query["nonce"][0] and query["redirect_uri"] == [f"{gw_url}/ui/sso/corp/callback"]
    assert "code_verifier" not in authorize and SECRET not in authorize
    fields = {k: v[0] for k, v in query.items()} | {"username": user, "password": password}
    back = httpx.post(idp.url + "/authorize", data=fields)
    assert back.status_code == 302, back.text
    callback = back.headers["location"]
    assert callback.startswith(f"{gw_url}/ui/sso/corp/callback?")
    c.get(callback)
    return c


def test_sign_in_through_the_issuer_lands_as_the_user_with_mapped_roles(
    gw: Gateway, idp: FakeIssuer, clients: Any
) -> None:
    c = sign_in(clients(gw), idp, "ann", "ann-pw", "/ui/traces")
    assert "keel_ui" in c.cookies and "keel_sso" not in c.cookies  # the flow cookie is spent
    page = c.get("/ui/traces")
    assert page.status_code == 200
    assert re.search(r'id="whoami">Ann Admin \(admin, viewer in t1\)<', page.text), page.text[:2000]
    admin = {"authorization": f"Bearer {gw.admin}"}
    (ann,) = httpx.get(gw.url + "/api/users", params={"tenant": "t1"}, headers=admin).json()["data"]
    assert (ann["subject"], ann["roles"]) == ("sub-ann", ["admin", "viewer"])  # the sign-in made the user
    who = Sessions(gw.admin, secret="s" * 40).read(c.cookies["keel_ui"])
    assert who is not None and who.as_actor().id == f"user:{ann['id']}" and who.as_actor().tenant == "t1"
    assert who.roles == ("admin", "viewer") and who.provider == "corp"
    logout = c.post("/ui/logout")
    assert logout.status_code == 200 and 'http-equiv="refresh"' in logout.text
    assert f"{idp.url}/end_session?client_id=keel" in logout.text.replace("&amp;", "&")
    assert "keel_ui" not in c.cookies
    assert c.get("/ui").status_code == 303


def test_the_callback_refuses_a_forged_state_a_replayed_code_and_unmapped_users(
    gw: Gateway, idp: FakeIssuer, clients: Any
) -> None:
    c = clients(gw)
    start = c.get("/ui/sso/corp/login")
    fields = {k: v[0] for k, v in parse_qs(urlsplit(start.headers["location"]).query).items()}
    back = httpx.post(idp.url + "/authorize", data=fields | {"username": "ann", "password": "ann-pw"})
    code = parse_qs(urlsplit(back.headers["location"]).query)["code"][0]
    r = c.get("/ui/sso/corp/callback", params={"code": code, "state": "forged"})
    assert r.status_code == 401 and "state does not match" in r.text and "keel_ui" not in c.cookies
    r = c.get("/ui/sso/corp/callback", params={"code": code, "state": fields["state"]})
    assert r.status_code == 200 and "keel_ui" in c.cookies  # the flow cookie survived the forged attempt
    assert code not in r.text

    other = clients(gw)
    assert other.get("/ui/sso/corp/callback", params={"code": code, "state": fields["state"]}).status_code == 400
    assert "keel_ui" not in other.cookies  # no flow cookie in this browser: nothing to finish

    carl = sign_in(clients(gw), idp, "carl", "carl-pw")
    assert "keel_ui" not in carl.cookies
    assert idp.log.token_errors == []  # every exchange carried the right verifier and redirect_uri

    assert httpx.get(gw.url + "/ui/sso/nope/login").status_code == 404


def test_without_an_admin_token_sso_alone_runs_the_dashboard(
    make_gateway: Any, up: FakeUpstream, tmp_path: Path, idp: FakeIssuer, clients: Any
) -> None:
    raw = sso_config(up, tmp_path, idp)
    raw.pop("admin_token")
    gw = make_gateway(raw)
    assert 'name="token"' not in httpx.get(gw.url + "/ui/login").text  # no admin token to type
    c = sign_in(clients(gw), idp, "bob", "bob-pw")
    assert "Bob Viewer (viewer in t1)" in c.get("/ui").text
    r = httpx.post(gw.url + "/ui/login", data={"token": ""})
    assert r.status_code == 401 and "set-cookie" not in r.headers  # no admin token: none matches


def test_an_unreachable_issuer_is_a_503_not_a_refusal(
    make_gateway: Any, up: FakeUpstream, tmp_path: Path, idp: FakeIssuer
) -> None:
    raw = sso_config(up, tmp_path, idp)
    raw["sso"]["providers"]["corp"]["issuer"] = "http://127.0.0.1:9"  # discard port: nothing listens
    gw = make_gateway(raw)
    token = idp.mint("ann", issuer="http://127.0.0.1:9")
    r = whoami(gw, token)
    assert r.status_code == 503 and "did not answer" in r.json()["error"]["message"], r.text
    assert r.headers["retry-after"] and token not in r.text


def test_groups_missing_from_the_id_token_come_from_userinfo(
    make_gateway: Any, up: FakeUpstream, tmp_path: Path, clients: Any
) -> None:
    with FakeIssuer(USERS, {"keel": None}, groups_in_id_token=False, end_session=False) as lean:
        raw = sso_config(up, tmp_path, lean)
        raw["sso"]["providers"]["corp"].pop("client_secret")  # a public client: PKCE alone
        gw = make_gateway(raw)
        c = sign_in(clients(gw), lean, "ann", "ann-pw")
        assert "Ann Admin (admin, viewer in t1)" in c.get("/ui").text
        logout = c.post("/ui/logout")  # no end_session_endpoint: only Keel's session ends
        assert logout.status_code == 303 and logout.headers["location"] == "/ui/login"
        assert lean.log.token_errors == [] and lean.log.logouts == []
