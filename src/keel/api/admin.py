"""Admin HTTP API under /api, guarded by the admin token. Same capability functions as the CLI."""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from keel.alerts.slo import slos_of, statuses
from keel.alerts.slo import view as slo_view
from keel.api import jobs_admin
from keel.api.bounds import Bounds, read_body
from keel.api.guard import Guard, Handler
from keel.api.openai import JSON_TYPE, read_json
from keel.api.replay import ReplayAsk, replay
from keel.errors import ErrorKind, InvalidRequest, NotFound, PermissionDenied, ProviderError
from keel.gateway.warmth import WarmthBook
from keel.keys.auth import issue_key, key_view
from keel.limits.book import KINDS, Estimate, Subject, kind_of
from keel.rag.ingest import Ingestor
from keel.runtime.components import Runtime
from keel.store.protocols import Charge, LimitStoreUnavailable, UnknownSubject
from keel.tenancy.actor import Actor
from keel.tenancy.deletion import Stores, purge
from keel.tenancy.roles import key_owner_refusal, sees_content, team_bound
from keel.traces.retention import RetentionPolicy, sweep
from keel.traces.rollups import usage_query, usage_view
from keel.traces.writer import read_spans, read_trace, trace_query, trace_view

_USAGE_PARAMS = ("tenant", "key", "user", "feature", "alias", "team")
MAX_NAME = 256  # characters of a tenant, key or user name: what every store can index
PRIORITY = (-(2**31), 2**31 - 1)  # a key's priority fits every store's integer column


def _text(body: dict[str, Any], field: str) -> str | None:
    """An optional name-like body field: absent, or a string every store can hold."""
    return None if body.get(field) is None else _name(body, field)


def _name(body: dict[str, Any], field: str) -> str:
    """A required name-like body field: 1 to MAX_NAME characters, no NUL (PostgreSQL refuses it)."""
    value = body.get(field)
    if type(value) is not str or not _storable_name(value):
        raise InvalidRequest(
            f"'{field}' must be a string of 1 to {MAX_NAME} characters, not blank, without NUL.", field
        )
    return value


def _storable_name(value: Any) -> bool:
    return type(value) is str and bool(value.strip()) and len(value) <= MAX_NAME and "\x00" not in value


def _priority(body: dict[str, Any], field: str) -> int | None:
    value = body.get(field)
    if value is not None and (type(value) is not int or not PRIORITY[0] <= value <= PRIORITY[1]):
        raise InvalidRequest(f"'{field}' must be an integer from {PRIORITY[0]} to {PRIORITY[1]}.", field)
    return value


def _stored(request: Request) -> None:
    """Path and query parameters reach store queries: refuse NUL, which PostgreSQL cannot take."""
    for name, value in (*request.path_params.items(), *request.query_params.multi_items()):
        if "\x00" in name or "\x00" in value:
            param = name.replace("\x00", "")
            raise InvalidRequest(f"Parameter '{param}' must not contain NUL.", param)


def _scoped(request: Request, actor: Actor) -> dict[str, str]:
    """The query's parameters, with `tenant` forced to the actor's own (an operator's as given)."""
    params = dict(request.query_params)
    if actor.tenant is not None:
        params["tenant"] = actor.tenant
    return params


def _json(data: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(data, default=str), status, None, JSON_TYPE)


def _regions(value: Any) -> tuple[str, ...] | None:
    """A tenant's regions from a request body: a non-empty array of region names, or null for any."""
    if value is None:
        return None
    if not (isinstance(value, list) and value and all(_storable_name(r) for r in value)):
        raise InvalidRequest(
            "'regions' must be a non-empty array of region names, or null to allow any region.", "regions"
        )
    return tuple(value)


