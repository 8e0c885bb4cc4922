"""Online eval rules and scores over HTTP (`/api/evals/online-rules…`, `/api/evals/online-scores`).

Admin token only. A rule written here applies in this process at once and in other gateways within
`online_evals.rules_refresh_s`. Scores roll up per scorer and one dimension (feature, model, alias,
prompt version, rule, tenant) over a bounded window of the scored calls' start times.
"""

from __future__ import annotations

import asyncio
import hmac
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from keel.api.bounds import Bounds
from keel.api.openai import JSON_TYPE, bearer, error_response, read_json
from keel.errors import AuthError, InvalidRequest, KeelError, NotFound, PermissionDenied
from keel.evals.online_builder import OnlineEvals
from keel.evals.online_rules import rule_from_body, score_query, score_view
from keel.runtime.components import Runtime

BASE = "/api/evals/online-rules"


class OnlineEvalsAdmin:
    def __init__(self, runtime: Runtime) -> None:
        self._store = runtime.store
        self._online = runtime.get(OnlineEvals)
        self._token = (runtime.config.admin_token or "").encode()
        self._bounds = Bounds.of(runtime.config.server)
        self._python = tuple(runtime.config.evals.python_modules)

    def routes(self) -> list[Route]:
        return [
            Route(BASE, self._guard(self.list_rules), methods=["GET"]),
            Route(BASE, self._guard(self.put_rule), methods=["POST"]),
            Route(BASE + "/{name}", self._guard(self.get_rule), methods=["GET"]),
            Route(BASE + "/{name}", self._guard(self.delete_rule), methods=["DELETE"]),
            Route("/api/evals/online-scores", self._guard(self.scores), methods=["GET"]),
        ]

    def _guard(self, handler: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Any]:
        async def endpoint(request: Request) -> Response:
            try:
                if not self._token:
                    raise PermissionDenied("The admin API is disabled: set admin_token in keel.yaml.")
                if not hmac.compare_digest((bearer(request) or "").encode(), self._token):
                    raise AuthError("Invalid admin token.")
                for value in (*request.path_params.values(), *request.query_params.values()):
                    if "\x00" in value:
                        raise InvalidRequest("Parameters must not contain NUL.", None)
                return await handler(request)
            except KeelError as err:
                return error_response(err)

        return endpoint

    async def list_rules(self, request: Request) -> Response:
        rules = await asyncio.to_thread(self._store.list_online_rules)
        return _json({"data": [r.json() for r in rules]})

    async def put_rule(self, request: Request) -> Response:
        rule = rule_from_body(await read_json(request, self._bounds), time.time(), self._python)
        existed = rule.name in self._online.book.by_name
        await asyncio.to_thread(self._store.put_online_rule, rule)
        await self._online.book.refresh()
        return _json(rule.json(), 200 if existed else 201)

    async def get_rule(self, request: Request) -> Response:
        name = request.path_params["name"]
        found = {r.name: r for r in await asyncio.to_thread(self._store.list_online_rules)}.get(name)
        if found is None:
            raise NotFound(f"No online rule '{name}'.")
        return _json(found.json())

    async def delete_rule(self, request: Request) -> Response:
        name = request.path_params["name"]
        if not await asyncio.to_thread(self._store.delete_online_rule, name):
            raise NotFound(f"No online rule '{name}'.")
        await self._online.book.refresh()
        return _json({"name": name, "deleted": True})

    async def scores(self, request: Request) -> Response:
        query = score_query(dict(request.query_params), time.time())
        groups = await asyncio.to_thread(self._store.score_rollup, query)
        body = {"since": query.since, "until": query.until, "by": query.by, "data": [score_view(g) for g in groups]}
        return _json(body)


def _json(data: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status, media_type=JSON_TYPE)
