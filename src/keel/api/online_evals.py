"""Online eval rules and scores over HTTP (`/api/evals/online-rules…`, `/api/evals/online-scores`).

Rules score every tenant's calls, so only operators manage them (`online_evals.manage`); scores are
`evals.read`, a tenant's own only unless an operator asks. A rule written here applies in this process at once and in other gateways within
`online_evals.rules_refresh_s`. Scores roll up per scorer and one dimension (feature, model, alias,
prompt version, rule, tenant) over a bounded window of the scored calls' start times.
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
from keel.api.guard import Guard
from keel.api.openai import JSON_TYPE, read_json
from keel.errors import NotFound
from keel.evals.online_builder import OnlineEvals
from keel.evals.online_rules import rule_from_body, score_query, score_view
from keel.runtime.components import Runtime
from keel.tenancy.actor import Actor

BASE = "/api/evals/online-rules"


class OnlineEvalsAdmin:
    def __init__(self, runtime: Runtime, guard: Guard) -> None:
        self._store = runtime.store
        self._online = runtime.get(OnlineEvals)
        self._guard = guard
        self._bounds = Bounds.of(runtime.config.server)
        self._python = tuple(runtime.config.evals.python_modules)

    def routes(self) -> list[Route]:
        g, manage = self._guard, "online_evals.manage"  # rules score every tenant's calls: operators
        return [
            g.route(BASE, self.list_rules, ["GET"], manage),
            g.route(BASE, self.put_rule, ["POST"], manage),
            g.route(BASE + "/{name}", self.get_rule, ["GET"], manage),
            g.route(BASE + "/{name}", self.delete_rule, ["DELETE"], manage),
            g.route("/api/evals/online-scores", self.scores, ["GET"], "evals.read"),
        ]

    async def list_rules(self, request: Request, actor: Actor) -> Response:
        rules = await asyncio.to_thread(self._store.list_online_rules)
        return _json({"data": [r.json() for r in rules]})

    async def put_rule(self, request: Request, actor: Actor) -> Response:
        rule = rule_from_body(await read_json(request, self._bounds), time.time(), self._python)
        existed = rule.name in self._online.book.by_name
        await asyncio.to_thread(self._store.put_online_rule, rule)
        await self._online.book.refresh()
        return _json(rule.json(), 200 if existed else 201)

    async def get_rule(self, request: Request, actor: Actor) -> Response:
        name = request.path_params["name"]
        found = {r.name: r for r in await asyncio.to_thread(self._store.list_online_rules)}.get(name)
        if found is None:
            raise NotFound(f"No online rule '{name}'.")
        return _json(found.json())

    async def delete_rule(self, request: Request, actor: Actor) -> Response:
        name = request.path_params["name"]
        if not await asyncio.to_thread(self._store.delete_online_rule, name):
            raise NotFound(f"No online rule '{name}'.")
        await self._online.book.refresh()
        return _json({"name": name, "deleted": True})

    async def scores(self, request: Request, actor: Actor) -> Response:
        params = dict(request.query_params)
        if actor.tenant is not None:
            params["tenant"] = actor.tenant
        query = score_query(params, time.time())
        groups = await asyncio.to_thread(self._store.score_rollup, query)
        body = {"since": query.since, "until": query.until, "by": query.by, "data": [score_view(g) for g in groups]}
        return _json(body)


def _json(data: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status, media_type=JSON_TYPE)
