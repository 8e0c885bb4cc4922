"""Dashboard sign-in with OpenID Connect: the authorization code flow with PKCE (S256), state and nonce.

`begin` returns the issuer's authorize URL and the `Flow` the browser must bring back (the dashboard
keeps it in a short-lived signed cookie, so any replica can finish it). `finish` checks `state`,
exchanges the code with the PKCE verifier, checks the ID token with `keel.tenancy.jwt.verify` (its
`nonce` included) and maps its claims to an `Identity`. `logout_url` is the issuer's
end_session_endpoint (RP-initiated logout), when it has one.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

from keel.config.sections.sso import SsoProviderConfig
from keel.errors import AuthError, KeelError
from keel.tenancy.actor import Identity

if TYPE_CHECKING:  # keel.tenancy.jwt needs joserfc (the `sso` extra): imported once a provider is configured
    from keel.tenancy.jwt import Http, Issuer, Policy

FLOW_TTL_S = 600  # a sign-in not finished within ten minutes starts over


@dataclass(frozen=True, slots=True)
class Flow:
    """What one sign-in attempt must find again at the callback; all of it is random but `next`."""

    provider: str
    state: str
    nonce: str
    verifier: str  # the PKCE code_verifier; only its S256 hash travels to the authorize endpoint
    next: str  # the dashboard path to land on
    started: float

    def expired(self, now: float | None = None) -> bool:
        return (time.time() if now is None else now) - self.started > FLOW_TTL_S


def challenge(verifier: str) -> str:
    """RFC 7636 §4.2: BASE64URL(SHA256(ASCII(code_verifier))), unpadded."""
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode("ascii")).digest()).rstrip(b"=").decode()


def _with_query(url: str, params: Mapping[str, str]) -> str:
    return url + ("&" if "?" in url else "?") + urlencode(params)


class OidcProvider:
    """One configured provider's sign-in: its issuer (shared with JWT bearers) and client settings."""

    def __init__(self, name: str, config: SsoProviderConfig, issuer: Issuer, http: Http, policy: Policy) -> None:
        self.name = name
        self.config = config
        self.issuer = issuer
        self._http = http
        self._policy = policy

    @property
    def display_name(self) -> str:
        return self.config.display_name or self.name

    async def begin(self, redirect_uri: str, next_path: str) -> tuple[str, Flow]:
        found = await self.issuer.discovery()
        flow = Flow(
            self.name,
            secrets.token_urlsafe(24),
            secrets.token_urlsafe(24),
            secrets.token_urlsafe(48),  # 64 characters: within RFC 7636's 43 to 128
            next_path,
            time.time(),
        )
        params = {
            "response_type": "code",
            "client_id": self.config.client_id,
            "redirect_uri": redirect_uri,
            "scope": " ".join(self.config.scopes),
            "state": flow.state,
            "nonce": flow.nonce,
            "code_challenge": challenge(flow.verifier),
            "code_challenge_method": "S256",
        }
        return _with_query(found.authorization_endpoint, params), flow

    async def finish(self, flow: Flow, params: Mapping[str, str], redirect_uri: str) -> Identity:
        """The callback's query → the signed-in Identity; AuthError (401) or NoRole (403) otherwise."""
        if flow.provider != self.name or flow.expired():
            raise AuthError("This sign-in has expired or belongs to another provider: start again.")
        error = params.get("error")
        if error:
            shown = error if error.isascii() and error.replace("_", "").isalnum() and len(error) < 64 else "error"
            raise AuthError(f"The identity provider did not sign you in ({shown}).")
        if not hmac.compare_digest(params.get("state", "").encode(), flow.state.encode()):
            raise AuthError("The sign-in's state does not match: start again.")
        code = params.get("code")
        if not code:
            raise AuthError("The identity provider sent no authorization code.")
        found = await self.issuer.discovery()
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "code_verifier": flow.verifier,
        }
        basic = None
        if self.config.client_secret is None:
            form["client_id"] = self.config.client_id
        else:  # client_secret_basic, each part form-encoded first (RFC 6749 §2.3.1)
            basic = (quote(self.config.client_id, safe=""), quote(self.config.client_secret, safe=""))
        from keel.tenancy.jwt import IssuerDown, identity_of, verify

        tokens = await self._http.post_form(found.token_endpoint, form, basic)
        id_token = tokens.get("id_token") if isinstance(tokens, dict) else None
        if not isinstance(id_token, str):
            raise IssuerDown("The identity provider's token response has no id_token.")
        claims = await verify(id_token, self.issuer, self.config.client_id, self._policy, nonce=flow.nonce)
        access = tokens.get("access_token")
        if self.config.groups_claim not in claims and found.userinfo_endpoint and isinstance(access, str):
            claims = await self._with_userinfo(claims, found.userinfo_endpoint, access)
        return identity_of(claims, self.config, self.issuer.url)

    async def _with_userinfo(self, claims: dict[str, Any], endpoint: str, access_token: str) -> dict[str, Any]:
        """Claims the ID token left out (often groups) from userinfo, for the same subject only."""
        info = await self._http.get_json(endpoint, bearer=access_token)
        if not isinstance(info, dict) or info.get("sub") != claims["sub"]:
            return claims
        return {**{k: v for k, v in info.items() if k not in ("iss", "aud", "exp", "iat", "nbf")}, **claims}

    async def logout_url(self, post_logout_redirect_uri: str) -> str | None:
        """Where to send the browser to end its session at the issuer, or None when the issuer has no
        end_session_endpoint (or cannot be reached: the dashboard's own session ends either way)."""
        try:
            found = await self.issuer.discovery()
        except KeelError:  # the issuer down
            return None
        if found.end_session_endpoint is None:
            return None
        params = {"client_id": self.config.client_id, "post_logout_redirect_uri": post_logout_redirect_uri}
        return _with_query(found.end_session_endpoint, params)
