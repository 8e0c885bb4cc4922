"""MCP both ways. The official `mcp` SDK's client lists and calls Keel's tools at /mcp with a virtual key:
an allowed code tool runs (in the sandbox), a denied tool is refused, an unauthenticated client gets 401,
every call is in the audit log. Keel, as a client, calls a stdio MCP server it starts inside the sandbox,
with a declared secret as its environment variable, scrubbed from what comes back."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import httpx
import pytest

from keel.agents import mcp_client
from keel.agents.sandbox import Limits, Sandbox
from keel.agents.sandbox.cgroups import RunCgroup
from keel.agents.tools import McpTool
from keel.audit.log import AuditLog
from keel.testing import FakeUpstream

from ..conftest import Gateway, base_config
from .test_runs import MASTER

SERVER = (Path(__file__).parent / "mini_mcp_server.py").read_text()


@pytest.fixture
def agw(make_gateway: Any, up: FakeUpstream, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Gateway:
    monkeypatch.setenv("KEEL_MASTER_KEY", MASTER)
    return make_gateway(base_config(up, f"sqlite:///{tmp_path}/keel.db", tmp_path))  # type: ignore[no-any-return]


def add(gw: Gateway, spec: dict[str, Any]) -> None:
    r = httpx.post(
        gw.url + "/api/agents/tools", json={"tenant": "t1", **spec}, headers={"authorization": f"Bearer {gw.admin}"}
    )
    assert r.status_code == 201, r.text


async def sdk_session(gw: Gateway, key: str) -> tuple[list[str], Any, Any]:
    import httpx2
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    async with (
        httpx2.AsyncClient(headers={"authorization": f"Bearer {key}"}, timeout=30) as http,
        streamable_http_client(gw.url + "/mcp", http_client=http) as (read, write),
        ClientSession(read, write) as s,
    ):
        await s.initialize()
        listed = await s.list_tools()
        square = await s.call_tool("square", {"n": 12})
        wipe = await s.call_tool("wipe", {})
        return sorted(t.name for t in listed.tools), square, wipe


def test_the_official_client_lists_and_calls_keels_tools(agw: Gateway) -> None:
    add(agw, {"name": "square", "kind": "code", "description": "n squared",
              "parameters": {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]},
              "code": {"source": "print(args['n'] ** 2)"}})  # fmt: skip
    add(
        agw, {"name": "wipe", "kind": "http", "http": {"url": "http://127.0.0.1:9/wipe"}, "policy": {"default": "deny"}}
    )
    names, square, wipe = asyncio.run(sdk_session(agw, agw.key))
    print(f"\n  listed {names}; square(12) -> {square.content[0].text.strip()}; wipe -> {wipe.content[0].text}")
    assert names == ["square", "wipe"]
    assert (square.is_error, square.content[0].text.strip()) == (False, "144")
    assert wipe.is_error and "denied by policy" in wipe.content[0].text

    r = httpx.post(agw.url + "/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
    assert r.status_code == 401
    entries = [json.loads(x) for x in AuditLog(agw.runtime.store).export()]
    runs = [(e["action"], e["target"]) for e in entries if e["action"] in ("tool.run", "tool.denied")]
    assert runs == [("tool.run", "square"), ("tool.denied", "wipe")]
    assert all(e["actor"].startswith("key:") for e in entries if e["action"] in ("tool.run", "tool.denied"))


def test_keel_calls_a_stdio_mcp_server_inside_the_sandbox(agw: Gateway) -> None:
    secret = "mini-SECRET-0c2f1d"
    r = httpx.put(agw.url + "/api/agents/secrets/mini", json={"tenant": "t1", "value": secret},
                  headers={"authorization": f"Bearer {agw.admin}"})  # fmt: skip
    assert r.status_code == 201
    add(agw, {"name": "whoami", "kind": "mcp", "parameters": {"type": "object", "properties": {"say": {"type": "string"}}},
              "mcp": {"transport": "stdio", "command": ["/usr/bin/python3", "-I", "-S", "-c", SERVER]},
              "secrets": [{"name": "mini", "env": "MINI_TOKEN"}], "timeout_s": 30})  # fmt: skip

    async def call() -> Any:
        import httpx2
        from mcp import ClientSession
        from mcp.client.streamable_http import streamable_http_client

        async with (
            httpx2.AsyncClient(headers={"authorization": f"Bearer {agw.key}"}, timeout=60) as http,
            streamable_http_client(agw.url + "/mcp", http_client=http) as (read, write),
            ClientSession(read, write) as s,
        ):
            await s.initialize()
            return await s.call_tool("whoami", {"say": "hi"}, read_timeout_seconds=60)

    result = asyncio.run(call())
    text = result.content[0].text
    print(f"\n  the stdio server saw: {text}")
    assert not result.is_error, text
    seen = json.loads(text)
    assert seen["uid"] >= 3_000_000 and seen["etc_shadow"] is False and seen["token_set"] is True
    assert "etc" not in seen["root_dir"] and "work" not in seen["root_dir"]
    assert seen["echo"] == "hi" and seen["token_echo"] == "[secret]"  # the server printed the secret: scrubbed
    assert secret not in text


class Noted(Sandbox):
    """The sandbox, noting the cgroups it makes (to see them gone afterwards)."""

    made: list[RunCgroup]

    async def cgroup(self, limits: Limits) -> RunCgroup | None:
        cg = await super().cgroup(limits)
        self.made = [*getattr(self, "made", []), *([cg] if cg is not None else [])]
        return cg


def test_a_stdio_mcp_servers_children_share_its_memory_cgroup() -> None:
    """Six children of a stdio MCP server, each under its RLIMIT_AS (256 MiB), touch 150 MiB each: only the
    server's cgroup sums them (OOM kills past 256 MiB); without it (no Sandbox given: rlimits only) all
    six are fed. The cgroup goes when the session ends."""
    sandbox = Noted()
    if sandbox.cgroup_problem is not None:  # this machine allows them (cgroup v1, root): say so, loudly
        pytest.fail(f"the sandbox runs without per-run cgroups here: {sandbox.cgroup_problem}")
    server = McpTool(transport="stdio", command=("/usr/bin/python3", "-I", "-S", "-c", SERVER))
    limits = Limits(wall_s=60, cpu_s=20, memory_mb=256, processes=16)

    def call(box: Sandbox | None) -> dict[str, Any]:
        ok, text = asyncio.run(mcp_client.call_tool(server, "whoami", {"spread": [6, 150]}, {}, limits, box))
        assert ok, text
        seen: dict[str, Any] = json.loads(text)
        return seen

    boxed, bare = call(sandbox), call(None)
    print(f"\n  6 x 150 MiB children: {boxed['killed']} killed in the server's cgroup, {bare['killed']} without one")
    assert boxed["killed"] > 0 and bare["killed"] == 0
    (made,) = sandbox.made
    assert len(made.paths) == 3 and not any(os.path.exists(p) for p in made.paths)
