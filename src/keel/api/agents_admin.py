"""The agents' and audit log's admin routes.

All behind the admin guard (api/guard.py), each route naming its permission (the audit log's routes are in
api/audit_admin.py):
- `/api/agents/tools`, `/api/agents/secrets`: an operator (naming `tenant`), a user or a tenant's virtual
  key (its own tenant). A secret's value goes in once (PUT) and never comes back out.
- `/api/agents/runs`: started with a virtual key (the run's model steps are calls of that key); `"stream":
  true` answers with the run's events as SSE.
- `/api/approvals`: `approvals.decide`; approve or deny a pending tool call. A second decision changes
  nothing and says so. `/api/approvals/{id}/approve|deny?exp=&sig=`: a signed link from the approval
  webhook instead of a credential (GET shows the call and a button, POST decides; keel.agents.links).
"""

from __future__ import annotations

import asyncio
import html
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from keel.agents.links import Links
from keel.agents.loop import Caller, Runs
from keel.agents.secrets import SecretError, Vault
from keel.agents.tools import SpecError, parse_spec
from keel.agents.views import call_view, run_view, secret_view, tool_view
from keel.api.bounds import Bounds
from keel.api.guard import Guard, Handler
from keel.api.openai import JSON_TYPE, error_response, read_json
from keel.audit.log import AuditLog, redact
from keel.errors import InvalidRequest, KeelError, NotFound, PermissionDenied
from keel.runtime.components import Runtime
from keel.store.protocols.agents import CallRow, ToolRow
from keel.tenancy.actor import Actor


def _json(data: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status, media_type=JSON_TYPE)


def _int(params: Any, name: str, default: int, low: int, high: int) -> int:
    text = params.get(name)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise InvalidRequest(f"'{name}' must be an integer from {low} to {high}.", name)
    return value


def _short(request: Request) -> None:
    for value in (*request.path_params.values(), *request.query_params.values()):
        if len(value) > 512 or "\x00" in value:
            raise InvalidRequest("Parameters must be at most 512 characters, without NUL.", None)


def _translate(err: Exception) -> KeelError | None:
    if isinstance(err, SpecError):
        return InvalidRequest(err.message, err.field)
    if isinstance(err, SecretError):
        return InvalidRequest(str(err), "value")
    return None


def _caller(who: Actor) -> Caller:
    """A run's caller: the virtual key its model steps are calls of."""
    if who.principal is None:
        raise InvalidRequest("Start a run with a virtual key: its model steps are that key's calls.", "authorization")
    return Caller(who.principal, who.models, who.id, who.ip, tuple(sorted(who.roles)))


