"""Users, teams, personal access tokens and who is asking (api/tenancy_admin.py, api/sso_admin.py); one
user's purge (api/admin.py); the audit log's range export (api/audit_admin.py); the pages a signed approval
link opens (api/agents_admin.py). Each route needs the permission keel.tenancy.roles names for it."""

from __future__ import annotations

from keel.api.openapi.core import PURGE
from keel.api.openapi.spec import (
    BOOL,
    PUBLIC,
    STR,
    TIME,
    USER_SCHEMES,
    WINDOW_EDGE,
    Op,
    Schema,
    arr,
    closed,
    null,
    obj,
    page,
    q,
)

ROLE: Schema = {"type": "string", "enum": ["operator", "owner", "admin", "developer", "viewer", "auditor"]}
USER: Schema = obj(
    ("id", "tenant", "roles", "created_at", "disabled"),
    id=STR,
    tenant=null(STR),
    email=null(STR),
    name=null(STR),
    roles=arr(ROLE),
    team=null(STR),
    issuer=null(STR),
    subject=null(STR),
    created_at=TIME,
    disabled_at=null(TIME),
    disabled=BOOL,
)
TEAM: Schema = obj(("tenant", "name"), tenant=STR, name=STR, created_at=TIME)
TOKEN: Schema = obj(
    ("id", "user_id", "created_at"),
    id=STR,
    user_id=STR,
    tenant=null(STR),
    name=null(STR),
    scopes=null(arr(STR)),
    created_at=TIME,
    expires_at=null(TIME),
    last_used_at=null(TIME),
    revoked_at=null(TIME),
)
WHO: Schema = obj(
    ("kind", "id", "tenant", "roles"),
    kind={"type": "string", "enum": ["operator", "user", "key"]},
    id=STR,
    tenant=null(STR),
    roles=arr(STR),
    team=null(STR),
    scopes=arr(STR),
)
SIGNED = (q("exp", STR, "the link's expiry (unix seconds)", True), q("sig", STR, "the link's signature", True))

TENANCY: tuple[Op, ...] = (
    Op(
        "GET",
        "/api/users",
        "A tenant's users (an operator: every tenant's)",
        {200: page(USER)},
        query=(q("tenant"),),
        security=USER_SCHEMES,
    ),
    Op(
        "POST",
        "/api/users",
        "Add a user to a tenant with roles, or an operator",
        {201: USER},
        body=closed(
            obj(
                id=STR,
                tenant=STR,
                roles=arr(ROLE),
                email=STR,
                name=STR,
                team=STR,
                operator=BOOL,
                issuer={"type": "string", "description": "with subject: the user's SSO identity (no jit needed)"},
                subject=STR,
            )
        ),
        security=USER_SCHEMES,
    ),
    Op("GET", "/api/users/{user_id}", "One user", {200: USER}, security=USER_SCHEMES),
    Op(
        "PATCH",
        "/api/users/{user_id}",
        "Change a user's roles, team, name or email; disable or enable them",
        {200: USER},
        body=closed(obj(roles=arr(ROLE), team=null(STR), email=STR, name=STR, disabled=BOOL)),
        security=USER_SCHEMES,
    ),
    Op(
        "DELETE",
        "/api/users/{user_id}",
        "Remove a user (their tokens stop working)",
        {200: {**USER, "properties": {**USER["properties"], "deleted": BOOL}}},
        security=USER_SCHEMES,
    ),
    Op("GET", "/api/teams", "A tenant's teams", {200: page(TEAM)}, query=(q("tenant"),), security=USER_SCHEMES),
    Op(
        "POST",
        "/api/teams",
        "Add a team",
        {201: TEAM},
        body=closed(obj(("name",), name=STR, tenant=STR)),
        security=USER_SCHEMES,
    ),
    Op(
        "DELETE",
        "/api/teams/{name}",
        "Remove a team",
        {200: obj(tenant=STR, name=STR, deleted=BOOL)},
        query=(q("tenant"),),
        security=USER_SCHEMES,
    ),
    Op(
        "GET",
        "/api/tokens",
        "Personal access tokens (the caller's, or a named user's)",
        {200: page(TOKEN)},
        query=(q("user"),),
        security=USER_SCHEMES,
    ),
    Op(
        "POST",
        "/api/tokens",
        "Issue a personal access token (the token is in this answer only)",
        {201: {**TOKEN, "properties": {**TOKEN["properties"], "token": STR}}},
        body=closed(obj(name=STR, scopes=arr(STR), expires_in={"type": "number", "exclusiveMinimum": 0}, user=STR)),
        body_required=False,
        security=USER_SCHEMES,
    ),
    Op("POST", "/api/tokens/{token_id}/revoke", "Revoke a personal access token", {200: TOKEN}, security=USER_SCHEMES),
    Op(
        "GET",
        "/api/whoami",
        "Who the admin API takes the caller for",
        {200: WHO},
        security=(*USER_SCHEMES, "virtualKey"),
        errors=(401, 403),
    ),
    Op(
        "DELETE",
        "/api/tenants/{name}/users/{user}",
        "Delete one user's data within a tenant: the receipt",
        {200: PURGE},
        security=USER_SCHEMES,
    ),
    Op(
        "GET",
        "/api/audit/export",
        "The audit log over a range, streamed: JSONL (with a trailer that verifies the file alone) or CSV",
        {200: STR},
        query=(
            q("since", WINDOW_EDGE),
            q("until", WINDOW_EDGE),
            q("tenant"),
            q("actor"),
            q("action", STR, "an action prefix"),
            q("target"),
            q("format", {"type": "string", "enum": ["jsonl", "csv"]}),
        ),
        security=USER_SCHEMES,
        media=("application/x-ndjson", "text/csv"),
    ),
    Op(
        "GET",
        "/api/approvals/{call_id}/approve",
        "A signed approval link's page: the call and a button",
        {200: STR},
        query=SIGNED,
        security=PUBLIC,
        errors=(400, 403, 404),
        media=("text/html",),
    ),
    Op(
        "GET",
        "/api/approvals/{call_id}/deny",
        "A signed denial link's page: the call and a button",
        {200: STR},
        query=SIGNED,
        security=PUBLIC,
        errors=(400, 403, 404),
        media=("text/html",),
    ),
)

NAMED: dict[str, Schema] = {"User": USER, "Team": TEAM, "PersonalAccessToken": TOKEN, "Whoami": WHO}
