"""The agents' and audit log's admin routes.

- `/api/audit`, `/api/audit/verify`: the admin token.
- `/api/agents/tools`, `/api/agents/secrets`: the admin token (naming `tenant`) or a tenant's virtual key
  (its own tenant). A secret's value goes in once (PUT) and never comes back out.
- `/api/agents/runs`: a virtual key (the run's model steps are calls of that key); `"stream": true` answers
  with the run's events as SSE.
- `/api/approvals`: the admin token (approvers are operators); approve or deny a pending tool call. A second
  decision changes nothing and says so. `/api/approvals/{id}/approve|deny?exp=&sig=`: a signed link from the
  approval webhook instead of the token (GET shows the call and a button, POST decides; keel.agents.links).
"""

from __future__ import annotations

import asyncio
import hmac
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
from keel.api.openai import JSON_TYPE, bearer, error_response, read_json
from keel.audit.log import AuditLog, entry_json, parse_instant, redact
from keel.errors import AuthError, InvalidRequest, KeelError, NotFound, PermissionDenied
from keel.runtime.components import Runtime
from keel.store.protocols.agents import CallRow, ToolRow

MAX_AUDIT_PAGE = 1000


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


def _no_nul(request: Request) -> None:
    for value in (*request.path_params.values(), *request.query_params.values()):
        if "\x00" in value or len(value) > 512:
            raise InvalidRequest("Parameters must be at most 512 characters, without NUL.", None)


def _ip(request: Request) -> str | None:
    return request.client.host if request.client else None


class Who:
    """An admin (tenant None: names one per request) or a virtual key of one tenant."""

    def __init__(self, tenant: str | None, caller: Caller | None, actor: str, request: Request) -> None:
        self.own, self.caller, self.actor, self.ip = tenant, caller, actor, _ip(request)

    def tenant(self, asked: Any) -> str:
        if asked is not None and (not isinstance(asked, str) or not asked or len(asked) > 256):
            raise InvalidRequest("'tenant' must be a tenant name (1 to 256 characters).", "tenant")
        if self.own is not None:
            if asked is not None and asked != self.own:
                raise PermissionDenied("A virtual key reaches only its own tenant's tools, secrets and runs.")
            return self.own
        if not asked:
            raise InvalidRequest("Name the tenant: 'tenant' in the query or body (admin token).", "tenant")
        return str(asked)


