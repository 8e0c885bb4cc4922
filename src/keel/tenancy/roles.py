"""Permissions and the one matrix that grants them: role -> permissions, and what a virtual key may do on
its own tenant.

Every admin route names one permission (api/guard.py). The operator holds all of them, on every tenant;
the tenant roles hold theirs on their own tenant only. A token's scopes narrow its user's permissions,
never widen them. Reading traces' content (prompts and responses) is `traces.content`: owners, admins
and developers hold it, viewers only where their tenant says so (`viewer_content`), auditors never.
"""

from __future__ import annotations

from collections.abc import Iterable

from keel.store.protocols.tenancy import TenancyStore
from keel.tenancy.actor import OPERATOR, ROLES, Actor

# permission -> what it allows (the reference `keel users` and the decision file print)
PERMISSIONS: dict[str, str] = {
    "tenants.manage": "create tenants; every tenant's settings (operator)",
    "tenants.read": "read the tenant's settings",
    "tenants.write": "change the tenant's settings (regions, viewer_content)",
    "platform.read": "targets, breakers and SLOs (not tenant data)",
    "retention.run": "run a retention sweep now (operator)",
    "data.purge": "delete a tenant's or a user's data",
    "keys.read": "list virtual keys (never their secrets)",
    "keys.write": "create and revoke virtual keys (a developer: their team's only)",
    "traces.read": "list and show traces (metadata)",
    "traces.content": "see traces' prompts and responses",
    "traces.replay": "re-send a recorded call as its tenant",
    "usage.read": "usage and cost rollups",
    "limits.read": "limits, overrides and counters",
    "limits.write": "set and clear limit overrides",
    "jobs.read": "list and show jobs",
    "jobs.write": "cancel and retry jobs",
    "prompts.read": "read prompts, versions, labels, rollouts, history",
    "prompts.write": "push prompts, move labels, start rollouts, roll back (a developer: their team's only)",
    "prompts.protected": "protect labels and move protected ones",
    "feedback.read": "feedback summaries",
    "feedback.write": "record feedback on a call",
    "evals.read": "eval runs, comparisons and online scores",
    "evals.run": "start eval runs",
    "online_evals.manage": "online eval rules, which score every tenant's calls (operator)",
    "rag.read": "RAG collections and documents",
    "rag.write": "create, fill, re-chunk, set reranking of and drop RAG collections (a developer: their team's)",
    "rag.search": "search RAG collections",
    "agents.read": "agent tools, named agents and runs",
    "agents.write": "add and remove agent tools and named agents",
    "agents.run": "start agent runs (with a virtual key: its calls are that key's)",
    "secrets.read": "list agent secrets' names (never values)",
    "secrets.write": "set and remove agent secrets",
    "approvals.decide": "list, approve and deny pending tool calls",
    "audit.read": "read and verify the audit log",
    "users.read": "list users and teams",
    "users.manage": "add, change and remove users and teams; revoke their tokens",
    "tokens.own": "create, list and revoke one's own personal access tokens",
}

_OPERATOR_ONLY = frozenset({"tenants.manage", "retention.run", "online_evals.manage"})
_READ = frozenset({
    "tenants.read", "platform.read", "keys.read", "traces.read", "usage.read", "limits.read", "jobs.read",
    "prompts.read", "feedback.read", "evals.read", "rag.read", "rag.search", "agents.read", "secrets.read",
    "users.read", "tokens.own",
})  # fmt: skip
_BUILD = frozenset({
    "keys.write", "traces.content", "traces.replay", "prompts.write", "feedback.write", "evals.run",
    "rag.write", "agents.write", "agents.run", "secrets.write",
})  # fmt: skip
_ADMINISTER = frozenset(
    {"prompts.protected", "tenants.write", "limits.write", "jobs.write", "approvals.decide", "users.manage"}
)

MATRIX: dict[str, frozenset[str]] = {
    OPERATOR: frozenset(PERMISSIONS),
    "owner": frozenset(PERMISSIONS) - _OPERATOR_ONLY,
    "admin": _READ | _BUILD | _ADMINISTER,
    "developer": (_READ | _BUILD) - {"users.read"},
    "viewer": _READ - {"users.read", "secrets.read", "rag.search"},
    "auditor": frozenset({"audit.read", "usage.read", "tenants.read", "tokens.own"}),
}

# What a tenant's virtual key may do on its own tenant: exactly the routes that took keys before roles.
KEY_PERMISSIONS = frozenset({
    "prompts.read", "prompts.write", "feedback.read", "feedback.write", "rag.read", "rag.write",
    "rag.search", "evals.read", "evals.run", "agents.read", "agents.write", "agents.run", "secrets.read",
    "secrets.write",
})  # fmt: skip

assert set(MATRIX) == {OPERATOR, *ROLES}, "every role has a row"
assert all(p in PERMISSIONS for row in MATRIX.values() for p in row | KEY_PERMISSIONS)


def granted(roles: Iterable[str]) -> frozenset[str]:
    """The permissions a set of roles holds together (unknown role names hold none)."""
    out: frozenset[str] = frozenset()
    for role in roles:
        out |= MATRIX.get(role, frozenset())
    return out


def permissions_of(actor: Actor) -> frozenset[str]:
    """What `actor` may do (within its tenant unless it is an operator), scopes applied."""
    held = KEY_PERMISSIONS if actor.kind == "key" else granted(actor.roles)
    return held if actor.scopes is None else held & actor.scopes


def may(actor: Actor, permission: str) -> bool:
    if permission not in PERMISSIONS:
        raise KeyError(f"unknown permission {permission!r}")
    return permission in permissions_of(actor)


def sees_content(actor: Actor, viewer_content: bool) -> bool:
    """Whether `actor` sees traces' prompts and responses, given its tenant's `viewer_content` setting."""
    if may(actor, "traces.content"):
        return True
    scoped_out = actor.scopes is not None and "traces.content" not in actor.scopes
    return viewer_content and "viewer" in actor.roles and not scoped_out and actor.kind != "key"


def team_bound(actor: Actor) -> bool:
    """Whether `actor` reaches only its own team's keys, prompts and RAG collections: a developer who is not
    also an owner or admin."""
    return actor.kind == "user" and "developer" in actor.roles and not ({"owner", "admin"} & actor.roles)


def reaches_team(actor: Actor, team: str | None) -> bool:
    """Whether `actor` may change (and lists) a thing of `team` (None: tenant-wide, which a team-bound
    developer only uses)."""
    return not team_bound(actor) or (team is not None and team == actor.team)


def unknown_scopes(scopes: Iterable[str]) -> list[str]:
    return sorted(s for s in scopes if s not in PERMISSIONS)


def may_own_key_of(issuer: Actor, owner_roles: Iterable[str]) -> bool:
    """Whether `issuer` may issue a virtual key for a user holding `owner_roles`. A key's agent runs act as
    its user's roles (tool policies name roles), so the issuer must hold every permission that user holds."""
    return granted(owner_roles) <= permissions_of(issuer)


def key_owner_refusal(store: TenancyStore, issuer: Actor, tenant: str, user: str | None) -> str | None:
    """Why `issuer` may not issue a key of `tenant` for `user`, or None. A `user` that is no user of the
    tenant is attribution only (its runs act with no roles), so anyone who may issue keys may name it."""
    if user is None:
        return None
    row = store.get_user(user)
    if row is None or row.tenant != tenant or may_own_key_of(issuer, row.roles):
        return None
    return (
        f"{issuer.id} may not issue a key for '{user}' (roles: {', '.join(sorted(row.roles))}): "
        "its runs would act with permissions the issuer lacks."
    )
