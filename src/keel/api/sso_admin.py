"""`GET /api/whoami`: who the admin API takes the caller for (the admin token's operator, or the user a
JWT bearer names, with the roles its groups map to). The JWT resolver here is the one the admin guard
plugs in for every admin route: the token checked against its issuer's JWKS, never echoed back."""

from __future__ import annotations

import hmac
from typing import TYPE_CHECKING

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from keel.api.openai import JSON_TYPE, bearer, error_response
from keel.errors import AuthError, KeelError
from keel.runtime.components import Runtime
from keel.tenancy.actor import OPERATOR, Actor, Identity
from keel.tenancy.sso import SignOn, actor_of, looks_like_jwt

if TYPE_CHECKING:
    from keel.tenancy.jwt import Bearers


class JwtResolver:
    """A JWT bearer → the Identity its issuer vouches for; None for a bearer that is no JWT (someone else's)."""

    def __init__(self, bearers: Bearers | None) -> None:
        self._bearers = bearers

    async def identity(self, request: Request) -> Identity | None:
        token = bearer(request)
        if self._bearers is None or not token or not looks_like_jwt(token):
            return None
        return await self._bearers.identity(token)


class SsoAdmin:
    def __init__(self, runtime: Runtime) -> None:
        sign_on = runtime.find(SignOn)
        self.jwt = JwtResolver(sign_on.bearers if sign_on else None)
        self._token = (runtime.config.admin_token or "").encode()

    def routes(self) -> list[Route]:
        return [Route("/api/whoami", self.whoami, methods=["GET"])]

    async def whoami(self, request: Request) -> Response:
        ip = request.client.host if request.client else None
        try:
            identity = await self.jwt.identity(request)
            if identity is not None:
                actor = actor_of(identity, ip)
            elif self._token and hmac.compare_digest((bearer(request) or "").encode(), self._token):
                actor = Actor("operator", "admin", None, frozenset({OPERATOR}), ip=ip)
            else:
                raise AuthError("Invalid admin token or JWT bearer.")
        except KeelError as err:
            return error_response(err)
        body = {"kind": actor.kind, "id": actor.id, "tenant": actor.tenant, "roles": sorted(actor.roles)}
        if identity is not None:
            body |= {"email": identity.email, "name": identity.name, "groups": list(identity.groups)}
        return Response(orjson.dumps(body), 200, None, JSON_TYPE)
