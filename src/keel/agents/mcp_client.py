"""Keel as an MCP client (the official `mcp` SDK): list and call the tools of a registered server, over
stdio (the server started inside the sandbox, one session per call) or streamable HTTP. A stdio server's
secrets are environment variables in its sandbox; an HTTP server's are request headers (the `env` name is
the header name). A stdio server with `network` gets the sandbox's allow-list proxy (its socket path in
KEEL_NET_SOCKET: it speaks CONNECT host:port there). Given the `Sandbox`, a stdio server also lives in a
cgroup of its own (memory summed over its processes, pids, cpu: `limits`), removed with its session."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import AsyncIterator, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from keel.agents.sandbox.netproxy import SOCKET as NET_SOCKET
from keel.agents.sandbox.netproxy import NetProxy
from keel.agents.sandbox.runner import Limits, Sandbox

if TYPE_CHECKING:
    from mcp import ClientSession

    from keel.agents.tools import McpTool


@contextlib.asynccontextmanager
async def session(
    server: McpTool, env: Mapping[str, str], limits: Limits, sandbox: Sandbox | None = None
) -> AsyncIterator[ClientSession]:
    from mcp import ClientSession, StdioServerParameters
    from mcp.client.stdio import stdio_client
    from mcp.client.streamable_http import streamable_http_client

    if server.transport == "stdio":
        spec: dict[str, Any] = {"command": list(server.command), "limits": asdict(limits), "env": dict(env)}
        here = str(Path(__file__).resolve().parents[2])  # this keel, not another one on the default path
        async with contextlib.AsyncExitStack() as stack:
            if server.network:  # its way out: the allow-list proxy's socket, at KEEL_NET_SOCKET in the sandbox
                proxy = NetProxy(server.network)
                await proxy.start()
                stack.push_async_callback(proxy.aclose)
                spec["net_dir"] = proxy.directory
                spec["env"] = {**spec["env"], "KEEL_NET_SOCKET": NET_SOCKET}
            cg = None if sandbox is None else await sandbox.cgroup(limits)
            if cg is not None:  # removed (what is left inside killed) after the server's stdio is closed
                stack.push_async_callback(asyncio.to_thread, cg.remove)
                spec["cgroup"] = list(cg.paths)
            params = StdioServerParameters(
                command=sys.executable,
                args=["-m", "keel.agents.sandbox.launch", json.dumps(spec)],
                env={"PATH": "/usr/bin:/bin", "PYTHONPATH": here},  # the launcher's; the sandbox gets `env` only
            )
            read, write = await stack.enter_async_context(stdio_client(params))
            s = await stack.enter_async_context(ClientSession(read, write))
            await s.initialize()
            yield s
        return
    assert server.url is not None
    import httpx2

    async with (
        httpx2.AsyncClient(headers=dict(env), timeout=limits.wall_s) as http,
        streamable_http_client(server.url, http_client=http) as (read, write),
        ClientSession(read, write) as s,
    ):
        await s.initialize()
        yield s


async def list_tools(
    server: McpTool,
    env: Mapping[str, str] = {},
    limits: Limits = Limits(),  # noqa: B008
    sandbox: Sandbox | None = None,
) -> list[dict[str, Any]]:
    async with session(server, env, limits, sandbox) as s:
        listed = await s.list_tools()
    return [{"name": t.name, "description": t.description or "", "parameters": t.input_schema} for t in listed.tools]


async def call_tool(
    server: McpTool, name: str, args: dict[str, Any], env: Mapping[str, str], limits: Limits,
    sandbox: Sandbox | None = None,
) -> tuple[bool, str]:  # fmt: skip
    """(ok, text): the tool's text content joined; ok False when the server says it is an error."""
    async with session(server, env, limits, sandbox) as s:
        result = await s.call_tool(name, args, read_timeout_seconds=limits.wall_s)
    parts = []
    for item in result.content:
        text = getattr(item, "text", None)
        parts.append(text if isinstance(text, str) else item.model_dump_json())
    if result.structured_content is not None and not parts:
        parts.append(json.dumps(result.structured_content))
    return not result.is_error, "\n".join(parts)
