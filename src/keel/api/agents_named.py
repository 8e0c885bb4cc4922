"""Named agents over the admin API (keel.agents.definitions; the CLI's `keel agents` does the same):
`GET|POST /api/agents`, `GET|PUT|DELETE /api/agents/{name}`.

An operator names `tenant`; a user or a tenant's virtual key acts on its own tenant. POST creates (409 when
the name is taken), PUT creates or replaces; every change is an `agent.register` / `agent.remove` audit
entry with the spec before and after. These routes come after the tools', secrets' and runs' routes, so a
name such as `tools` never reaches them by GET; any other method on such a name is a 400 naming `name`.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from keel.agents.definitions import RESERVED, AgentSpec, parse_agent
from keel.agents.tools import SpecError
from keel.api.bounds import Bounds
from keel.api.guard import Guard, Handler
from keel.api.openai import JSON_TYPE, read_json
from keel.audit.log import AuditLog
from keel.errors import InvalidRequest, KeelError, NotFound, RequestError
from keel.runtime.components import Runtime
from keel.store.protocols.agents import ToolRow
from keel.tenancy.actor import Actor


class Taken(RequestError):
    status = 409
    code = "conflict"


def _json(data: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status, media_type=JSON_TYPE)


def agent_view(row: ToolRow) -> dict[str, Any]:
    return {"tenant": row.tenant, "name": row.name, **row.spec, "updated_at": row.updated_at}


def _check(request: Request) -> None:
    for value in (*request.path_params.values(), *request.query_params.values()):
        if len(value) > 512 or "\x00" in value:
            raise InvalidRequest("Parameters must be at most 512 characters, without NUL.", None)
    name = request.path_params.get("name")
    if name in RESERVED:
        raise InvalidRequest(f"'{name}' is an agents route, not an agent name (taken: {sorted(RESERVED)}).", "name")


def _translate(err: Exception) -> KeelError | None:
    return InvalidRequest(err.message, err.field) if isinstance(err, SpecError) else None


class NamedAgents:
    def __init__(self, runtime: Runtime, guard: Guard) -> None:
        self._rt = runtime
        self._audit = runtime.get(AuditLog)
        self._guard = guard
        self._bounds = Bounds.of(runtime.config.server)

    def routes(self) -> list[Route]:
        def r(path: str, handler: Handler, method: str, permission: str) -> Route:
            # changes write their own audit entry (agent.register / agent.remove, with before and after)
            return self._guard.route(path, handler, [method], permission, audit=False, translate=_translate,
                                     check=_check)  # fmt: skip

        one = "/api/agents/{name}"
        return [
            r("/api/agents", self.list_agents, "GET", "agents.read"),
            r("/api/agents", self.create, "POST", "agents.write"),
            r(one, self.show, "GET", "agents.read"),
            r(one, self.replace, "PUT", "agents.write"),
            r(one, self.remove, "DELETE", "agents.write"),
        ]

    async def list_agents(self, request: Request, who: Actor) -> Response:
        tenant = who.tenant_for(request.query_params.get("tenant"))
        rows = await asyncio.to_thread(self._rt.store.list_agents, tenant)
        return _json({"data": [agent_view(r) for r in rows]})

    async def show(self, request: Request, who: Actor) -> Response:
        tenant, name = who.tenant_for(request.query_params.get("tenant")), request.path_params["name"]
        row = await asyncio.to_thread(self._rt.store.get_agent, tenant, name)
        if row is None:
            raise NotFound(f"No agent '{name}' for tenant '{tenant}'.")
        return _json(agent_view(row))

    async def create(self, request: Request, who: Actor) -> Response:
        tenant, agent = await self._read(request, who, None)
        return await self._put(who, tenant, agent, create=True)

    async def replace(self, request: Request, who: Actor) -> Response:
        tenant, agent = await self._read(request, who, request.path_params["name"])
        return await self._put(who, tenant, agent, create=False)

    async def remove(self, request: Request, who: Actor) -> Response:
        tenant, name = who.tenant_for(request.query_params.get("tenant")), request.path_params["name"]
        before = await asyncio.to_thread(self._rt.store.get_agent, tenant, name)
        if before is None or not await asyncio.to_thread(self._rt.store.delete_agent, tenant, name):
            raise NotFound(f"No agent '{name}' for tenant '{tenant}'.")
        await self._audit.record(who.id, "agent.remove", name, tenant=tenant, source_ip=who.ip, before=before.spec)
        return _json({"deleted": name})

    async def _read(self, request: Request, who: Actor, path_name: str | None) -> tuple[str, AgentSpec]:
        body = await read_json(request, self._bounds)
        if not isinstance(body, dict):
            raise InvalidRequest("The body is an agent: {name, model, tools, max_steps, system, roles}.", None)
        tenant = body.pop("tenant", None) or request.query_params.get("tenant")
        if path_name is not None and body.setdefault("name", path_name) != path_name:
            raise InvalidRequest(f"The body's name must be the path's ('{path_name}') or left out.", "name")
        agent = parse_agent(body)
        return who.tenant_for(tenant), agent

    async def _put(self, who: Actor, tenant: str, agent: AgentSpec, create: bool) -> Response:
        store = self._rt.store
        missing = [t for t in agent.tools if await asyncio.to_thread(store.get_tool, tenant, t) is None]
        if missing:
            raise InvalidRequest(f"No tool {', '.join(missing)} for tenant '{tenant}' (register it first).", "tools")
        before = await asyncio.to_thread(store.get_agent, tenant, agent.name)
        if before is not None and create:
            raise Taken(f"Agent '{agent.name}' exists for tenant '{tenant}': PUT /api/agents/{agent.name} replaces it.")
        stored = agent.model_dump(mode="json", exclude={"name"})
        row = ToolRow(tenant, agent.name, stored, time.time())
        await asyncio.to_thread(store.put_agent, row)
        await self._audit.record(who.id, "agent.register", agent.name, tenant=tenant, source_ip=who.ip,
                                 before=before.spec if before else None, after=stored)  # fmt: skip
        return _json(agent_view(row), 200 if before else 201)
