"""A real OpenID Connect issuer on 127.0.0.1, for tests and demos (signing with joserfc, served by aiohttp).

It speaks what an identity provider speaks: discovery, a JWKS, an authorize endpoint with a tiny HTML
login form (the configured users, their passwords and groups), a token endpoint that checks the client,
the redirect URI and the PKCE verifier (S256 only), userinfo and end_session. Its keys rotate like a real
provider's (`rotate()` adds a key and signs with it, `retire(kid)` stops publishing one), and `mint()`
signs JWTs directly for API tests: valid, expired, with an unpublished key, another audience, `alg: none`.

    with FakeIssuer(users={"ann": FakeUser("pw", groups=("eng-admins",))}) as idp:
        idp.url, idp.mint("ann", audience="keel")
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import html
import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self
from urllib.parse import urlencode

from aiohttp import web
from joserfc import jwt
from joserfc.jwk import RSAKey

_START_TIMEOUT = 10.0
CODE_TTL_S = 60


@dataclass(frozen=True)
class FakeUser:
    password: str
    groups: tuple[str, ...] = ()
    email: str | None = None
    name: str | None = None


@dataclass
class _Grant:
    client_id: str
    redirect_uri: str
    challenge: str
    nonce: str | None
    user: str
    expires: float


@dataclass
class IssuerLog:
    """What the issuer saw, for tests to assert on."""

    jwks_requests: int = 0
    logins: list[str] = field(default_factory=list)
    logouts: list[dict[str, str]] = field(default_factory=list)
    token_errors: list[str] = field(default_factory=list)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class FakeIssuer:
    def __init__(
        self,
        users: dict[str, FakeUser] | None = None,
        clients: dict[str, str | None] | None = None,  # client_id -> secret (None: a public client)
        *,
        groups_in_id_token: bool = True,  # False: groups only from userinfo, like some providers
        end_session: bool = True,
    ) -> None:
        self.users = dict(users or {})
        self.clients = dict(clients if clients is not None else {"keel": "keel-client-secret"})
        self.groups_in_id_token = groups_in_id_token
        self.end_session = end_session
        self.log = IssuerLog()
        self._lock = threading.Lock()
        self._keys: list[RSAKey] = [self._new_key()]
        self._signing = self._keys[0]
        self._grants: dict[str, _Grant] = {}
        self._access: dict[str, str] = {}  # access token -> user
        self._port: int | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._ready = threading.Event()

    @staticmethod
    def _new_key() -> RSAKey:
        return RSAKey.generate_key(2048, parameters={"kid": secrets.token_hex(8), "use": "sig", "alg": "RS256"})

    @property
    def url(self) -> str:
        if self._port is None:
            raise RuntimeError("FakeIssuer is not running")
        return f"http://127.0.0.1:{self._port}"

    # --- keys and minting, from the test's thread ----------------------------------------------

    @property
    def kid(self) -> str:
        return str(self._signing.kid)

    def rotate(self) -> str:
        """Publish a new key and sign with it from now on; the old one stays published until retired."""
        key = self._new_key()
        with self._lock:
            self._keys.append(key)
            self._signing = key
        return str(key.kid)

    def retire(self, kid: str) -> None:
        with self._lock:
            self._keys = [k for k in self._keys if k.kid != kid]

    def jwks(self) -> dict[str, Any]:
        with self._lock:
            return {"keys": [k.as_dict(private=False) for k in self._keys]}

    def claims_of(self, username: str) -> dict[str, Any]:
        user = self.users[username]
        claims: dict[str, Any] = {"sub": f"sub-{username}", "preferred_username": username}
        if user.email:
            claims["email"] = user.email
        if user.name:
            claims["name"] = user.name
        return claims

    def mint(
        self,
        username: str,
        audience: str = "keel",
        *,
        expires_in: float = 300,
        groups: tuple[str, ...] | None = None,
        unpublished_key: bool = False,  # signed by a key the JWKS does not hold, under `kid` (default: the current)
        kid: str | None = None,
        alg_none: bool = False,
        issuer: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> str:
        now = int(time.time())
        claims = {**self.claims_of(username), "iss": issuer or self.url, "aud": audience}
        claims |= {"iat": now, "exp": now + int(expires_in), "groups": list(groups or self.users[username].groups)}
        claims |= extra or {}
        if alg_none:
            header = _b64(json.dumps({"alg": "none", "typ": "JWT", "kid": self.kid}).encode())
            return f"{header}.{_b64(json.dumps(claims).encode())}."
        key = self._signing
        if unpublished_key:
            key = RSAKey.generate_key(2048, parameters={"kid": kid or self.kid})
        return jwt.encode({"alg": "RS256", "kid": str(key.kid)}, claims, key)

    # --- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=lambda: asyncio.run(self._serve()), name="fake-issuer", daemon=True)
        self._thread.start()
        if not self._ready.wait(_START_TIMEOUT) or self._port is None:
            raise RuntimeError("FakeIssuer did not start listening in time")

    def stop(self) -> None:
        if self._thread is None:
            return
        if self._loop is not None and self._stopping is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._stopping.set)
        self._thread.join()
        self._thread = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        app = web.Application()
        app.router.add_get("/.well-known/openid-configuration", self._discovery)
        app.router.add_get("/jwks", self._jwks)
        app.router.add_get("/authorize", self._authorize_form)
        app.router.add_post("/authorize", self._authorize)
        app.router.add_post("/token", self._token)
        app.router.add_get("/userinfo", self._userinfo)
        app.router.add_get("/end_session", self._end_session)
        runner = web.AppRunner(app, access_log=None)
        try:
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", 0).start()
            self._port = int(runner.addresses[0][1])
        finally:
            self._ready.set()
        try:
            await self._stopping.wait()
        finally:
            await runner.cleanup()

    # --- endpoints --------------------------------------------------------------------------------

    async def _discovery(self, request: web.Request) -> web.Response:
        doc = {
            "issuer": self.url,
            "authorization_endpoint": f"{self.url}/authorize",
            "token_endpoint": f"{self.url}/token",
            "jwks_uri": f"{self.url}/jwks",
            "userinfo_endpoint": f"{self.url}/userinfo",
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
        }
        if self.end_session:
            doc["end_session_endpoint"] = f"{self.url}/end_session"
        return web.json_response(doc)

    async def _jwks(self, request: web.Request) -> web.Response:
        self.log.jwks_requests += 1
        return web.json_response(self.jwks())

    def _form(self, params: dict[str, str], error: str = "") -> web.Response:
        hidden = "".join(
            f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">' for k, v in params.items()
        )
        shown = f'<p id="error">{html.escape(error)}</p>' if error else ""
        body = (
            "<!doctype html><html><head><title>Fake issuer: sign in</title></head><body><h1>Fake issuer</h1>"
            f'{shown}<form method="post" action="/authorize">{hidden}'
            '<label>Username <input name="username" autofocus></label>'
            '<label>Password <input name="password" type="password"></label>'
            '<button type="submit" id="sign-in">Sign in</button></form></body></html>'
        )
        return web.Response(text=body, content_type="text/html", status=401 if error else 200)

    def _bad_authorize(self, params: dict[str, str]) -> str | None:
        if params.get("response_type") != "code":
            return "response_type must be code"
        if params.get("client_id") not in self.clients:
            return "unknown client_id"
        if params.get("code_challenge_method") != "S256" or not params.get("code_challenge"):
            return "PKCE with S256 is required"
        if "openid" not in params.get("scope", "").split():
            return "scope must include openid"
        if not params.get("redirect_uri"):
            return "redirect_uri is required"
        return None

    async def _authorize_form(self, request: web.Request) -> web.Response:
        params = dict(request.query)
        bad = self._bad_authorize(params)
        if bad:
            return web.Response(text=bad, status=400)
        return self._form(params)

    async def _authorize(self, request: web.Request) -> web.Response:
        form = {k: str(v) for k, v in (await request.post()).items()}
        username, password = form.pop("username", ""), form.pop("password", "")
        bad = self._bad_authorize(form)
        if bad:
            return web.Response(text=bad, status=400)
        user = self.users.get(username)
        if user is None or not hmac.compare_digest(user.password, password):
            return self._form(form, "Wrong username or password.")
        code = secrets.token_urlsafe(24)
        self._grants[code] = _Grant(
            form["client_id"], form["redirect_uri"], form["code_challenge"], form.get("nonce"), username,
            time.time() + CODE_TTL_S,
        )  # fmt: skip
        self.log.logins.append(username)
        query = {"code": code} | ({"state": form["state"]} if "state" in form else {})
        sep = "&" if "?" in form["redirect_uri"] else "?"
        raise web.HTTPFound(form["redirect_uri"] + sep + urlencode(query))

    def _client(self, request: web.Request, form: dict[str, str]) -> str | None:
        """The authenticated client id: client_secret_basic, client_secret_post, or a public client."""
        auth = request.headers.get("authorization", "")
        if auth.lower().startswith("basic "):
            from urllib.parse import unquote

            cid, _, secret = base64.b64decode(auth[6:]).decode().partition(":")
            cid, secret = unquote(cid), unquote(secret)
        else:
            cid, secret = form.get("client_id", ""), form.get("client_secret", "")
        if cid not in self.clients:
            return None
        want = self.clients[cid]
        return cid if want is None or hmac.compare_digest(want, secret) else None

    def _token_error(self, error: str, why: str, status: int = 400) -> web.Response:
        self.log.token_errors.append(why)
        return web.json_response({"error": error, "error_description": why}, status=status)

    async def _token(self, request: web.Request) -> web.Response:
        form = {k: str(v) for k, v in (await request.post()).items()}
        client = self._client(request, form)
        if client is None:
            return self._token_error("invalid_client", "client authentication failed", 401)
        if form.get("grant_type") != "authorization_code":
            return self._token_error("unsupported_grant_type", "only authorization_code")
        grant = self._grants.pop(form.get("code", ""), None)  # single use
        if grant is None or grant.expires < time.time() or grant.client_id != client:
            return self._token_error("invalid_grant", "unknown, used or expired code")
        if grant.redirect_uri != form.get("redirect_uri"):
            return self._token_error("invalid_grant", "redirect_uri differs from the authorize request")
        verifier = form.get("code_verifier", "")
        if not hmac.compare_digest(_b64(hashlib.sha256(verifier.encode()).digest()), grant.challenge):
            return self._token_error("invalid_grant", "PKCE verifier does not match the challenge")
        now = int(time.time())
        claims = {**self.claims_of(grant.user), "iss": self.url, "aud": client, "iat": now, "exp": now + 300}
        if grant.nonce:
            claims["nonce"] = grant.nonce
        if self.groups_in_id_token:
            claims["groups"] = list(self.users[grant.user].groups)
        access = secrets.token_urlsafe(24)
        self._access[access] = grant.user
        id_token = jwt.encode({"alg": "RS256", "kid": self.kid}, claims, self._signing)
        body = {"access_token": access, "token_type": "Bearer", "expires_in": 300, "id_token": id_token}
        return web.json_response(body, headers={"cache-control": "no-store"})

    async def _userinfo(self, request: web.Request) -> web.Response:
        auth = request.headers.get("authorization", "")
        user = self._access.get(auth[7:]) if auth.lower().startswith("bearer ") else None
        if user is None:
            return web.json_response({"error": "invalid_token"}, status=401)
        return web.json_response({**self.claims_of(user), "groups": list(self.users[user].groups)})

    async def _end_session(self, request: web.Request) -> web.Response:
        params = dict(request.query)
        self.log.logouts.append(params)
        target = params.get("post_logout_redirect_uri")
        if target:
            raise web.HTTPFound(target)
        return web.Response(text="Signed out of the fake issuer.", content_type="text/html")


def main(argv: list[str] | None = None) -> None:
    """`python -m keel.testing.oidc --user ann:pw:eng-admins,everyone`: an issuer for a demo, until Ctrl-C."""
    import argparse

    parser = argparse.ArgumentParser(description="A fake OpenID Connect issuer on 127.0.0.1 (tests and demos).")
    parser.add_argument("--user", action="append", default=[], help="NAME:PASSWORD[:GROUP,GROUP...]")
    parser.add_argument("--client", default="keel", help="client_id (a public client: PKCE, no secret)")
    args = parser.parse_args(argv)
    users = {}
    for spec in args.user or ["ann:ann:eng-admins"]:
        name, password, groups = [*spec.split(":", 2), ""][:3]
        users[name] = FakeUser(password, tuple(g for g in groups.split(",") if g))
    with FakeIssuer(users, {args.client: None}) as issuer:
        print(f"issuer: {issuer.url}  (client_id {args.client}; users: {', '.join(users)})", flush=True)
        threading.Event().wait()


if __name__ == "__main__":
    main()
