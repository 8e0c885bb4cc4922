"""The dashboard's session cookie: who is signed in (actor, tenant, roles, name, expiry), signed with HMAC-SHA256.

The signing key derives from `sso.session_secret` when set, else from the admin token, so every gateway
process behind a load balancer accepts the same cookie with no shared state, and changing the secret
ends every session. No credential is ever in the cookie: the admin token stays in the login form's POST
body, SSO tokens are checked at the callback and dropped. The cookie is HttpOnly and SameSite=Strict
(no cross-site request carries it, which also covers CSRF). The same key signs the short-lived cookie
that carries an SSO sign-in's state, nonce and PKCE verifier from the login redirect to the callback.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import asdict, dataclass
from typing import Any

from keel.tenancy.actor import OPERATOR, Actor
from keel.tenancy.oidc import Flow

COOKIE = "keel_ui"
FLOW_COOKIE = "keel_sso"  # path /ui/sso, SameSite=Lax: the issuer's redirect back is a cross-site navigation
TTL_S = 12 * 3600


@dataclass(frozen=True, slots=True)
class SignedIn:
    """Whoever a session cookie names."""

    actor: str  # "admin" (the admin token), "user:<id>", or "sso:<issuer>#<subject>" until users exist
    tenant: str | None  # None: every tenant (the operator)
    roles: tuple[str, ...]
    expires: int
    name: str | None = None  # shown beside "Log out"
    provider: str | None = None  # the SSO provider that signed them in: logout ends its session there too

    def as_actor(self, ip: str | None = None) -> Actor:
        if OPERATOR in self.roles:
            return Actor("operator", self.actor, self.tenant, frozenset(self.roles), ip=ip)
        return Actor("user", self.actor, self.tenant, frozenset(self.roles), ip=ip)

    @property
    def label(self) -> str:
        who = self.name or self.actor
        return f"{who} ({', '.join(self.roles)}{f' in {self.tenant}' if self.tenant else ''})"


def landing(value: str | None) -> str:
    """Where to go after login: a dashboard path only (no open redirect)."""
    if value and value.startswith("/ui") and "\\" not in value:
        return value
    return "/ui"


class Sessions:
    def __init__(self, admin_token: str | None, ttl_s: float = TTL_S, secret: str | None = None) -> None:
        self._token = (admin_token or "").encode()
        root = (secret or "").encode() or self._token
        self._key = hmac.new(root, b"keel dashboard session v2", hashlib.sha256).digest() if root else b""
        self.ttl_s = ttl_s

    @property
    def enabled(self) -> bool:
        """A key to sign with: from the admin token or `sso.session_secret`."""
        return bool(self._key)

    @property
    def has_token(self) -> bool:
        """An admin token to log in with (else only SSO signs in)."""
        return bool(self._token)

    def check_token(self, given: str) -> bool:
        return bool(self._token) and hmac.compare_digest(given.encode(), self._token)

    def issue(self, who: SignedIn | None = None, now: float | None = None) -> str:
        """A cookie for `who` (default: the admin token's operator), expiring `ttl_s` from now."""
        expires = int((time.time() if now is None else now) + self.ttl_s)
        if who is None:
            who = SignedIn("admin", None, (OPERATOR,), expires, "admin")
        else:
            who = SignedIn(who.actor, who.tenant, who.roles, expires, who.name, who.provider)
        return self._seal({**asdict(who), "n": secrets.token_urlsafe(9)})

    def read(self, cookie: str | None, now: float | None = None) -> SignedIn | None:
        data = self._open(cookie)
        if data is None:
            return None
        try:
            data.pop("n", None)
            data["roles"] = tuple(data["roles"])
            who = SignedIn(**data)
        except (TypeError, KeyError):
            return None
        return who if who.expires > (time.time() if now is None else now) else None

    def valid(self, cookie: str | None, now: float | None = None) -> bool:
        return self.read(cookie, now) is not None

    def issue_flow(self, flow: Flow) -> str:
        return self._seal({"flow": [flow.provider, flow.state, flow.nonce, flow.verifier, flow.next, flow.started]})

    def read_flow(self, cookie: str | None) -> Flow | None:
        data = self._open(cookie)
        try:
            provider, state, nonce, verifier, next_path, started = (data or {})["flow"]
            return Flow(provider, state, nonce, verifier, next_path, float(started))
        except (KeyError, TypeError, ValueError):
            return None

    def _seal(self, data: dict[str, Any]) -> str:
        payload = base64.urlsafe_b64encode(json.dumps(data, separators=(",", ":")).encode()).decode().rstrip("=")
        return f"{payload}.{self._sign(payload)}"

    def _open(self, cookie: str | None) -> dict[str, Any] | None:
        if not (self.enabled and cookie and cookie.isascii() and len(cookie) < 4096):
            return None  # ours is ASCII; compare_digest refuses other str
        payload, _, signature = cookie.rpartition(".")
        if not hmac.compare_digest(signature, self._sign(payload)):
            return None
        try:
            data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        except ValueError:
            return None
        return data if isinstance(data, dict) else None

    def _sign(self, payload: str) -> str:
        return hmac.new(self._key, payload.encode(), hashlib.sha256).hexdigest()
