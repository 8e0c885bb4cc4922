"""The dashboard's POST forms: a bounded urlencoded body, and a CSRF token tied to the session.

The session cookie is SameSite=Strict, so no cross-site request carries it; the token is a second lock
that costs nothing: HMAC-SHA256 of a fixed label keyed by the cookie itself. Only the holder of the
cookie (HttpOnly: no script reads it) can compute it, it needs no server state (every process behind a
load balancer checks it alike), and it dies with the session. Compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
from urllib.parse import parse_qs

from starlette.requests import Request

from keel.dashboard.markup import Safe, h
from keel.dashboard.session import COOKIE

MAX_FORM = 4096  # bytes of a form body; a larger one is read as empty (every field missing)
FIELD = "csrf"


def csrf_token(cookie: str) -> str:
    return hmac.new(cookie.encode(), b"keel dashboard csrf v1", hashlib.sha256).hexdigest()


def csrf_field(request: Request) -> Safe:
    """The hidden input every POST form of a signed-in page carries."""
    return h('<input type="hidden" name="{}" value="{}">', FIELD, csrf_token(request.cookies.get(COOKIE) or ""))


class Form:
    """A POST form's fields (first value of each), and whether its CSRF token belongs to this session."""

    def __init__(self, fields: dict[str, list[str]], cookie: str | None) -> None:
        self._fields = fields
        given = self.get(FIELD) or ""
        self.trusted = bool(cookie) and given.isascii() and hmac.compare_digest(given, csrf_token(cookie or ""))

    def get(self, name: str) -> str | None:
        values = self._fields.get(name)
        return values[0] if values else None

    def text(self, name: str) -> str:
        """The field stripped, or '' when absent."""
        return (self.get(name) or "").strip()


async def read_form(request: Request) -> Form:
    body = b""
    async for chunk in request.stream():  # never more than MAX_FORM + one chunk in memory
        body += chunk
        if len(body) > MAX_FORM:
            break
    fields = parse_qs(body.decode("utf-8", "replace")) if len(body) <= MAX_FORM else {}
    return Form(fields, request.cookies.get(COOKIE))