def _purge_body(body: Any) -> tuple[str | None, bool, bool]:
    """(user, revoke_keys, delete_tenant) from `{"user": ..., "revoke_keys": ..., "delete_tenant": ...}`."""
    if not isinstance(body, dict):
        raise InvalidRequest('The body must be an object: {"user": "u1"}, or {} for the whole tenant.', None)
    for name in body:
        if name not in ("user", "revoke_keys", "delete_tenant"):
            raise InvalidRequest(f"Unknown field '{name}'; use 'user', 'revoke_keys' and 'delete_tenant'.", name)
    user = _text(body, "user")  # absent: the whole tenant
    flags = []
    for name in ("revoke_keys", "delete_tenant"):
        if not isinstance(body.get(name, False), bool):
            raise InvalidRequest(f"'{name}' must be true or false.", name)
        flags.append(bool(body.get(name, False)))
    return user, flags[0], flags[1]


def _limit_path(request: Request) -> tuple[str, str]:
    scope, subject = request.path_params["scope"], request.path_params["subject"]
    if scope not in ("tenant", "key", "team"):
        raise NotFound(f"No limit scope '{scope}': overrides are set per tenant, key id or team (tenant:team).")
    return scope, subject


def _limits_body(body: Any, scope: str) -> tuple[dict[str, float], str | None]:
    """`{"limits": {kind: limit}, "on_store_error": "open" | "closed" | null}`, checked field by field."""
    if not isinstance(body, dict):
        raise InvalidRequest('The body must be an object: {"limits": {"rpm": 60}, "on_store_error": null}.', None)
    for field in body:
        if field not in ("limits", "on_store_error"):
            raise InvalidRequest(f"Unknown field '{field}'; use 'limits' and 'on_store_error'.", field)
    limits = body.get("limits", {})
    if not isinstance(limits, dict):
        raise InvalidRequest("'limits' must be an object of kind → limit, e.g. {\"rpm\": 60}.", "limits")
    for kind in limits:
        if kind not in KINDS:
            raise InvalidRequest(f"Unknown limit kind '{kind}'; use: {', '.join(KINDS)}.", f"limits.{kind}")
    on_store_error = body.get("on_store_error")
    if on_store_error not in (None, "open", "closed"):
        raise InvalidRequest("'on_store_error' must be open, closed or null.", "on_store_error")
    if on_store_error is not None and scope != "tenant":
        raise InvalidRequest("'on_store_error' is chosen per tenant: set it on the key's tenant.", "on_store_error")
    return limits, on_store_error


def _usage_view(charge: Charge, used: float) -> dict[str, Any]:
    share = used / charge.limit if charge.limit else None
    view = {"counter": charge.counter, "kind": kind_of(charge), "window": charge.window, "limit": charge.limit}
    return {**view, "used": used, "share": share}


