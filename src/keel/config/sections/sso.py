"""`sso:`: OpenID Connect providers for dashboard sign-in and JWT bearer tokens on the admin API.

Each provider is one issuer and one tenant: who signs in through it belongs to that tenant, with the
roles its `roles:` mapping gives the values of `groups_claim`. Secrets (`client_secret`,
`session_secret`) come from `${ENV}` and never appear in reprs, logs or errors.
"""

from __future__ import annotations

from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator

from keel.config.parts import Model, Outline
from keel.errors import ConfigIssue

Role = Literal["owner", "admin", "developer", "viewer", "auditor"]  # keel.tenancy.actor.ROLES
Algorithm = Literal["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"]
LOOPBACK = ("127.0.0.1", "localhost", "::1")


class SsoProviderConfig(Model):
    """One OpenID Connect issuer; `keel.tenancy.oidc` signs users in with it, `keel.tenancy.jwt` checks its tokens."""

    issuer: str  # its discovery document is <issuer>/.well-known/openid-configuration
    client_id: str = Field(min_length=1)
    client_secret: str | None = Field(None, repr=False)  # None: a public client (PKCE only)
    tenant: str = Field(min_length=1)
    display_name: str | None = None  # "Sign in with <display_name>"; default the provider's name
    scopes: list[str] = ["openid", "email", "profile"]
    audience: str | None = None  # a JWT bearer's `aud`; default client_id
    groups_claim: str = "groups"  # a string or list claim whose values `roles` maps
    roles: dict[str, Role] = {}  # group (or claim value) -> role
    default_role: Role | None = None  # for users no group maps; None: they are refused
    jit: bool = True  # create users at their first sign-in; off: only users created beforehand

    @field_validator("issuer")
    @classmethod
    def _issuer(cls, v: str) -> str:
        parts = urlsplit(v)
        if parts.scheme == "https" or (parts.scheme == "http" and parts.hostname in LOOPBACK):
            if parts.query or parts.fragment:
                raise ValueError("must have no query or fragment (the token's `iss` must equal it)")
            return v
        raise ValueError("must be an https:// URL (http:// only on a loopback address, for tests)")

    @field_validator("scopes")
    @classmethod
    def _scopes(cls, v: list[str]) -> list[str]:
        if "openid" not in v:
            raise ValueError("must include openid")
        return v


class SsoConfig(Model):
    """Single sign-on; see README "Single sign-on"."""

    providers: dict[str, SsoProviderConfig] = {}
    public_url: str | None = None  # how browsers reach Keel (https://keel.example.com); default: as each request says
    session_secret: str | None = Field(None, repr=False)  # signs dashboard sessions; default: from admin_token
    session_ttl_s: float = Field(12 * 3600, gt=0, le=30 * 86400)
    algorithms: list[Algorithm] = ["RS256", "PS256", "ES256", "EdDSA"]  # asymmetric only: never none, never HS*
    leeway_s: float = Field(60, ge=0, le=600)  # clock skew allowed on exp, nbf and iat
    jwks_refetch_s: float = Field(30, ge=0, le=3600)  # an unknown kid refetches the JWKS at most this often
    jwks_ttl_s: float = Field(3600, gt=0)  # known keys are refetched at most this stale


def check(sso: SsoConfig, outline: Outline) -> list[ConfigIssue]:
    """Provider names fit a URL path; each session secret is long enough to sign with."""
    issues: list[ConfigIssue] = []
    for name in sso.providers:
        if not name or not all(c.isascii() and (c.isalnum() or c in "-_") for c in name):
            fix = "use letters, digits, - and _ (the name is part of /ui/sso/<name>/callback)"
            issues.append(ConfigIssue(f"sso.providers.{name}", "provider names appear in URLs", fix))
    if sso.session_secret is not None and len(sso.session_secret) < 32:
        fix = "use 32 characters or more: session_secret: ${KEEL_SESSION_SECRET} (openssl rand -hex 32)"
        issues.append(ConfigIssue("sso.session_secret", "too short to sign sessions with", fix))
    if not sso.algorithms:
        issues.append(ConfigIssue("sso.algorithms", "no algorithm allowed", "remove it for RS256, PS256, ES256, EdDSA"))
    return issues
