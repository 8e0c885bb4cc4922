"""Users, teams and personal access tokens over HTTP (`/api/users`, `/api/teams`, `/api/tokens`), the same
`Directory` the CLI and the dashboard use.

A tenant's people manage their own tenant (`users.manage`); only an operator adds an operator (the admin
token exists to bootstrap the first one), and only an owner or an operator grants `owner`. `/api/tokens`
is the caller's own tokens; with `users.manage`, `?user=` names someone else of the tenant whose tokens
to list or revoke. Only an operator issues a token for someone else (it would act as them), which is how
the admin token bootstraps the first operator's. A token's secret is in the creation answer only.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from keel.api.bounds import Bounds
from keel.api.guard import Guard
from keel.api.openai import JSON_TYPE, read_json
from keel.errors import InvalidRequest, NotFound, PermissionDenied
from keel.runtime.components import Runtime
from keel.tenancy.actor import OPERATOR, Actor
from keel.tenancy.directory import Directory, token_view, user_view

MAX_TOKEN_LIFE_S = 5 * 365 * 86400.0


def _json(data: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status, None, JSON_TYPE)


def _opt_text(body: dict[str, Any], field: str) -> str | None:
    value = body.get(field)
    if value is not None and type(value) is not str:
        raise InvalidRequest(f"'{field}' must be a string.", field)
    return value


def _roles(body: dict[str, Any], required: bool) -> tuple[str, ...] | None:
    value = body.get("roles")
    if value is None and not required:
        return None
    if not isinstance(value, list) or not value or not all(type(r) is str for r in value):
        raise InvalidRequest("'roles' must be a non-empty array of roles.", "roles")
    return tuple(value)


def _grantable(actor: Actor, roles: tuple[str, ...] | None) -> None:
    if roles is not None and "owner" in roles and not (actor.operator or "owner" in actor.roles):
        raise PermissionDenied(f"{actor.id} cannot grant 'owner': only an owner or an operator can.")


class TenancyAdmin:
    def __init__(self, runtime: Runtime, guard: Guard) -> None:
        self._dir = runtime.get(Directory)
        self._guard = guard
        self._bounds = Bounds.of(runtime.config.server)

    def routes(self) -> list[Route]:
        g, manage, read, own = self._guard, "users.manage", "users.read", "tokens.own"
        return [
            g.route("/api/users", self.list_users, ["GET"], read),
            g.route("/api/users", self.add_user, ["POST"], manage),
            g.route("/api/users/{user_id}", self.show_user, ["GET"], read),
            g.route("/api/users/{user_id}", self.update_user, ["PATCH"], manage),
            g.route("/api/users/{user_id}", self.remove_user, ["DELETE"], manage),
            g.route("/api/teams", self.list_teams, ["GET"], read),
            g.route("/api/teams", self.add_team, ["POST"], manage),
            g.route("/api/teams/{name}", self.remove_team, ["DELETE"], manage),
            g.route("/api/tokens", self.list_tokens, ["GET"], own),
            g.route("/api/tokens", self.create_token, ["POST"], own),
            g.route("/api/tokens/{token_id}/revoke", self.revoke_token, ["POST"], own),
        ]

    async def _body(self, request: Request) -> dict[str, Any]:
        body = await read_json(request, self._bounds)
        if not isinstance(body, dict):
            raise InvalidRequest("The request body must be a JSON object.", None)
        return body

    # ---- users -----------------------------------------------------------------------------------

    async def list_users(self, request: Request, actor: Actor) -> Response:
        rows = await self._dir.list_users(actor.scope(request.query_params.get("tenant")))
        return _json({"data": [user_view(u) for u in rows]})

    async def add_user(self, request: Request, actor: Actor) -> Response:
        """{id?, tenant?, roles: [...], email?, name?, team?, issuer?, subject?} or {id?, operator: true, email?,
        name?, issuer?, subject?}; issuer and subject (together) link the user to an SSO identity beforehand, for
        a provider without `jit`."""
        body = await self._body(request)
        operator = body.get("operator", False)
        if type(operator) is not bool:
            raise InvalidRequest("'operator' must be true or false.", "operator")
        ids = {f: _opt_text(body, f) for f in ("id", "email", "name", "team", "issuer", "subject")}
        roles: tuple[str, ...]
        if operator:
            if not actor.operator:
                raise PermissionDenied(f"{actor.id} cannot add an operator: only an operator can.")
            tenant, roles = None, (OPERATOR,)
        else:
            tenant, roles = actor.tenant_for(body.get("tenant"), "users"), _roles(body, True) or ()
            _grantable(actor, roles)
        row = await self._dir.add_user(tenant, roles, user_id=ids["id"], email=ids["email"], name=ids["name"],
                                       team=ids["team"], issuer=ids["issuer"], subject=ids["subject"])  # fmt: skip
        return _json(user_view(row), 201)

    async def show_user(self, request: Request, actor: Actor) -> Response:
        return _json(user_view(await self._dir.user(request.path_params["user_id"], actor.tenant)))

    async def update_user(self, request: Request, actor: Actor) -> Response:
        """{roles?, team? (null: none), email?, name?, disabled?}"""
        body = await self._body(request)
        roles = _roles(body, False)
        _grantable(actor, roles)
        disabled = body.get("disabled")
        if disabled is not None and type(disabled) is not bool:
            raise InvalidRequest("'disabled' must be true or false.", "disabled")
        user_id = request.path_params["user_id"]
        before = await self._dir.user(user_id, actor.tenant)
        if "owner" in before.roles:
            _grantable(actor, ("owner",))  # changing an owner is an owner's call
        row = await self._dir.update_user(
            user_id, tenant=actor.tenant, roles=roles, team=_opt_text(body, "team"),
            clear_team="team" in body and body["team"] is None, email=_opt_text(body, "email"),
            name=_opt_text(body, "name"), disabled=disabled,
        )  # fmt: skip
        return _json(user_view(row))

    async def remove_user(self, request: Request, actor: Actor) -> Response:
        user_id = request.path_params["user_id"]
        if "owner" in (await self._dir.user(user_id, actor.tenant)).roles:
            _grantable(actor, ("owner",))
        row = await self._dir.remove_user(user_id, actor.tenant)
        return _json({**user_view(row), "deleted": True})

    # ---- teams -----------------------------------------------------------------------------------

    async def list_teams(self, request: Request, actor: Actor) -> Response:
        rows = await self._dir.list_teams(actor.scope(request.query_params.get("tenant")))
        return _json({"data": [asdict(t) for t in rows]})

    async def add_team(self, request: Request, actor: Actor) -> Response:
        body = await self._body(request)
        name = body.get("name")
        if type(name) is not str:
            raise InvalidRequest("'name' must be the team's name.", "name")
        row = await self._dir.add_team(actor.tenant_for(body.get("tenant"), "teams"), name)
        return _json(asdict(row), 201)

    async def remove_team(self, request: Request, actor: Actor) -> Response:
        tenant, name = actor.tenant_for(request.query_params.get("tenant"), "teams"), request.path_params["name"]
        await self._dir.remove_team(tenant, name)
        return _json({"tenant": tenant, "name": name, "deleted": True})

    # ---- tokens ----------------------------------------------------------------------------------

    async def _whose(self, actor: Actor, named: Any) -> str:
        """The user whose tokens a call reads or makes: the caller, or (users.manage) the one named."""
        if named is not None:
            if type(named) is not str or "\x00" in named or len(named) > 256:
                raise InvalidRequest("'user' must be a user id.", "user")
            if not named or named != actor.id.removeprefix("user:"):
                if not actor.can("users.manage"):
                    raise PermissionDenied(f"{actor.id} manages only its own tokens.")
                await self._dir.user(named, actor.tenant)
            return named
        if not actor.id.startswith("user:"):
            raise InvalidRequest("This credential is not a user's: name the 'user' whose tokens these are.", "user")
        return actor.id.removeprefix("user:")

    async def list_tokens(self, request: Request, actor: Actor) -> Response:
        user = await self._whose(actor, request.query_params.get("user"))
        rows = await self._dir.list_tokens(user_id=user)
        return _json({"data": [token_view(t) for t in rows]})

    async def create_token(self, request: Request, actor: Actor) -> Response:
        """{name?, scopes?: [permission, ...], expires_in?: seconds, user?}: the token is in this answer only."""
        body = await self._body(request)
        user = await self._whose(actor, body.get("user"))
        if actor.id != f"user:{user}" and not actor.operator:  # a token for someone else acts as them
            raise PermissionDenied(f"{actor.id} creates tokens for itself only; an operator issues others' tokens.")
        scopes = body.get("scopes")
        if scopes is not None and not (isinstance(scopes, list) and all(type(s) is str for s in scopes)):
            raise InvalidRequest("'scopes' must be an array of permission names.", "scopes")
        if actor.scopes is not None:  # a scoped token makes tokens within its own scopes only
            scopes = [s for s in (scopes if scopes is not None else actor.scopes) if s in actor.scopes]
        life = body.get("expires_in")
        if life is not None and (type(life) not in (int, float) or not 0 < life <= MAX_TOKEN_LIFE_S):
            raise InvalidRequest(
                f"'expires_in' must be seconds, above 0, at most {MAX_TOKEN_LIFE_S:.0f}.", "expires_in"
            )
        issued = await self._dir.issue_token(
            user, scopes=None if scopes is None else tuple(scopes), name=_opt_text(body, "name"),
            expires_at=None if life is None else time.time() + float(life),
        )  # fmt: skip
        return _json({"token": issued.token, **token_view(issued.row)}, 201)

    async def revoke_token(self, request: Request, actor: Actor) -> Response:
        token_id = request.path_params["token_id"]
        row = await self._dir.token(token_id)
        mine = actor.id == f"user:{row.user_id}"
        if not mine and not (actor.can("users.manage") and actor.tenant in (None, row.tenant)):
            raise NotFound(f"No token '{token_id}'.")
        return _json(token_view(await self._dir.revoke_token(token_id)))
