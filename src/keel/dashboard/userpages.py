"""The people pages: users (list, add, set role, disable or enable), teams (list, add) and roles (the
permission matrix, read-only, straight from keel.tenancy.roles).

Every change goes through the `Directory` the admin API and CLI use, and is an entry in the audit log
naming the signed-in actor. An actor bound to a tenant sees and changes its own tenant only, and grants
no role stronger than its own strongest (an admin cannot make an owner); only an operator adds operators'
peers or picks the tenant. Names and emails may come from an identity provider: they reach the page only
through `h`.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from keel.audit.log import AuditLog
from keel.dashboard.forms import csrf_field, read_form
from keel.dashboard.markup import Safe, View, h, join, when
from keel.errors import KeelError, PermissionDenied
from keel.store.protocols.tenancy import TeamRow, UserRow
from keel.tenancy.actor import OPERATOR, ROLES, Actor
from keel.tenancy.directory import Directory
from keel.tenancy.roles import KEY_PERMISSIONS, MATRIX, PERMISSIONS

EXPIRED = "This form expired or did not come from this dashboard: reload the page."


def grantable(actor: Actor) -> tuple[str, ...]:
    """The roles `actor` may give: every one for an operator, else its own strongest and those below it."""
    if OPERATOR in actor.roles:
        return ROLES
    held = [ROLES.index(r) for r in actor.roles if r in ROLES]
    return ROLES[min(held) :] if held else ()


class UserPages:
    def __init__(self, directory: Directory, audit: AuditLog | None) -> None:
        self._dir = directory
        self._audit = audit

    # ---- users

    async def users(self, request: Request, actor: Actor, can_manage: bool) -> View:
        tenant = actor.tenant or (request.query_params.get("tenant") or "").strip() or None
        users = await self._dir.list_users(tenant)
        teams = await self._dir.list_teams(tenant) if can_manage else []
        notice = request.query_params.get("done")
        body = h(
            "<h1>Users</h1>{}{}{}{}",
            h('<p class="notice" id="notice">{}</p>', notice) if notice else Safe(""),
            _tenant_filter("/ui/users", actor, tenant),
            _users_table(request, users, actor, can_manage),
            _add_user_form(request, actor, tenant, teams) if can_manage else Safe(""),
        )
        return View("Users", body)

    async def add_user(self, request: Request, actor: Actor) -> View | Response:
        form = await read_form(request)
        if not form.trusted:
            return View("Refused", _error("Users", EXPIRED), 403)
        role = form.text("role")
        if role not in grantable(actor):
            return View("Refused", _error("Users", f"You may not grant the role '{role}'."), 403)
        try:
            row = await self._dir.add_user(
                actor.tenant or form.text("tenant"),
                (role,),
                user_id=form.text("id") or None,
                email=form.text("email") or None,
                name=form.text("name") or None,
                team=form.text("team") or None,
            )
        except KeelError as err:
            return View("Users", _error("Users", err.message), err.status)
        await self._record(request, actor, "users.manage POST /ui/users", row, after=_user_view(row))
        return _back("/ui/users", row.tenant, f"User {row.id} added.")

    async def set_role(self, request: Request, actor: Actor) -> View | Response:
        form = await read_form(request)
        if not form.trusted:
            return View("Refused", _error("Users", EXPIRED), 403)
        user_id, role = request.path_params["user_id"], form.text("role")
        try:
            before = await self._mine(actor, user_id)
            if role not in grantable(actor) or not set(before.roles) <= set(grantable(actor)):
                raise PermissionDenied(f"You may not change {user_id}'s role to '{role}'.")
            row = await self._dir.update_user(user_id, tenant=actor.tenant, roles=(role,))
        except KeelError as err:
            return View("Users", _error("Users", err.message), err.status)
        path = f"users.manage POST /ui/users/{user_id}/role"
        await self._record(request, actor, path, row, before=_user_view(before), after=_user_view(row))
        return _back("/ui/users", row.tenant, f"User {row.id} is now {role}.")

    async def set_disabled(self, request: Request, actor: Actor) -> View | Response:
        form = await read_form(request)
        if not form.trusted:
            return View("Refused", _error("Users", EXPIRED), 403)
        user_id, disable = request.path_params["user_id"], form.text("disabled") != "0"
        try:
            before = await self._mine(actor, user_id)
            if f"user:{user_id}" == actor.id:
                raise PermissionDenied("You cannot disable yourself.")
            row = await self._dir.update_user(user_id, tenant=actor.tenant, disabled=disable)
        except KeelError as err:
            return View("Users", _error("Users", err.message), err.status)
        path = f"users.manage POST /ui/users/{user_id}/disable"
        await self._record(request, actor, path, row, before=_user_view(before), after=_user_view(row))
        return _back("/ui/users", row.tenant, f"User {row.id} {'disabled' if disable else 'enabled'}.")

    async def _mine(self, actor: Actor, user_id: str) -> UserRow:
        """The user, if it is of the actor's tenant (an operator: any); NotFound otherwise."""
        return await self._dir.user(user_id, actor.tenant)

    # ---- teams

    async def teams(self, request: Request, actor: Actor, can_manage: bool) -> View:
        tenant = actor.tenant or (request.query_params.get("tenant") or "").strip() or None
        teams = await self._dir.list_teams(tenant)
        users = await self._dir.list_users(tenant)
        notice = request.query_params.get("done")
        body = h(
            "<h1>Teams</h1>{}{}{}{}",
            h('<p class="notice" id="notice">{}</p>', notice) if notice else Safe(""),
            _tenant_filter("/ui/teams", actor, tenant),
            _teams_table(teams, users),
            _add_team_form(request, actor, tenant) if can_manage else Safe(""),
        )
        return View("Teams", body)

    async def add_team(self, request: Request, actor: Actor) -> View | Response:
        form = await read_form(request)
        if not form.trusted:
            return View("Refused", _error("Teams", EXPIRED), 403)
        try:
            row = await self._dir.add_team(actor.tenant or form.text("tenant"), form.text("name"))
        except KeelError as err:
            return View("Teams", _error("Teams", err.message), err.status)
        if self._audit is not None:
            await self._audit.record(actor.id, "users.manage POST /ui/teams", row.name, tenant=row.tenant,
                                     source_ip=_ip(request), after={"tenant": row.tenant, "name": row.name})  # fmt: skip
        return _back("/ui/teams", row.tenant, f"Team {row.name} added.")

    async def _record(self, request: Request, actor: Actor, action: str, row: UserRow, **detail: Any) -> None:
        if self._audit is not None:
            await self._audit.record(actor.id, action, f"user:{row.id}", tenant=row.tenant, source_ip=_ip(request),
                                     **detail)  # fmt: skip


