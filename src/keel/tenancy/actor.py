"""The vocabulary every edge shares: who is asking (`Actor`) and what an identity provider vouched for
(`Identity`). Frozen values: an actor is resolved once per request and never changes during it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

ROLES = ("owner", "admin", "developer", "viewer", "auditor")  # per tenant, strongest first
OPERATOR = "operator"  # the platform operator: every tenant; the admin token acts as one

ActorKind = Literal["operator", "user", "key"]


@dataclass(frozen=True, slots=True)
class Identity:
    """What an identity provider vouched for at an SSO login or in a JWT bearer token."""

    issuer: str
    subject: str
    tenant: str  # the tenant the provider is configured for
    roles: tuple[str, ...]  # after the tenant's claim or group -> role mapping; may be empty
    email: str | None = None
    name: str | None = None
    groups: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Actor:
    """Whoever makes an admin call, as audit entries name it."""

    kind: ActorKind
    id: str  # "admin" (the admin token), "user:<id>", "key:<id>"
    tenant: str | None  # None: every tenant (an operator)
    roles: frozenset[str]  # ROLES within `tenant`, or {OPERATOR}
    team: str | None = None
    scopes: frozenset[str] | None = None  # a token's scopes (permissions); None: all its roles allow
    ip: str | None = None
