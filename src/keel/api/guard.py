"""The one guard in front of every admin route: who is asking, may they, on which tenant; and the
control-plane audit entry of every change.

`Guard.route(path, handler, methods, permission)` makes a Starlette route whose handler receives the
resolved `Actor`. Resolution, first match wins: the admin token (the operator), a personal access token
(`keel_pat_…`, a user of the directory), then each pluggable resolver in `resolvers` (SSO adds a JWT
bearer and a dashboard session), then a virtual key (`sk-keel-…`, acting on its own tenant). Then the
actor must hold the route's permission (keel.tenancy.roles: 403 naming it), and a non-operator may name
no tenant but its own in the path or query (handlers check a body's `tenant` with `Actor.tenant_for`).
Path and query parameters with NUL are refused (PostgreSQL cannot store them), and every KeelError
becomes an OpenAI-format error response.

Every POST, PUT, PATCH and DELETE is an audit entry (keel.audit.log): actor, "<permission> <METHOD>
<route>", the path parameters, the redacted JSON body, status and outcome, source IP; refusals too.
Routes that write their own richer entries (`audit=False`) are left to them.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from keel.api.bounds import Bounds, read_body
from keel.api.openai import bearer, error_response
from keel.audit.log import AuditLog
from keel.errors import AuthError, InvalidRequest, KeelError, PermissionDenied
from keel.keys.auth import KEY_PREFIX
from keel.runtime.components import Runtime
from keel.tenancy.actor import OPERATOR, Actor
from keel.tenancy.directory import PAT_PREFIX, Directory
from keel.tenancy.roles import PERMISSIONS

Handler = Callable[[Request, Actor], Awaitable[Response]]
Resolver = Callable[[Request, str | None], Awaitable[Actor | None]]  # None: not its kind of credential
Translate = Callable[[Exception], KeelError | None]  # a module's own exceptions -> KeelError (None: not its)
Check = Callable[[Request], None]
log = logging.getLogger("keel.api.guard")
MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
AUDIT_BODY_BYTES = 64 * 1024  # bodies past this are summarised by size in the audit entry
TENANT_PARAMS = ("tenant",)


@dataclass(frozen=True, slots=True)
class Rule:
    """One guarded route, as the permission matrix test enumerates them."""

    path: str
    method: str
    permission: str
    audit: bool
    tenant_param: str | None


def client_ip(request: Request) -> str | None:
    return request.client.host if request.client else None


def operator_actor(ip: str | None = None) -> Actor:
    return Actor(kind="operator", id="admin", tenant=None, roles=frozenset({OPERATOR}), ip=ip)


class Guard:
    def __init__(self, runtime: Runtime) -> None:
        self._rt = runtime
        self._token = (runtime.config.admin_token or "").encode()
        self.directory = runtime.get(Directory)
        self.resolvers: list[Resolver] = []
        self.rules: list[Rule] = []
        self._audit = runtime.find(AuditLog)
        self._bounds = Bounds.of(runtime.config.server)

    def route(
        self,
        path: str,
        handler: Handler,
        methods: Sequence[str],
        permission: str,
        *,
        audit: bool = True,
        translate: Translate | None = None,
        check: Check | None = None,
        tenant_param: str | None = None,
    ) -> Route:
        """A route to `handler` for whoever holds `permission`. `tenant_param`: the path parameter that
        names a tenant (a non-operator may name only its own); `check`: the module's own parameter
        checks, before the handler; `audit=False` for routes that write their own entries."""
        if permission not in PERMISSIONS:
            raise KeyError(f"unknown permission {permission!r} for {path}")
        for method in methods:
            self.rules.append(Rule(path, method, permission, audit, tenant_param))
        logged = audit and self._audit is not None and any(m in MUTATING for m in methods)

        async def endpoint(request: Request) -> Response:
            actor: Actor | None = None
            try:
                actor = await self.actor(request)
                self._allow(request, actor, permission, tenant_param)
                if check is not None:
                    check(request)
                response = await handler(request, actor)
            except Exception as exc:
                err = exc if isinstance(exc, KeelError) else (translate(exc) if translate else None)
                if err is None:
                    raise
                response = error_response(err)
            if logged and request.method in MUTATING and actor is not None:
                try:
                    await self._record(request, actor, permission, response.status_code)
                except Exception:  # the change is made: answer it, and say loudly that its entry is missing
                    log.exception("audit entry for %s %s not written", request.method, request.url.path)
            return response

        return Route(path, endpoint, methods=list(methods))

    async def actor(self, request: Request) -> Actor:
        """Who is asking: AuthError (401) when no credential resolves."""
        given, ip = bearer(request), client_ip(request)
        if given and self._token and hmac.compare_digest(given.encode(), self._token):
            return operator_actor(ip)
        if given and given.startswith(PAT_PREFIX):
            return await self.directory.resolve(given, ip)
        for resolve in self.resolvers:
            found = await resolve(request, given)
            if found is not None:
                return found
        if given and given.startswith(KEY_PREFIX):
            principal, allowed = await self._rt.authenticator.resolve(given)
            return Actor(kind="key", id=f"key:{principal.key_id}", tenant=principal.tenant, roles=frozenset(),
                         ip=ip, principal=principal, models=allowed)  # fmt: skip
        if not given:
            raise AuthError("Send a bearer token: the admin token, a personal access token or a virtual key.")
        raise AuthError("Invalid admin token.")

    def _allow(self, request: Request, actor: Actor, permission: str, tenant_param: str | None) -> None:
        for name, value in (*request.path_params.items(), *request.query_params.multi_items()):
            if "\x00" in name or "\x00" in value:
                param = name.replace("\x00", "")
                raise InvalidRequest(f"Parameter '{param}' must not contain NUL.", param)
        if not actor.can(permission):
            held = "a virtual key" if actor.kind == "key" else "roles: " + (", ".join(sorted(actor.roles)) or "none")
            scoped = " (its token's scopes)" if actor.scopes is not None else ""
            err = PermissionDenied(f"{actor.id} ({held}{scoped}) lacks the permission '{permission}'.")
            err.param = permission
            raise err
        if actor.tenant is None:
            return
        named = [request.query_params.get(p) for p in TENANT_PARAMS]
        if tenant_param is not None:
            named.append(request.path_params.get(tenant_param))
        for asked in named:
            if asked is not None and asked != actor.tenant:
                raise PermissionDenied(f"{actor.id} acts only on its own tenant ('{actor.tenant}'), not '{asked}'.")

    async def _record(self, request: Request, actor: Actor, permission: str, status: int) -> None:
        assert self._audit is not None
        route = request.scope.get("route")
        template = route.path if isinstance(route, Route) else request.url.path
        params = dict(request.path_params)
        target = orjson.dumps(params, option=orjson.OPT_SORT_KEYS).decode() if params else None
        outcome = "ok" if status < 400 else "refused" if status in (401, 403) else "failed"
        body = await self._body(request)
        tenant = actor.tenant or _named_tenant(request, body, self._tenant_param(template, request.method))
        await self._audit.record(
            actor.id, f"{permission} {request.method} {template}", target, tenant=tenant, source_ip=actor.ip,
            arguments=body, result={"status": status, "outcome": outcome},
        )  # fmt: skip

    def _tenant_param(self, path: str, method: str) -> str | None:
        return next((r.tenant_param for r in self.rules if r.path == path and r.method == method), None)

    async def _body(self, request: Request) -> Any:
        """The request's JSON body for the audit entry (redacted there), or a note of its size."""
        if "json" not in request.headers.get("content-type", "json"):
            return {"content_type": request.headers.get("content-type"), "bytes": request.headers.get("content-length")}
        try:
            raw = await read_body(request, AUDIT_BODY_BYTES)
        except KeelError:
            return {"bytes": request.headers.get("content-length")}
        if not raw:
            return None
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            return {"bytes": len(raw), "json": False}


def _named_tenant(request: Request, body: Any, tenant_param: str | None) -> str | None:
    """The tenant an operator's call named: path, query or body."""
    if tenant_param is not None and isinstance(request.path_params.get(tenant_param), str):
        return str(request.path_params[tenant_param])
    found = request.query_params.get("tenant")
    if found is None and isinstance(body, dict) and isinstance(body.get("tenant"), str):
        found = body["tenant"]
    return found if found and "\x00" not in found and len(found) <= 256 else None