def render_roles() -> Safe:
    """Every permission × every role (and a tenant's virtual key): the matrix tenancy enforces."""
    columns = [OPERATOR, *ROLES]
    head = h(
        "<tr><th>Permission</th><th>Allows</th>{}<th class=matrix>virtual key</th></tr>",
        join(h("<th class=matrix>{}</th>", c) for c in columns),
    )
    rows = join(
        h(
            '<tr data-permission="{}"><td><code>{}</code></td><td>{}</td>{}{}</tr>',
            p,
            p,
            what,
            join(_mark(p in MATRIX[c], c) for c in columns),
            _mark(p in KEY_PERMISSIONS, "key"),
        )
        for p, what in PERMISSIONS.items()
    )
    note = Safe(
        '<p class="muted">An operator acts on every tenant; the other roles on their own tenant only. A personal '
        "access token's scopes narrow its user's permissions, never widen them. Viewers see traces' prompts and "
        "responses only where their tenant allows it (viewer_content); auditors never do.</p>"
    )
    return h('<h1>Roles</h1>{}<table id="roles">{}{}</table>', note, head, rows)


def _mark(held: bool, role: str) -> Safe:
    return h('<td class="matrix" data-role="{}">{}</td>', role, "✓" if held else "")


def _ip(request: Request) -> str | None:
    return request.client.host if request.client else None


def _user_view(u: UserRow) -> dict[str, object]:
    return {
        "id": u.id,
        "tenant": u.tenant,
        "roles": list(u.roles),
        "team": u.team,
        "disabled": u.disabled_at is not None,
    }


def _error(title: str, message: str) -> Safe:
    path = "/ui/" + title.lower()
    return h('<h1>{}</h1><p class="error" id="error">{}</p><p><a href="{}">Back</a></p>', title, message, path)


def _back(path: str, tenant: str | None, done: str) -> Response:
    where = f"{path}?done={quote(done, safe='')}" + (f"&tenant={quote(tenant, safe='')}" if tenant else "")
    return RedirectResponse(where, 303)


def _tenant_filter(path: str, actor: Actor, tenant: str | None) -> Safe:
    if actor.tenant is not None:
        return h('<p class="muted">Tenant <b>{}</b></p>', actor.tenant)
    return h(
        '<form class="filters" method="get" action="{}"><label>tenant<input name="tenant" value="{}"></label>'
        '<button type="submit">Filter</button></form>',
        path,
        tenant or "",
    )


