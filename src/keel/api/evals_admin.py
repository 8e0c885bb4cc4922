"""Eval runs over HTTP (`/api/evals…`): create a run of a suite, follow it, read its results and compare
it with a baseline (the gate `keel eval run` applies in CI).

A tenant's virtual key creates runs that call the gateway as that key, and reads its tenant's runs; a
user creates a run naming the `key_id` it calls as (of their tenant); an operator reads every tenant's,
and creates a run naming `tenant` and `key_id` in the body.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from keel.api.bounds import Bounds
from keel.api.guard import Guard, Handler
from keel.api.openai import JSON_TYPE, read_json
from keel.errors import InvalidRequest, KeelError, NotFound
from keel.evals.assertions import InvalidSuite
from keel.evals.builder import Evals
from keel.evals.gate import Rule, compare_runs, item_stats, run_view
from keel.evals.runner import Options, create_run
from keel.runtime.components import Runtime
from keel.store.protocols import EvalRun
from keel.tenancy.actor import Actor
from keel.tenancy.roles import reaches_team


def _json(data: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status, media_type=JSON_TYPE)


class EvalsAdmin:
    def __init__(self, runtime: Runtime, guard: Guard) -> None:
        self._rt = runtime
        self._evals = runtime.get(Evals)
        self._guard = guard
        self._bounds = Bounds.of(runtime.config.server)

    def routes(self) -> list[Route]:
        def r(path: str, handler: Handler, method: str, permission: str) -> Route:
            return self._guard.route(path, handler, [method], permission, translate=_translate, check=_short)

        return [
            r("/api/evals/runs", self.create, "POST", "evals.run"),
            r("/api/evals/runs", self.list_runs, "GET", "evals.read"),
            r("/api/evals/runs/{run_id}", self.show, "GET", "evals.read"),
            r("/api/evals/runs/{run_id}/compare", self.compare, "GET", "evals.read"),
        ]

    async def create(self, request: Request, who: Actor) -> Response:
        """{suite: {...}, repeat?, concurrency?, label?, name?, cache?} (admin token: also tenant and key_id)."""
        body = await read_json(request, self._bounds)
        if not isinstance(body, dict) or not isinstance(body.get("suite"), dict):
            raise InvalidRequest("The body is {suite: {...}, repeat?, concurrency?, label?, name?}.", "suite")
        if who.principal is not None:
            tenant, key_id = who.principal.tenant, who.principal.key_id
        else:  # a person names the key the run calls as (of their own tenant, unless an operator)
            tenant, named = who.tenant_for(body.get("tenant"), "eval runs"), body.get("key_id")
            if not isinstance(named, str):
                raise InvalidRequest("Name the key the run calls the gateway as: 'key_id' (and 'tenant').", "key_id")
            key_id = named
            keys = await asyncio.to_thread(self._rt.store.list_keys, tenant)
            if key_id not in {k.id for k in keys if reaches_team(who, k.team)}:  # a developer: their team's keys
                raise NotFound(f"No key with id '{key_id}' in tenant '{tenant}'.")
        options = Options(
            repeat=_int(body, "repeat", 1), concurrency=_int(body, "concurrency", 4),
            label=_text(body, "label"), name=_text(body, "name"), cache=_flag(body, "cache"),
        )  # fmt: skip
        e = self._evals
        run = await create_run(e.store, e.queue, tenant, key_id, body["suite"], options, e.python_modules)
        return _json(run_view(run), 201)

    async def list_runs(self, request: Request, who: Actor) -> Response:
        q = request.query_params
        limit = min(int(q["limit"]) if q.get("limit", "").isdigit() else 50, 500)
        runs = await asyncio.to_thread(
            self._evals.store.list_eval_runs, who.scope(q.get("tenant")),
            suite=q.get("suite"), label=q.get("label"), limit=limit,
        )  # fmt: skip
        return _json({"data": [run_view(r) for r in runs]})

    async def _run(self, request: Request, who: Actor) -> EvalRun:
        run_id = request.path_params["run_id"]
        run = await asyncio.to_thread(self._evals.store.get_eval_run, who.tenant, run_id)
        if run is None:
            raise NotFound(f"No eval run '{run_id}'.")
        return run

    async def show(self, request: Request, who: Actor) -> Response:
        """?results=1 adds every result (per item and repeat, with verdicts) and per-item stats."""
        run = await self._run(request, who)
        view = run_view(run)
        if request.query_params.get("results") in ("1", "true"):
            results = await asyncio.to_thread(self._evals.store.eval_results, run.id)
            view["results"] = [_result_json(r) for r in results]
            view["items"] = [
                {"key": s.key, "runs": s.runs, "passes": s.passes, "pass_rate": s.pass_rate, "score": s.score}
                for s in item_stats(results).values()
            ]
        return _json(view)

    async def compare(self, request: Request, who: Actor) -> Response:
        """?baseline=RUN_ID|LABEL&max_regressions=0&min_pass_rate=0.9&alpha=0.05"""
        run = await self._run(request, who)
        if run.status not in ("finished",):
            raise InvalidRequest(f"Run '{run.id}' is {run.status}: compare a finished run.", "run_id")
        q = request.query_params
        rule = Rule(
            max_regressions=_qint(q.get("max_regressions"), "max_regressions", 0),
            min_pass_rate=_qfloat(q.get("min_pass_rate"), "min_pass_rate"),
            alpha=_qfloat(q.get("alpha"), "alpha") or 0.05,
        )
        try:
            comparison = await asyncio.to_thread(compare_runs, self._evals.store, run, q.get("baseline"), rule)
        except LookupError as exc:
            raise NotFound(str(exc)) from None
        return _json(comparison.json())


def _translate(err: Exception) -> KeelError | None:
    return InvalidRequest(err.message, err.where) if isinstance(err, InvalidSuite) else None


def _short(request: Request) -> None:
    for value in (*request.path_params.values(), *request.query_params.values()):
        if len(value) > 1024:
            raise InvalidRequest("Parameters must be under 1024 characters, without NUL.", None)


def _result_json(r: Any) -> dict[str, Any]:
    return {
        "item": r.item, "repeat": r.repeat, "passed": r.passed, "score": r.score, "output": r.output,
        "trace_id": r.trace_id, "latency_ms": r.latency_ms, "cost_usd": r.cost_usd,
        "verdicts": list(r.verdicts), "error": r.error,
    }  # fmt: skip


def _int(body: dict[str, Any], name: str, default: int) -> int:
    value = body.get(name, default)
    if type(value) is not int:
        raise InvalidRequest(f"'{name}' must be an integer.", name)
    return value


def _flag(body: dict[str, Any], name: str) -> bool:
    value = body.get(name, False)
    if not isinstance(value, bool):
        raise InvalidRequest(f"'{name}' must be true or false.", name)
    return value


def _text(body: dict[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is not None and (not isinstance(value, str) or len(value) > 200):
        raise InvalidRequest(f"'{name}' must be a string of at most 200 characters.", name)
    return value


def _qint(value: str | None, name: str, default: int) -> int:
    if value is None:
        return default
    if not value.isdigit():
        raise InvalidRequest(f"'{name}' must be a whole number.", name)
    return int(value)


def _qfloat(value: str | None, name: str) -> float | None:
    if value is None:
        return None
    try:
        number = float(value)
    except ValueError:
        raise InvalidRequest(f"'{name}' must be a number.", name) from None
    if not 0.0 <= number <= 1.0:
        raise InvalidRequest(f"'{name}' must be between 0 and 1.", name)
    return number
