"""JWT bearers on the admin API, and `GET /api/whoami`.

`SsoAdmin` plugs a resolver into the one admin guard (keel.api.guard): a bearer shaped like a JWT is
checked against its issuer's JWKS (keel.tenancy.jwt) and becomes the directory user it names, who then
holds exactly the permissions of the roles the provider's group mapping gives them. A refused token is
a 401 naming the failed check, never echoing the token. `GET /api/whoami` says who the guard took the
caller for, whatever the credential (admin token, personal access token, JWT, virtual key).
"""

from __future__ import annotations

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from keel.api.guard import Guard, client_ip
from keel.api.openai import JSON_TYPE
from keel.runtime.components import Runtime
from keel.tenancy.actor import ROLES, Actor
from keel.tenancy.sso import SignOn, looks_like_jwt


class SsoAdmin:
    def __init__(self, runtime: Runtime, guard: Guard) -> None:
        self._sign_on = runtime.find(SignOn)
        self._guard = guard
        if self._sign_on is not None:
            guard.resolvers.append(self.resolve)

    async def resolve(self, request: Request, given: str | None) -> Actor | None:
        """The user a JWT bearer names; None for any other credential (the guard tries the next)."""
        if self._sign_on is None or not given or not looks_like_jwt(given):
            return None
        return await self._sign_on.bearer(given, client_ip(request))

    def routes(self) -> list[Route]:
        return [self._guard.route("/api/whoami", self.whoami, ["GET"], "tenants.read")]

    async def whoami(self, request: Request, actor: Actor) -> Response:
        roles = sorted(actor.roles, key=lambda r: ROLES.index(r) if r in ROLES else -1)  # operator, then strongest
        body = {"kind": actor.kind, "id": actor.id, "tenant": actor.tenant, "roles": roles, "team": actor.team}
        if actor.scopes is not None:
            body["scopes"] = sorted(actor.scopes)
        return Response(orjson.dumps(body), 200, None, JSON_TYPE)
