"""Keel as an MCP server at `/mcp` (the official `mcp` SDK's lowlevel server over streamable HTTP, stateless,
JSON answers): authenticated by virtual key (401 before any MCP message without one), it lists the key's
tenant's registered tools and calls them through the runtime: the same schema validation, policy (a denied
tool is refused; one that needs approval too: approvals pause runs), rate limits, secrets and audit.

The SDK is imported on the first request to /mcp (it costs seconds of start-up otherwise), and its session
manager runs in a task of its own (anyio's task group is entered and left in one task) until shutdown.
Without the SDK installed, /mcp answers 501 naming the package.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from keel.agents.loop import Caller, Runs
from keel.api.openai import JSON_TYPE, bearer, error_body
from keel.errors import KeelError
from keel.runtime.components import Runtime


class McpEdge:
    def __init__(self, runtime: Runtime) -> None:
        self._rt = runtime
        self._runs = runtime.get(Runs)
        self._asgi: Any = None
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._lock = asyncio.Lock()

    def routes(self) -> list[Route]:
        # stateless JSON answers: POST only (a GET would open a standalone SSE stream that never ends)
        return [Route("/mcp", _Asgi(self), methods=["POST"])]

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        try:
            yield
        finally:
            self._stop.set()
            if self._task is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self._task, 5.0)

    async def _start(self) -> Any:
        async with self._lock:
            if self._asgi is not None:
                return self._asgi
            from mcp.server.lowlevel.server import Server
            from mcp.server.streamable_http_manager import StreamableHTTPASGIApp, StreamableHTTPSessionManager

            server: Server[Any] = Server("keel", on_list_tools=self._list, on_call_tool=self._call)
            manager = StreamableHTTPSessionManager(app=server, stateless=True, json_response=True)
            ready = asyncio.Event()

            async def run() -> None:
                async with manager.run():
                    ready.set()
                    await self._stop.wait()

            self._task = asyncio.ensure_future(run())
            await ready.wait()
            self._asgi = StreamableHTTPASGIApp(manager)
            return self._asgi

    async def endpoint(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        try:
            principal, allowed = await self._rt.authenticator.resolve(bearer(request))
        except KeelError as err:
            return await self._refuse(err, send)
        ip = request.client.host if request.client else None
        scope.setdefault("state", {})["keel_caller"] = Caller(principal, allowed, f"key:{principal.key_id}", ip)
        try:
            asgi = self._asgi or await self._start()
        except ImportError:
            unavailable = KeelError("Keel's MCP server needs the official SDK: pip install 'keel[agents]'.")
            unavailable.status = 501
            return await self._refuse(unavailable, send)
        await asgi(scope, receive, send)

    @staticmethod
    async def _refuse(err: KeelError, send: Send) -> None:
        body = error_body(err)
        headers = [(b"content-type", JSON_TYPE.encode()), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": err.status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    @staticmethod
    def _caller(ctx: Any) -> Caller:
        caller = ctx.request.scope["state"]["keel_caller"]
        assert isinstance(caller, Caller)
        return caller

    async def _list(self, ctx: Any, params: Any) -> Any:
        from mcp import types

        caller = self._caller(ctx)
        rows = await asyncio.to_thread(self._rt.store.list_tools, caller.principal.tenant)
        tools = [types.Tool(name=r.name, description=r.spec.get("description") or "", input_schema=r.spec["parameters"])
                 for r in rows]  # fmt: skip
        return types.ListToolsResult(tools=tools)

    async def _call(self, ctx: Any, params: Any) -> Any:
        from mcp import types

        ok, text = await self._runs.call_tool(self._caller(ctx), params.name, params.arguments or {})
        return types.CallToolResult(content=[types.TextContent(type="text", text=text)], is_error=not ok)


class _Asgi:
    """An ASGI app object: Starlette routes a function or method as request -> response, an object as ASGI."""

    def __init__(self, edge: McpEdge) -> None:
        self._edge = edge

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._edge.endpoint(scope, receive, send)
