"""The vocabulary every edge shares: who is asking (`Actor`) and what an identity provider vouched for
(`Identity`). Frozen values: an actor is resolved once per request and never changes during it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from keel.errors import InvalidRequest, PermissionDenied
from keel.types import Principal

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
    principal: Principal | None = None  # a virtual key's, when kind == "key"
    models: tuple[str, ...] | None = None  # the aliases a virtual key may call (None: all)

    @property
    def operator(self) -> bool:
        return OPERATOR in self.roles

    def can(self, permission: str) -> bool:
        """Whether this actor holds `permission` (on its own tenant, or on every one as an operator)."""
        from keel.tenancy.roles import may  # the matrix imports this module

        return may(self, permission)

    def tenant_for(self, asked: Any, what: str = "data") -> str:
        """The tenant a request acts on: the one it names (`tenant` in its query or body), which must be
        this actor's own unless it is an operator; an actor of one tenant may leave it out."""
        if asked is not None and (not isinstance(asked, str) or not asked or len(asked) > 256 or "\x00" in asked):
            raise InvalidRequest("'tenant' must be a tenant name (1 to 256 characters, no NUL).", "tenant")
        if self.tenant is None:
            if not asked:
                raise InvalidRequest("Name the tenant: 'tenant' in the query or body.", "tenant")
            return str(asked)
        if asked is not None and asked != self.tenant:
            raise PermissionDenied(f"{self.id} reaches only its own tenant's {what} ('{self.tenant}').")
        return self.tenant

    def scope(self, asked: str | None) -> str | None:
        """The tenant filter of a listing: an operator's choice (None: every tenant), else its own."""
        return (asked or None) if self.tenant is None else self.tenant_for(asked)