class AgentsAdmin:
    def __init__(self, runtime: Runtime, guard: Guard) -> None:
        self._rt = runtime
        self._audit = runtime.get(AuditLog)
        self._guard = guard
        self._runs = runtime.get(Runs)
        self._vault = runtime.get(Vault)
        self._bounds = Bounds.of(runtime.config.server)

    def routes(self) -> list[Route]:
        def r(path: str, handler: Handler, method: str, permission: str) -> Route:
            # every change here writes its own, richer audit entry (tool.register, secret.put, approvals…)
            return self._guard.route(path, handler, [method], permission, audit=False, translate=_translate,
                                     check=_short)  # fmt: skip

        tools, secrets, runs = "/api/agents/tools", "/api/agents/secrets", "/api/agents/runs"
        return [
            r(tools, self.list_tools, "GET", "agents.read"),
            r(tools, self.add_tool, "POST", "agents.write"),
            r(tools + "/{name}", self.show_tool, "GET", "agents.read"),
            r(tools + "/{name}", self.remove_tool, "DELETE", "agents.write"),
            r(secrets, self.list_secrets, "GET", "secrets.read"),
            r(secrets + "/{name}", self.set_secret, "PUT", "secrets.write"),
            r(secrets + "/{name}", self.remove_secret, "DELETE", "secrets.write"),
            r(runs, self.start_run, "POST", "agents.run"),
            r(runs, self.list_runs, "GET", "agents.read"),
            r(runs + "/{run_id}", self.show_run, "GET", "agents.read"),
            r("/api/approvals", self.list_approvals, "GET", "approvals.decide"),
            self._signed(r("/api/approvals/{call_id}/approve", self.approve, "POST", "approvals.decide"), "approve"),
            self._signed(r("/api/approvals/{call_id}/deny", self.deny, "POST", "approvals.decide"), "deny"),
            Route("/api/approvals/{call_id}/approve", self._link_page("approve"), methods=["GET"]),
            Route("/api/approvals/{call_id}/deny", self._link_page("deny"), methods=["GET"]),
        ]

    async def list_tools(self, request: Request, who: Actor) -> Response:
        tenant = who.tenant_for(request.query_params.get("tenant"))
        rows = await asyncio.to_thread(self._rt.store.list_tools, tenant)
        return _json({"data": [tool_view(r) for r in rows]})

    async def add_tool(self, request: Request, who: Actor) -> Response:
        body = await read_json(request, self._bounds)
        if not isinstance(body, dict):
            raise InvalidRequest("The body is a tool spec: {name, kind, description, parameters, ...}.", None)
        tenant = who.tenant_for(body.pop("tenant", None) or request.query_params.get("tenant"))
        spec = parse_spec(body)
        before = await asyncio.to_thread(self._rt.store.get_tool, tenant, spec.name)
        stored = spec.model_dump(mode="json", exclude={"name"})
        row = ToolRow(tenant, spec.name, stored, time.time())
        await asyncio.to_thread(self._rt.store.put_tool, row)
        await self._audit.record(who.id, "tool.register", spec.name, tenant=tenant, source_ip=who.ip,
                                 before=before.spec if before else None, after=stored)  # fmt: skip
        return _json(tool_view(row), 200 if before else 201)

    async def show_tool(self, request: Request, who: Actor) -> Response:
        tenant, name = who.tenant_for(request.query_params.get("tenant")), request.path_params["name"]
        row = await asyncio.to_thread(self._rt.store.get_tool, tenant, name)
        if row is None:
            raise NotFound(f"No tool '{name}' for tenant '{tenant}'.")
        return _json(tool_view(row))

    async def remove_tool(self, request: Request, who: Actor) -> Response:
        tenant, name = who.tenant_for(request.query_params.get("tenant")), request.path_params["name"]
        before = await asyncio.to_thread(self._rt.store.get_tool, tenant, name)
        if before is None or not await asyncio.to_thread(self._rt.store.delete_tool, tenant, name):
            raise NotFound(f"No tool '{name}' for tenant '{tenant}'.")
        await self._audit.record(who.id, "tool.remove", name, tenant=tenant, source_ip=who.ip, before=before.spec)
        return _json({"deleted": name})

    # ---- secrets ---------------------------------------------------------------------------------------

    async def list_secrets(self, request: Request, who: Actor) -> Response:
        tenant = who.tenant_for(request.query_params.get("tenant"))
        rows = await asyncio.to_thread(self._rt.store.list_secrets, tenant)
        return _json({"data": [secret_view(r) for r in rows]})

    async def set_secret(self, request: Request, who: Actor) -> Response:
        body = await read_json(request, self._bounds)
        if not isinstance(body, dict) or not isinstance(body.get("value"), str):
            raise InvalidRequest('The body is {"value": "..."} (a string).', "value")
        tenant, name = (
            who.tenant_for(body.get("tenant") or request.query_params.get("tenant")),
            request.path_params["name"],
        )
        row = await asyncio.to_thread(
            lambda: self._vault.put(tenant, name, body["value"], actor=who.id, source_ip=who.ip)
        )
        return _json(secret_view(row), 201)

    async def remove_secret(self, request: Request, who: Actor) -> Response:
        tenant, name = who.tenant_for(request.query_params.get("tenant")), request.path_params["name"]
        if not await asyncio.to_thread(lambda: self._vault.delete(tenant, name, actor=who.id)):
            raise NotFound(f"No secret '{name}' for tenant '{tenant}'.")
        return _json({"deleted": name})

    # ---- runs ------------------------------------------------------------------------------------------

    async def start_run(self, request: Request, who: Actor) -> Response:
        caller = _caller(who)
        body = await read_json(request, self._bounds)
        if not isinstance(body, dict):
            raise InvalidRequest("The body is {model, input | messages, tools, max_steps, stream}.", None)
        if not body.get("stream"):
            run = await self._runs.start(caller, body)
            return _json(run_view(run), 200)
        queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(maxsize=1000)

        async def emit(event: dict[str, Any]) -> None:
            await queue.put(event)

        async def drive() -> None:
            try:
                run = await self._runs.start(caller, body, emit)
                await queue.put({"type": "run.state", "run": run_view(run, full=False)})
            except KeelError as err:
                await queue.put({"type": "error", "error": {"message": err.message, "param": err.param}})
            finally:
                await queue.put(None)

        task = asyncio.ensure_future(drive())

        async def events() -> Any:
            try:
                while (event := await queue.get()) is not None:
                    yield b"event: " + event["type"].encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n"
                yield b"data: [DONE]\n\n"
            finally:
                if not task.done():
                    task.cancel()  # the client left: the run's state is stored; the runs worker picks it up

        return StreamingResponse(events(), media_type="text/event-stream")

    async def list_runs(self, request: Request, who: Actor) -> Response:
        tenant = who.tenant_for(request.query_params.get("tenant"))
        limit = _int(request.query_params, "limit", 50, 1, 500)
        rows = await asyncio.to_thread(self._rt.store.list_runs, tenant, request.query_params.get("state"), limit)
        return _json({"data": [run_view(r, full=False) for r in rows]})

    async def show_run(self, request: Request, who: Actor) -> Response:
        run_id = request.path_params["run_id"]
        row = await asyncio.to_thread(self._rt.store.get_run, run_id)
        if row is None or (who.tenant is not None and row.tenant != who.tenant):
            raise NotFound(f"No run '{run_id}'.")
        calls = await asyncio.to_thread(lambda: self._rt.store.list_calls(run_id=run_id))
        return _json({**run_view(row), "calls": [call_view(c) for c in calls]})

    # ---- approvals -------------------------------------------------------------------------------------

    async def list_approvals(self, request: Request, who: Actor) -> Response:
        q = request.query_params
        state = q.get("state", "pending")
        tenant = who.scope(q.get("tenant"))
        rows = await asyncio.to_thread(lambda: self._rt.store.list_calls(tenant=tenant, state=state))
        return _json({"data": [call_view(r) for r in rows]})

    async def approve(self, request: Request, who: Actor) -> Response:
        return await self._decide(request, who, True)

    async def deny(self, request: Request, who: Actor) -> Response:
        return await self._decide(request, who, False)

    async def _decide(self, request: Request, who: Actor, approve: bool) -> Response:
        call_id = request.path_params["call_id"]
        if who.tenant is not None:
            found = await asyncio.to_thread(self._rt.store.get_call, call_id)
            if found is None or found.tenant != who.tenant:
                raise NotFound(f"No tool call '{call_id}'.")
        body = await read_json(request, self._bounds) if await request.body() else {}
        by = body.get("by") if isinstance(body, dict) and isinstance(body.get("by"), str) else "admin"
        decider = f"admin:{by}" if who.id == "admin" else who.id  # the admin token names its person in `by`
        row, moved = await self._runs.decide(call_id, approve, by=decider[:200])
        if row is None:
            raise NotFound(f"No tool call '{call_id}'.")
        # the run goes on from the runs worker of whichever gateway claims it (within 0.5 s)
        return _json({**call_view(row), "changed": moved}, 200 if moved else 409)

    # ---- signed approval links (keel.agents.links) ----------------------------------------------------

    def _signed(self, guarded: Route, action: str) -> Route:
        """A POST carrying `sig` is a signed link's decision (no credential); any other goes to the guard."""
        admin = guarded.endpoint

        async def endpoint(request: Request) -> Response:
            if "sig" not in request.query_params:
                return await admin(request)  # type: ignore[no-any-return]
            try:
                call_id = self._link(request, action)
                row, moved = await self._runs.decide(call_id, action == "approve", by="link")
                if row is None:
                    raise NotFound(f"No tool call '{call_id}'.")
                return _json({**call_view(row), "changed": moved}, 200 if moved else 409)
            except KeelError as err:
                return error_response(err)

        return Route(guarded.path, endpoint, methods=["POST"])

    def _link_page(self, action: str) -> Callable[[Request], Any]:
        """GET of a link: what it would do, and a button that POSTs the decision (opening it decides nothing)."""

        async def endpoint(request: Request) -> Response:
            try:
                call_id = self._link(request, action)
                row = await asyncio.to_thread(self._rt.store.get_call, call_id)
                if row is None:
                    raise NotFound(f"No tool call '{call_id}'.")
            except KeelError as err:
                return error_response(err)
            return Response(_link_html(row, action), media_type="text/html; charset=utf-8")

        return endpoint

    def _link(self, request: Request, action: str) -> str:
        _short(request)
        links = self._rt.find(Links)
        if links is None:
            raise PermissionDenied("Approval links are off: set admin_token in keel.yaml.")
        q, call_id = request.query_params, request.path_params["call_id"]
        why = links.check(call_id, action, q.get("sig", ""), q.get("exp", ""), time.time())
        if why is not None:
            raise PermissionDenied(f"This approval link cannot be used: {why}.")
        return str(call_id)


def dashboard_decide(runtime: Runtime) -> Callable[[str, bool, str], Awaitable[tuple[CallRow | None, bool]]] | None:
    """The dashboard's approve/deny: the same decision as the admin API's (None without the agents)."""
    runs = runtime.find(Runs)
    if runs is None:
        return None

    async def decide(call_id: str, approve: bool, by: str) -> tuple[CallRow | None, bool]:
        return await runs.decide(call_id, approve, by=by)

    return decide


def _link_html(row: CallRow, action: str) -> str:
    args = html.escape(orjson.dumps(redact(row.arguments), option=orjson.OPT_INDENT_2).decode())
    if row.state != "pending":
        act = f"<p>This call is already <b>{html.escape(row.state)}</b>: the link changes nothing.</p>"
    else:
        act = f'<form method="post"><button type="submit">{action.capitalize()} this call</button></form>'
    return (
        f"<!doctype html><title>Keel: {action} {html.escape(row.tool)}</title>"
        f"<h1>{action.capitalize()} a call of <code>{html.escape(row.tool)}</code>?</h1>"
        f"<p>Tenant <code>{html.escape(row.tenant)}</code>, run <code>{html.escape(row.run_id)}</code>.</p>"
        f"<pre>{args}</pre>{act}"
    )