class Admin:
    def __init__(self, runtime: Runtime, guard: Guard) -> None:
        self._rt = runtime
        self._guard = guard
        self._bounds = Bounds.of(runtime.config.server)

    async def _json_or(self, request: Request, empty: Any) -> Any:
        """The JSON body, or `empty` when the request has none."""
        if not await read_body(request, self._bounds.max_body_bytes):
            return empty
        return await read_json(request, self._bounds)

    def routes(self) -> list[Route]:
        g = self._guard
        return [
            g.route("/api/tenants", self.list_tenants, ["GET"], "tenants.read"),
            g.route("/api/tenants", self.create_tenant, ["POST"], "tenants.manage"),
            g.route("/api/tenants/{name}", self.update_tenant, ["PATCH"], "tenants.write", tenant_param="name"),
            # a purge writes its own entry (tenant.purge, user.purge): the generic one would name the subject again
            g.route(
                "/api/tenants/{name}/purge", self.purge_tenant, ["POST"], "data.purge", tenant_param="name", audit=False
            ),
            g.route(
                "/api/tenants/{name}/users/{user}",
                self.purge_user,
                ["DELETE"],
                "data.purge",
                tenant_param="name",
                audit=False,
            ),
            g.route("/api/retention/sweep", self.sweep, ["POST"], "retention.run"),
            g.route("/api/keys", self.list_keys, ["GET"], "keys.read"),
            g.route("/api/keys", self.create_key, ["POST"], "keys.write"),
            g.route("/api/keys/{key_id}/revoke", self.revoke_key, ["POST"], "keys.write"),
            g.route("/api/traces", self.list_traces, ["GET"], "traces.read"),
            g.route("/api/traces/{trace_id}", self.get_trace, ["GET"], "traces.read"),
            g.route("/api/traces/{trace_id}/replay", self.replay_trace, ["POST"], "traces.replay"),
            g.route("/api/usage", self.usage, ["GET"], "usage.read"),
            g.route("/api/slo", self.slo, ["GET"], "platform.read"),
            g.route("/api/targets", self.list_targets, ["GET"], "platform.read"),
            g.route("/api/limits", self.list_limits, ["GET"], "limits.read"),
            g.route("/api/limits/usage", self.limits_usage, ["GET"], "limits.read"),
            g.route("/api/limits/{scope}/{subject}", self.set_limits, ["PUT"], "limits.write"),
            g.route("/api/limits/{scope}/{subject}", self.clear_limits, ["DELETE"], "limits.write"),
            *(g.route(path, self._on_runtime(fn), [m], perm) for path, fn, m, perm in jobs_admin.ROUTES),
        ]

    def _on_runtime(self, endpoint: jobs_admin.Endpoint) -> Handler:
        async def handler(request: Request, actor: Actor) -> Response:
            return await endpoint(self._rt, request, actor)

        return handler

    async def list_tenants(self, request: Request, actor: Actor) -> Response:
        rows = await asyncio.to_thread(self._rt.store.list_tenants)
        return _json({"data": [asdict(t) for t in rows if actor.tenant in (None, t.name)]})

    async def create_tenant(self, request: Request, actor: Actor) -> Response:
        body = await read_json(request, self._bounds)
        if not isinstance(body, dict):
            raise InvalidRequest('The body must be an object: {"name": "acme", "regions": null}.', None)
        name = _name(body, "name")
        regions = _regions(body.get("regions"))
        try:
            row = await asyncio.to_thread(self._rt.store.create_tenant, name, regions)
        except ValueError as exc:
            raise InvalidRequest(str(exc), "name") from None
        return _json(asdict(row), 201)

    async def update_tenant(self, request: Request, actor: Actor) -> Response:
        """Body {"regions"?: [...] | null, "viewer_content"?: bool}: at least one of them."""
        body = await read_json(request, self._bounds)
        if not isinstance(body, dict) or not ({"regions", "viewer_content"} & set(body)):
            raise InvalidRequest(
                "Send 'regions' (an array of regions, or null for any region) or 'viewer_content' (true or false).",
                "regions",
            )
        viewer_content = body.get("viewer_content")
        if "viewer_content" in body and type(viewer_content) is not bool:
            raise InvalidRequest("'viewer_content' must be true or false.", "viewer_content")
        name, store = request.path_params["name"], self._rt.store
        regions = _regions(body["regions"]) if "regions" in body else None
        row = await asyncio.to_thread(store.get_tenant, name)
        if row is not None and "regions" in body:
            row = await asyncio.to_thread(store.set_tenant_regions, name, regions)
        if row is not None and type(viewer_content) is bool:
            row = await asyncio.to_thread(store.set_tenant_viewer_content, name, viewer_content)
        if row is None:
            raise NotFound(f"No tenant '{name}'.")
        return _json(asdict(row))

    async def purge_tenant(self, request: Request, actor: Actor) -> Response:
        """Delete a tenant from every store (its keys and row too), or one user's data: {"user": "u1"}.
        Answers the receipt (keel.tenancy.deletion). `revoke_keys` and `delete_tenant` are accepted for
        old callers: both always happen now."""
        user, _, delete = _purge_body(await self._json_or(request, {}))
        if delete and user is not None:
            raise InvalidRequest("delete_tenant removes a whole tenant: leave out the user", "user")
        return await self._purge(request.path_params["name"], user, actor)

    async def purge_user(self, request: Request, actor: Actor) -> Response:
        """DELETE /api/tenants/{name}/users/{user}: one user's data within the tenant; answers the receipt."""
        return await self._purge(request.path_params["name"], request.path_params["user"], actor)

    async def _purge(self, tenant: str, user: str | None, actor: Actor) -> Response:
        rt = self._rt
        cache, vectors = None, None
        if rt.cache_stage is not None:
            await rt.cache_stage.drain()  # answers being written now would outlive the purge
            cache, vectors = rt.cache_stage.stores
        stores = Stores(
            rt.store,
            rt.blobs,
            cache,
            vectors,
            rt.find(Ingestor),
            rt.config.retention.batch_size,
            revocation_wait_s=2 * rt.config.server.revocation_poll_s,
        )
        receipt = await purge(stores, tenant, user, actor=actor.id)
        return _json(receipt.json())

    async def sweep(self, request: Request, actor: Actor) -> Response:
        """One retention pass now: old traces by the configured policy, then orphan blobs."""
        policy = RetentionPolicy.from_config(self._rt.config.retention)
        report = await asyncio.to_thread(sweep, self._rt.store, self._rt.blobs, policy, time.time())
        return _json(asdict(report))

    async def list_keys(self, request: Request, actor: Actor) -> Response:
        rows = await asyncio.to_thread(self._rt.store.list_keys, actor.scope(request.query_params.get("tenant")))
        if team_bound(actor):
            rows = [k for k in rows if k.team is not None and k.team == actor.team]
        return _json({"data": [key_view(k) for k in rows]})

    async def create_key(self, request: Request, actor: Actor) -> Response:
        body = await read_json(request, self._bounds)
        if not isinstance(body, dict):
            raise InvalidRequest('The body must be an object: {"tenant": "acme", "name": "ci"}.', None)
        tenant = actor.tenant_for(body.get("tenant"), "keys") if actor.tenant else _name(body, "tenant")
        team = _text(body, "team")
        if team_bound(actor) and team != actor.team:
            raise PermissionDenied(f"{actor.id} creates keys of its own team only: 'team': {actor.team!r}.")
        if team is not None and team not in {
            t.name for t in await asyncio.to_thread(self._rt.store.list_teams, tenant)
        }:
            raise NotFound(f"No team '{team}' in tenant '{tenant}': add it first (keel teams add).")
        user = _text(body, "user")
        refused = await asyncio.to_thread(key_owner_refusal, self._rt.store, actor, tenant, user)
        if refused is not None:
            err = PermissionDenied(refused)
            err.param = "user"
            raise err
        models = body.get("models")
        if models is not None and not (isinstance(models, list) and all(_storable_name(m) for m in models)):
            raise InvalidRequest("'models' must be an array of aliases.", "models")
        try:
            issued = await asyncio.to_thread(
                issue_key,
                self._rt.store,
                tenant,
                name=_text(body, "name"),
                user=user,
                models=tuple(models) if models is not None else None,
                priority=_priority(body, "priority") or 0,
                max_priority=_priority(body, "max_priority"),
                team=team,
            )
        except ValueError as exc:
            param = "max_priority" if "priority" in str(exc) else "tenant"
            raise InvalidRequest(str(exc), param) from None
        return _json({"key": issued.key, **key_view(issued.row)}, 201)

    async def revoke_key(self, request: Request, actor: Actor) -> Response:
        await self._own_key(actor, request.path_params["key_id"])
        row = await asyncio.to_thread(self._rt.store.revoke_key, request.path_params["key_id"], time.time())
        if row is None:
            raise NotFound(f"No key with id '{request.path_params['key_id']}'.")
        return _json(key_view(row))

    async def list_traces(self, request: Request, actor: Actor) -> Response:
        query = trace_query(_scoped(request, actor), time.time())
        rows = await asyncio.to_thread(self._rt.store.list_traces, query)
        return _json({"data": [trace_view(r, full=False) for r in rows], "since": query.since, "until": query.until})

    async def get_trace(self, request: Request, actor: Actor) -> Response:
        row = await asyncio.to_thread(read_trace, self._rt.store, self._rt.blobs, request.path_params["trace_id"])
        if row is None or actor.tenant not in (None, row.tenant):
            raise NotFound(f"No trace with id '{request.path_params['trace_id']}'.")
        spans = await asyncio.to_thread(read_spans, self._rt.store, row.id)
        return _json(trace_view(row, full=await self._sees_content(actor, row.tenant), spans=spans))

    async def _sees_content(self, actor: Actor, tenant: str | None) -> bool:
        if actor.can("traces.content"):
            return True
        found = await asyncio.to_thread(self._rt.store.get_tenant, tenant) if tenant else None
        return sees_content(actor, found is not None and found.viewer_content)

    async def _own_key(self, actor: Actor, key_id: str) -> None:
        """NotFound unless the key is in the actor's tenant (and, for a developer, their team's)."""
        if actor.tenant is None:
            return
        keys = {k.id: k for k in await asyncio.to_thread(self._rt.store.list_keys, actor.tenant)}
        if key_id not in keys or (team_bound(actor) and (keys[key_id].team is None or keys[key_id].team != actor.team)):
            raise NotFound(f"No key with id '{key_id}'.")

    async def replay_trace(self, request: Request, actor: Actor) -> Response:
        """Re-send a recorded call as its tenant: body {"alias": ..., "model": "provider/model"}, both optional."""
        ask = ReplayAsk.from_body(await self._json_or(request, None))
        if actor.tenant is not None:
            row = await asyncio.to_thread(read_trace, self._rt.store, None, request.path_params["trace_id"])
            if row is None or row.tenant != actor.tenant:
                raise NotFound(f"No trace with id '{request.path_params['trace_id']}'.")
        return _json(await replay(self._rt, request.path_params["trace_id"], ask))

    async def usage(self, request: Request, actor: Actor) -> Response:
        """Usage and cost from rollups: ?by=feature&since=7d[&until=&grain=hour&tenant=&limit=]."""
        query = usage_query(_scoped(request, actor), time.time())
        rows = await asyncio.to_thread(self._rt.store.usage, query)
        data = [usage_view(r, query.by) for r in rows]
        return _json({"data": data, "by": query.by, "grain": query.grain, "since": query.since, "until": query.until})

    async def slo(self, request: Request, actor: Actor) -> Response:
        """Each alias's SLO: objectives over its window, error budget left, burn rates (5m, 30m, 1h, 6h)."""
        found = await asyncio.to_thread(statuses, slos_of(self._rt.config.models), self._rt.store, time.time())
        return _json({"data": [slo_view(st) for st in found]})

    async def list_targets(self, request: Request, actor: Actor) -> Response:
        """Every configured target with its breaker state, this process's health figures, and its server's
        readiness (`state`: ready, warming, down; None when the provider declares no readiness)."""
        rt = self._rt
        warmth = rt.find(WarmthBook)
        breakers = {b.target: b for b in await rt.breakers.states()}
        gates = {g["target"]: g for g in rt.gates.view()}
        rows = []
        seen: set[str] = set()
        for alias, a in rt.config.models.items():
            for t in a.targets:
                key = f"{t.provider}/{t.model}"
                if key in seen:
                    continue
                seen.add(key)
                b = breakers.get(key)
                h = rt.health.get(key)
                warm = warmth.get(t.provider) if warmth else None
                rows.append(
                    {
                        "target": key,
                        "alias": alias,
                        "provider": t.provider,
                        "model": t.model,
                        "region": rt.config.providers[t.provider].region,
                        "breaker": b.state if b else "closed",
                        "consecutive_failures": b.consecutive_failures if b else 0,
                        "opened_at": b.opened_at if b else None,
                        **({k: v for k, v in h.view().items() if k != "target"} if h else {}),
                        "queue": {k: v for k, v in gates[key].items() if k != "target"} if key in gates else None,
                        **(warm.view() if warm else {"state": None}),
                    }
                )
        return _json({"data": rows})

    async def list_limits(self, request: Request, actor: Actor) -> Response:
        rows = await asyncio.to_thread(self._rt.store.list_limits)
        if actor.tenant is not None:
            keys = {k.id for k in await asyncio.to_thread(self._rt.store.list_keys, actor.tenant)}
            team_of = f"{actor.tenant}:"
            rows = [
                o
                for o in rows
                if (o.scope, o.subject) == ("tenant", actor.tenant)
                or (o.scope == "key" and o.subject in keys)
                or (o.scope == "team" and o.subject.startswith(team_of) and ":" not in o.subject[len(team_of) :])
            ]
        return _json({"data": [asdict(o) for o in rows]})

    async def set_limits(self, request: Request, actor: Actor) -> Response:
        """Replace a tenant's or key's overrides; every gateway process applies them within seconds."""
        scope, subject = await self._own_subject(request, actor)
        limits, on_store_error = _limits_body(await read_json(request, self._bounds), scope)
        try:
            row = await asyncio.to_thread(self._rt.store.set_limits, scope, subject, limits, on_store_error)
        except UnknownSubject:
            raise NotFound(f"No {'tenant' if scope == 'tenant' else 'key with id'} '{subject}'.") from None
        except ValueError as exc:  # a limit out of range, or nothing to set
            raise InvalidRequest(str(exc), "limits") from None
        return _json(asdict(row))

    async def clear_limits(self, request: Request, actor: Actor) -> Response:
        scope, subject = await self._own_subject(request, actor)
        if not await asyncio.to_thread(self._rt.store.clear_limits, scope, subject):
            raise NotFound(f"No limits are set for {scope} '{subject}'.")
        return _json({"scope": scope, "subject": subject, "cleared": True})

    async def limits_usage(self, request: Request, actor: Actor) -> Response:
        """Every counter that applies to the subject named by the query, with its limit and usage now."""
        who = await self._usage_subject(_scoped(request, actor))
        charges = self._rt.limits_book().charges(who, Estimate(0, 0))
        try:
            used = await self._rt.limits.usage([(c.counter, c.window) for c in charges], time.time())
        except LimitStoreUnavailable:
            message = "The limit counters cannot be reached right now; retry shortly."
            raise ProviderError(ErrorKind.overloaded, message, retry_after=1.0) from None
        return _json({"data": [_usage_view(c, u) for c, u in zip(charges, used, strict=True)]})

    async def _own_subject(self, request: Request, actor: Actor) -> tuple[str, str]:
        """The limit path's scope and subject, which must be the actor's tenant or one of its keys."""
        scope, subject = _limit_path(request)
        if actor.tenant is not None and (scope, subject) != ("tenant", actor.tenant):
            if scope == "tenant":
                raise NotFound(f"No tenant '{subject}'.")
            if scope == "team":
                if subject.rpartition(":")[0] != actor.tenant:
                    raise NotFound(f"No team '{subject}' (tenant:team).")
            else:
                await self._own_key(actor, subject)
        return scope, subject

    async def _usage_subject(self, query: dict[str, str]) -> Subject:
        """A Subject from tenant (required) and optional key, user, feature and alias; each must make sense."""
        for name in query:
            if name not in _USAGE_PARAMS:
                raise InvalidRequest(f"Unknown parameter '{name}'; use: {', '.join(_USAGE_PARAMS)}.", name)
        tenant, key = query.get("tenant"), query.get("key") or None
        if not tenant:
            raise InvalidRequest("'tenant' is required.", "tenant")
        if await asyncio.to_thread(self._rt.store.get_tenant, tenant) is None:
            raise NotFound(f"No tenant '{tenant}'.")
        keys = {k.id: k for k in await asyncio.to_thread(self._rt.store.list_keys, tenant)}
        if key is not None and key not in keys:
            raise NotFound(f"No key with id '{key}' in tenant '{tenant}'.")
        alias = query.get("alias") or None
        if alias is not None and alias not in self._rt.config.models:
            raise InvalidRequest(f"Unknown alias '{alias}'; use: {', '.join(self._rt.config.models)}.", "alias")
        team = query.get("team") or (keys[key].team if key is not None else None)
        user, feature = query.get("user") or None, query.get("feature") or None
        return Subject(tenant, key, user, feature, alias, None if team is None else f"{tenant}:{team}")
