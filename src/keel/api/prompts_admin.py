"""The prompt registry over HTTP (`/api/prompts…`): list, push, show (with an ETag), move a label.

Behind the admin guard (api/guard.py): an operator names the tenant (`tenant` in the query or body);
a user or a tenant's virtual key acts on its own tenant only, so clients that render prompts themselves
read them with the key they call with. A protected label moves only for `prompts.protected` (operators,
owners, admins). A prompt belongs to a team or to the whole tenant (api/owners.py): a developer pushes,
labels and rolls out their team's only, and lists those. A write refreshes this
process's served prompts at once; other gateways within their refresh period (2 s).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from keel.api.bounds import Bounds
from keel.api.guard import Guard, Handler
from keel.api.openai import JSON_TYPE, read_json
from keel.api.owners import asked_owner, check_reach
from keel.errors import InvalidRequest, KeelError, NotFound, PermissionDenied
from keel.prompts import feedback
from keel.prompts.builder import Prompts
from keel.prompts.content import ContentError, check_name
from keel.prompts.guards import plan_of
from keel.prompts.registry import LabelRefused, TeamRefused, label_view, move_view, rollout_view, version_view
from keel.runtime.components import Runtime
from keel.tenancy.actor import Actor
from keel.tenancy.roles import reaches_team, team_bound
from keel.traces.writer import parse_window


class PromptsAdmin:
    def __init__(self, runtime: Runtime, guard: Guard) -> None:
        self._rt = runtime
        self._prompts = runtime.get(Prompts)
        self._guard = guard
        self._bounds = Bounds.of(runtime.config.server)

    def routes(self) -> list[Route]:
        def r(path: str, handler: Handler, method: str, permission: str, audit: bool = True) -> Route:
            return self._guard.route(path, handler, [method], permission, audit=audit, translate=self._translate)

        labels = "/api/prompts/{name}/labels/{label}"
        return [  # label moves and rollouts write their own audit entries (keel.prompts.registry)
            r("/api/prompts", self.list_prompts, "GET", "prompts.read"),
            r("/api/prompts", self.push, "POST", "prompts.write"),
            r("/api/prompts/{name}", self.show, "GET", "prompts.read"),
            r("/api/prompts/{name}/versions", self.versions, "GET", "prompts.read"),
            r(labels, self.set_label, "PUT", "prompts.write", audit=False),
            r(labels + "/rollback", self.rollback, "POST", "prompts.write", audit=False),
            r("/api/prompts/{name}/rollouts", self.start_rollout, "POST", "prompts.write", audit=False),
            r("/api/prompts/{name}/rollouts", self.list_rollouts, "GET", "prompts.read"),
            r("/api/prompts/{name}/history", self.history, "GET", "prompts.read"),
            r("/api/feedback", self.feedback, "POST", "feedback.write"),
            r("/api/feedback", self.feedback_summary, "GET", "feedback.read"),
        ]

    @staticmethod
    def _translate(err: Exception) -> KeelError | None:
        if isinstance(err, ContentError):
            return InvalidRequest(err.message, err.field)
        if isinstance(err, LabelRefused | TeamRefused):
            return PermissionDenied(str(err))
        return None

    async def _reach(self, caller: Actor, tenant: str, name: str) -> None:
        """PermissionDenied unless `caller` may change prompt `name` (a developer: their team's only); a
        prompt that does not exist is left to the route's own 404."""
        if team_bound(caller):
            teams = await asyncio.to_thread(self._rt.store.prompt_teams, tenant, name)
            if (tenant, name) in teams:
                check_reach(caller, f"Prompt '{name}'", teams[(tenant, name)])

    async def _body(self, request: Request) -> dict[str, Any]:
        body = await read_json(request, self._bounds)
        if not isinstance(body, dict):
            raise InvalidRequest("The request body must be a JSON object.", None)
        return body

    async def list_prompts(self, request: Request, caller: Actor) -> Response:
        tenant = caller.scope(request.query_params.get("tenant"))
        rows = await asyncio.to_thread(self._prompts.registry.summaries, tenant)
        return _json({"data": [r for r in rows if reaches_team(caller, r["team"])]})

    async def push(self, request: Request, caller: Actor) -> Response:
        body = await self._body(request)
        tenant = caller.tenant_for(body.get("tenant"))
        check_name(body.get("name"))  # a bad body is a 400 before who may push it is asked
        owner = await asked_owner(self._rt.store, caller, tenant, body)
        registry, admin = self._prompts.registry, caller.can("prompts.protected")
        pushed = await asyncio.to_thread(
            lambda: registry.push(
                tenant,
                body,
                author=caller.id,
                admin=admin,
                team=owner.team,
                give=owner.given,
                own_only=team_bound(caller),
            )
        )
        await self._prompts.sync.refresh()
        view = {**version_view(pushed.version), "team": pushed.team, "created": pushed.created}
        if pushed.label is not None:
            view["label"] = label_view(pushed.label)
        return _json(view, 201 if pushed.created else 200)

    async def show(self, request: Request, caller: Actor) -> Response:
        """?version=N | ?label=NAME (neither: the latest); ETag is the version's content hash."""
        name = request.path_params["name"]
        tenant = caller.tenant_for(request.query_params.get("tenant"))
        version, label = _which(request.query_params.get("version"), request.query_params.get("label"))
        found = await asyncio.to_thread(self._prompts.registry.find, tenant, name, version=version, label=label)
        if found is None:
            what = f"version {version}" if version else f"label '{label}'" if label else "versions"
            raise NotFound(f"Prompt '{name}' has no {what}.")
        etag = f'"{found.hash}"'
        headers = {"etag": etag, "cache-control": "no-cache"}
        if etag in [t.strip() for t in request.headers.get("if-none-match", "").split(",")]:
            return Response(status_code=304, headers=headers)
        labels = await asyncio.to_thread(self._rt.store.list_prompt_labels, tenant, name)
        return Response(orjson.dumps(version_view(found, labels)), 200, headers, JSON_TYPE)

    async def versions(self, request: Request, caller: Actor) -> Response:
        name = request.path_params["name"]
        tenant = caller.tenant_for(request.query_params.get("tenant"))
        rows = await asyncio.to_thread(self._rt.store.list_prompt_versions, tenant, name)
        return _json({"data": [version_view(v) for v in rows]})

    async def set_label(self, request: Request, caller: Actor) -> Response:
        """Body {"version": N, "protected"?: bool, "rollout"?: [{"version": M, "weight": percent}, …]}: the
        stable version and the shares of others (none: a plain label, which is also how a rollout ends)."""
        name, label = request.path_params["name"], check_name(request.path_params["label"], "label")
        body = await self._body(request)
        tenant = caller.tenant_for(body.get("tenant"))
        version = body.get("version")
        if type(version) is not int or version < 1:
            raise InvalidRequest("'version' must be a version number (1, 2, …).", "version")
        protected = body.get("protected")
        if protected is not None and type(protected) is not bool:
            raise InvalidRequest("'protected' must be true or false.", "protected")
        rollout = _rollout(body.get("rollout"))
        await self._reach(caller, tenant, name)
        registry = self._prompts.registry
        moved = await asyncio.to_thread(
            lambda: registry.set_label(
                tenant,
                name,
                label,
                version,
                by=caller.id,
                admin=caller.can("prompts.protected"),
                protected=protected,
                rollout=rollout,
            )
        )
        if moved is None:
            wanted = ", ".join(str(v) for v in sorted({version, *(v for v, _ in rollout)}))
            raise NotFound(f"Prompt '{name}' lacks one of the versions {wanted}.")
        await self._prompts.sync.refresh()
        return _json(label_view(moved))

    async def start_rollout(self, request: Request, caller: Actor) -> Response:
        """Body {label, to, weight, guards?: ["error_rate<0.02", …], steps?: [50], every?: "1h", window?: "5m",
        min_calls?: 50}: `weight`% of the label's calls to version `to`, judged by the guard worker."""
        name = request.path_params["name"]
        body = await self._body(request)
        tenant = caller.tenant_for(body.get("tenant"))
        label = check_name(body.get("label"), "label")
        to = body.get("to")
        if type(to) is not int or to < 1:
            raise InvalidRequest("'to' must be a version number (1, 2, …).", "to")
        weight = body.get("weight")
        if not isinstance(weight, int | float) or isinstance(weight, bool) or not 0 < weight <= 100:
            raise InvalidRequest("'weight' must be a percent above 0, at most 100.", "weight")
        plan = plan_of(body, float(weight))
        await self._reach(caller, tenant, name)
        registry = self._prompts.registry
        started = await asyncio.to_thread(
            lambda: registry.start_rollout(
                tenant, name, label, to, float(weight), plan, by=caller.id, admin=caller.can("prompts.protected")
            )
        )
        if started is None:
            raise NotFound(f"Prompt '{name}' has no label '{label}' or no version {to}.")
        await self._prompts.sync.refresh()
        return _json({"label": label_view(started[0]), "rollout": rollout_view(started[1])}, 201)

    async def list_rollouts(self, request: Request, caller: Actor) -> Response:
        name = request.path_params["name"]
        tenant = caller.tenant_for(request.query_params.get("tenant"))
        rows = await asyncio.to_thread(self._prompts.registry.rollouts, tenant, name)
        return _json({"data": [rollout_view(r) for r in rows]})

    async def rollback(self, request: Request, caller: Actor) -> Response:
        name, label = request.path_params["name"], request.path_params["label"]
        tenant = caller.tenant_for(request.query_params.get("tenant"))  # no body: `tenant` in the query (admin token)
        await self._reach(caller, tenant, name)
        registry = self._prompts.registry
        moved = await asyncio.to_thread(
            lambda: registry.rollback(tenant, name, label, by=caller.id, admin=caller.can("prompts.protected"))
        )
        if moved is None:
            raise NotFound(f"Prompt '{name}' has no label '{label}'.")
        await self._prompts.sync.refresh()
        return _json(label_view(moved))

    async def history(self, request: Request, caller: Actor) -> Response:
        name = request.path_params["name"]
        tenant = caller.tenant_for(request.query_params.get("tenant"))
        label = request.query_params.get("label")
        try:
            limit = min(10_000, max(1, int(request.query_params.get("limit", "100"))))
        except ValueError:
            raise InvalidRequest("'limit' must be an integer.", "limit") from None
        rows = await asyncio.to_thread(self._prompts.registry.history, tenant, name, label, limit)
        return _json({"data": [move_view(m) for m in rows]})

    async def feedback(self, request: Request, caller: Actor) -> Response:
        """Body {trace_id, score (0 to 1), comment?, user?}: a score on one call, by its x-keel-trace-id."""
        body = await self._body(request)
        tenant = caller.tenant
        stored = await asyncio.to_thread(feedback.record, self._rt.store, tenant, body)
        view = {"trace_id": stored.trace_id, "score": stored.score, "prompt_version": stored.prompt_version,
                "model": stored.model, "user": stored.rater or None}  # fmt: skip
        return _json(view, 201)

    async def feedback_summary(self, request: Request, caller: Actor) -> Response:
        """?by=prompt_version|model&since=24h&until=…: count and mean score per group."""
        q = request.query_params
        tenant = caller.scope(q.get("tenant"))
        since, until = parse_window(q.get("since", "24h"), q.get("until"), time.time())
        by = q.get("by", "prompt_version")
        rows = await asyncio.to_thread(feedback.summary, self._rt.store, tenant, since, until, by)
        return _json({"data": rows})


def _rollout(value: Any) -> tuple[tuple[int, float], ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise InvalidRequest("'rollout' must be an array of {version, weight}.", "rollout")
    shares = []
    for i, share in enumerate(value):
        v, w = (share.get("version"), share.get("weight")) if isinstance(share, dict) else (None, None)
        if type(v) is not int or v < 1 or not isinstance(w, int | float) or isinstance(w, bool):
            raise InvalidRequest("Each rollout share is {version: N, weight: percent}.", f"rollout[{i}]")
        shares.append((v, float(w)))
    return tuple(shares)


def _which(version: str | None, label: str | None) -> tuple[int | None, str | None]:
    if version is not None and label is not None:
        raise InvalidRequest("Ask for a 'version' or a 'label', not both.", "version")
    if version is not None and not (version.isdigit() and int(version) >= 1):
        raise InvalidRequest("'version' must be a version number (1, 2, …).", "version")
    return (int(version) if version is not None else None), label


def _json(data: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status, None, JSON_TYPE)
