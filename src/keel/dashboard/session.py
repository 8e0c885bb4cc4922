"""The dashboard's session cookie: an expiry and a nonce, signed with HMAC-SHA256.

The signing key is derived from the admin token, so every gateway process behind a load balancer
accepts the same cookie with no shared state, and changing the token ends every session. The
token itself never leaves the login form's POST body: not in the cookie, not in a URL. The cookie is
HttpOnly and SameSite=Strict (no cross-site request carries it, which also covers CSRF).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time

COOKIE = "keel_ui"
TTL_S = 12 * 3600


class Sessions:
    def __init__(self, admin_token: str | None, ttl_s: float = TTL_S) -> None:
        self._token = (admin_token or "").encode()
        self._key = hmac.new(self._token, b"keel dashboard session v1", hashlib.sha256).digest()
        self.ttl_s = ttl_s

    @property
    def enabled(self) -> bool:
        return bool(self._token)

    def check_token(self, given: str) -> bool:
        return self.enabled and hmac.compare_digest(given.encode(), self._token)

    def issue(self, now: float | None = None) -> str:
        expires = int((time.time() if now is None else now) + self.ttl_s)
        payload = f"{expires}.{secrets.token_urlsafe(12)}"
        return f"{payload}.{self._sign(payload)}"

    def valid(self, cookie: str | None, now: float | None = None) -> bool:
        if not (self.enabled and cookie and cookie.isascii()):  # ours is ASCII; compare_digest refuses other str
            return False
        payload, _, signature = cookie.rpartition(".")
        if not hmac.compare_digest(signature, self._sign(payload)):
            return False
        expires, _, _ = payload.partition(".")
        try:
            return int(expires) > (time.time() if now is None else now)
        except ValueError:
            return False

    def _sign(self, payload: str) -> str:
        return hmac.new(self._key, payload.encode(), hashlib.sha256).hexdigest()