def _users_table(request: Request, users: list[UserRow], actor: Actor, can_manage: bool) -> Safe:
    head = Safe(
        "<tr><th>User</th><th>Tenant</th><th>Email</th><th>Name</th><th>Roles</th><th>Team</th><th>SSO</th>"
        "<th>Created (UTC)</th><th>Disabled</th><th></th></tr>"
    )
    rows = join(_user_row(request, u, actor, can_manage) for u in users)
    return h(
        '<table id="users">{}{}</table>', head, rows or Safe('<tr><td colspan="10" class="muted">No users</td></tr>')
    )


def _user_row(request: Request, u: UserRow, actor: Actor, can_manage: bool) -> Safe:
    actions = Safe("")
    if can_manage and u.tenant is not None and set(u.roles) <= set(grantable(actor)):
        target = quote(u.id, safe="")
        roles = join(
            h('<option value="{}"{}>{}</option>', r, Safe(" selected" if r in u.roles else ""), r)
            for r in grantable(actor)
        )
        flip = ("0", "Enable") if u.disabled_at else ("1", "Disable")
        actions = h(
            '<form method="post" action="/ui/users/{}/role" class="set-role">{}<select name="role">{}</select>'
            '<button type="submit">Set role</button></form>'
            '<form method="post" action="/ui/users/{}/disable" class="disable">{}<input type="hidden" name="disabled" '
            'value="{}"><button type="submit">{}</button></form>',
            target,
            csrf_field(request),
            roles,
            target,
            csrf_field(request),
            flip[0],
            flip[1],
        )
    return h(
        '<tr data-user="{}"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td data-col="roles">{}</td><td>{}</td>'
        '<td>{}</td><td>{}</td><td data-col="disabled">{}</td><td>{}</td></tr>',
        u.id,
        u.id,
        u.tenant or "(every tenant)",
        u.email or "–",
        u.name or "–",
        ", ".join(u.roles),
        u.team or "–",
        u.issuer or "–",
        when(u.created_at),
        when(u.disabled_at) if u.disabled_at else "–",
        actions,
    )


def _add_user_form(request: Request, actor: Actor, tenant: str | None, teams: list[TeamRow]) -> Safe:
    pick = (
        h('<label>tenant<input name="tenant" value="{}" required></label>', tenant or "")
        if actor.tenant is None
        else Safe("")
    )
    roles = join(h('<option value="{}">{}</option>', r, r) for r in grantable(actor) if r != OPERATOR)
    names = sorted({t.name for t in teams})
    team = join(h('<option value="{}">{}</option>', t, t) for t in ["", *names])
    return h(
        '<h2>Add a user</h2><form class="filters" method="post" action="/ui/users" id="add-user">{}{}'
        '<label>id (optional)<input name="id" maxlength="128"></label><label>email<input name="email"></label>'
        '<label>name<input name="name"></label><label>role<select name="role">{}</select></label>'
        '<label>team<select name="team">{}</select></label><button type="submit">Add</button></form>',
        csrf_field(request),
        pick,
        roles,
        team,
    )


def _teams_table(teams: list[TeamRow], users: list[UserRow]) -> Safe:
    members: dict[tuple[str | None, str | None], int] = {}
    for u in users:
        members[(u.tenant, u.team)] = members.get((u.tenant, u.team), 0) + 1
    head = Safe('<tr><th>Team</th><th>Tenant</th><th class="n">Members</th><th>Created (UTC)</th></tr>')
    rows = join(
        h(
            '<tr data-team="{}"><td>{}</td><td>{}</td><td class="n">{}</td><td>{}</td></tr>',
            t.name,
            t.name,
            t.tenant,
            members.get((t.tenant, t.name), 0),
            when(t.created_at),
        )
        for t in teams
    )
    return h(
        '<table id="teams">{}{}</table>', head, rows or Safe('<tr><td colspan="4" class="muted">No teams</td></tr>')
    )


def _add_team_form(request: Request, actor: Actor, tenant: str | None) -> Safe:
    pick = (
        h('<label>tenant<input name="tenant" value="{}" required></label>', tenant or "")
        if actor.tenant is None
        else Safe("")
    )
    return h(
        '<h2>Add a team</h2><form class="filters" method="post" action="/ui/teams" id="add-team">{}{}'
        '<label>name<input name="name" maxlength="128" required></label><button type="submit">Add</button></form>',
        csrf_field(request),
        pick,
    )