class AgentsAdmin:
    def __init__(self, runtime: Runtime) -> None:
        self._rt = runtime
        self._audit = runtime.get(AuditLog)
        self._token = (runtime.config.admin_token or "").encode()
        self._runs = runtime.get(Runs)
        self._vault = runtime.get(Vault)
        self._bounds = Bounds.of(runtime.config.server)

    def routes(self) -> list[Route]:
        either = self._either
        return [
            Route("/api/audit", self._admin(self.list_audit), methods=["GET"]),
            Route("/api/audit/verify", self._admin(self.verify_audit), methods=["GET"]),
            Route("/api/agents/tools", either(self.list_tools), methods=["GET"]),
            Route("/api/agents/tools", either(self.add_tool), methods=["POST"]),
            Route("/api/agents/tools/{name}", either(self.show_tool), methods=["GET"]),
            Route("/api/agents/tools/{name}", either(self.remove_tool), methods=["DELETE"]),
            Route("/api/agents/secrets", either(self.list_secrets), methods=["GET"]),
            Route("/api/agents/secrets/{name}", either(self.set_secret), methods=["PUT"]),
            Route("/api/agents/secrets/{name}", either(self.remove_secret), methods=["DELETE"]),
            Route("/api/agents/runs", either(self.start_run), methods=["POST"]),
            Route("/api/agents/runs", either(self.list_runs), methods=["GET"]),
            Route("/api/agents/runs/{run_id}", either(self.show_run), methods=["GET"]),
            Route("/api/approvals", self._admin(self.list_approvals), methods=["GET"]),
            Route(
                "/api/approvals/{call_id}/approve", self._signed(self._admin(self.approve), "approve"), methods=["POST"]
            ),
            Route("/api/approvals/{call_id}/deny", self._signed(self._admin(self.deny), "deny"), methods=["POST"]),
            Route("/api/approvals/{call_id}/approve", self._link_page("approve"), methods=["GET"]),
            Route("/api/approvals/{call_id}/deny", self._link_page("deny"), methods=["GET"]),
        ]

    # ---- who is asking -------------------------------------------------------------------------------

    def _either(self, handler: Callable[[Request, Who], Awaitable[Response]]) -> Callable[[Request], Any]:
        async def endpoint(request: Request) -> Response:
            try:
                _no_nul(request)
                given = bearer(request) or ""
                if self._token and hmac.compare_digest(given.encode(), self._token):
                    who = Who(None, None, "admin", request)
                else:
                    principal, allowed = await self._rt.authenticator.resolve(given or None)
                    caller = Caller(principal, allowed, f"key:{principal.key_id}", _ip(request))
                    who = Who(principal.tenant, caller, f"key:{principal.key_id}", request)
                return await handler(request, who)
            except SpecError as err:
                return error_response(InvalidRequest(err.message, err.field))
            except SecretError as err:
                return error_response(InvalidRequest(str(err), "value"))
            except KeelError as err:
                return error_response(err)

        return endpoint

    def _admin(self, handler: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Any]:
        async def endpoint(request: Request) -> Response:
            try:
                if not self._token:
                    raise PermissionDenied("The admin API is disabled: set admin_token in keel.yaml.")
                if not hmac.compare_digest((bearer(request) or "").encode(), self._token):
                    raise AuthError("Invalid admin token.")
                _no_nul(request)
                return await handler(request)
            except KeelError as err:
                return error_response(err)

        return endpoint

    async def list_audit(self, request: Request) -> Response:
        """?since=&until=&tenant=&after=<seq>&limit= — entries in chain order with their hashes."""
        q = request.query_params
        bounds: dict[str, float | None] = {}
        for name in ("since", "until"):
            try:
                bounds[name] = None if q.get(name) is None else parse_instant(q[name], name)
            except ValueError as exc:
                raise InvalidRequest(str(exc), name) from None
        after = _int(q, "after", 0, 0, 2**62)
        limit = _int(q, "limit", 100, 1, MAX_AUDIT_PAGE)
        tenant = q.get("tenant")
        store = self._rt.store
        rows = await asyncio.to_thread(
            lambda: store.list_audit(
                after_seq=after, since=bounds["since"], until=bounds["until"], tenant=tenant, limit=limit
            )
        )
        data = [entry_json(e) for e in rows]
        return _json({"data": data, "next_after": rows[-1].seq if len(rows) == limit else None})

    async def verify_audit(self, request: Request) -> Response:
        verdict = await asyncio.to_thread(self._audit.verify)
        return _json(verdict.json(), 200 if verdict.ok else 409)

    # ---- tools -----------------------------------------------------------------------------------------

    async def list_tools(self, request: Request, who: Who) -> Response:
        tenant = who.tenant(request.query_params.get("tenant"))
        rows = await asyncio.to_thread(self._rt.store.list_tools, tenant)
        return _json({"data": [tool_view(r) for r in rows]})

    async def add_tool(self, request: Request, who: Who) -> Response:
        body = await read_json(request, self._bounds)
        if not isinstance(body, dict):
            raise InvalidRequest("The body is a tool spec: {name, kind, description, parameters, ...}.", None)
        tenant = who.tenant(body.pop("tenant", None) or request.query_params.get("tenant"))
        spec = parse_spec(body)
        before = await asyncio.to_thread(self._rt.store.get_tool, tenant, spec.name)
        stored = spec.model_dump(mode="json", exclude={"name"})
        row = ToolRow(tenant, spec.name, stored, time.time())
        await asyncio.to_thread(self._rt.store.put_tool, row)
        await self._audit.record(who.actor, "tool.register", spec.name, tenant=tenant, source_ip=who.ip,
                                 before=before.spec if before else None, after=stored)  # fmt: skip
        return _json(tool_view(row), 200 if before else 201)

    async def show_tool(self, request: Request, who: Who) -> Response:
        tenant, name = who.tenant(request.query_params.get("tenant")), request.path_params["name"]
        row = await asyncio.to_thread(self._rt.store.get_tool, tenant, name)
        if row is None:
            raise NotFound(f"No tool '{name}' for tenant '{tenant}'.")
        return _json(tool_view(row))

    async def remove_tool(self, request: Request, who: Who) -> Response:
        tenant, name = who.tenant(request.query_params.get("tenant")), request.path_params["name"]
        before = await asyncio.to_thread(self._rt.store.get_tool, tenant, name)
        if before is None or not await asyncio.to_thread(self._rt.store.delete_tool, tenant, name):
            raise NotFound(f"No tool '{name}' for tenant '{tenant}'.")
        await self._audit.record(who.actor, "tool.remove", name, tenant=tenant, source_ip=who.ip, before=before.spec)
        return _json({"deleted": name})

    # ---- secrets ---------------------------------------------------------------------------------------

    async def list_secrets(self, request: Request, who: Who) -> Response:
        tenant = who.tenant(request.query_params.get("tenant"))
        rows = await asyncio.to_thread(self._rt.store.list_secrets, tenant)
        return _json({"data": [secret_view(r) for r in rows]})

    async def set_secret(self, request: Request, who: Who) -> Response:
        body = await read_json(request, self._bounds)
        if not isinstance(body, dict) or not isinstance(body.get("value"), str):
            raise InvalidRequest('The body is {"value": "..."} (a string).', "value")
        tenant, name = who.tenant(body.get("tenant") or request.query_params.get("tenant")), request.path_params["name"]
        row = await asyncio.to_thread(
            lambda: self._vault.put(tenant, name, body["value"], actor=who.actor, source_ip=who.ip)
        )
        return _json(secret_view(row), 201)

    async def remove_secret(self, request: Request, who: Who) -> Response:
        tenant, name = who.tenant(request.query_params.get("tenant")), request.path_params["name"]
        if not await asyncio.to_thread(lambda: self._vault.delete(tenant, name, actor=who.actor)):
            raise NotFound(f"No secret '{name}' for tenant '{tenant}'.")
        return _json({"deleted": name})

    # ---- runs ------------------------------------------------------------------------------------------

    async def start_run(self, request: Request, who: Who) -> Response:
        if who.caller is None:
            raise PermissionDenied("Start a run with a virtual key: its model steps are that key's calls.")
        caller = who.caller
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

    async def list_runs(self, request: Request, who: Who) -> Response:
        tenant = who.tenant(request.query_params.get("tenant"))
        limit = _int(request.query_params, "limit", 50, 1, 500)
        rows = await asyncio.to_thread(self._rt.store.list_runs, tenant, request.query_params.get("state"), limit)
        return _json({"data": [run_view(r, full=False) for r in rows]})

    async def show_run(self, request: Request, who: Who) -> Response:
        run_id = request.path_params["run_id"]
        row = await asyncio.to_thread(self._rt.store.get_run, run_id)
        if row is None or (who.own is not None and row.tenant != who.own):
            raise NotFound(f"No run '{run_id}'.")
        calls = await asyncio.to_thread(lambda: self._rt.store.list_calls(run_id=run_id))
        return _json({**run_view(row), "calls": [call_view(c) for c in calls]})

    # ---- approvals -------------------------------------------------------------------------------------

    async def list_approvals(self, request: Request) -> Response:
        q = request.query_params
        state = q.get("state", "pending")
        rows = await asyncio.to_thread(lambda: self._rt.store.list_calls(tenant=q.get("tenant"), state=state))
        return _json({"data": [call_view(r) for r in rows]})

    async def approve(self, request: Request) -> Response:
        return await self._decide(request, True)

    async def deny(self, request: Request) -> Response:
        return await self._decide(request, False)

    async def _decide(self, request: Request, approve: bool) -> Response:
        call_id = request.path_params["call_id"]
        body = await read_json(request, self._bounds) if await request.body() else {}
        by = body.get("by") if isinstance(body, dict) and isinstance(body.get("by"), str) else "admin"
        row, moved = await self._runs.decide(call_id, approve, by=f"admin:{by}"[:200])
        if row is None:
            raise NotFound(f"No tool call '{call_id}'.")
        # the run goes on from the runs worker of whichever gateway claims it (within 0.5 s)
        return _json({**call_view(row), "changed": moved}, 200 if moved else 409)

    # ---- signed approval links (keel.agents.links) ----------------------------------------------------

    def _signed(self, admin: Callable[[Request], Any], action: str) -> Callable[[Request], Any]:
        """A POST carrying `sig` is a signed link's decision (no admin token); any other goes to `admin`."""

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

        return endpoint

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
        _no_nul(request)
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
