"""The sandbox's network allow-list: a code tool that lists `network: [host:port]` reaches exactly those
through Keel's proxy on a Unix socket; anything else, a name that resolves to a private address, and a
direct socket stay refused; a tool without the list has no way out at all. Each case prints its outcome."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from keel.agents.sandbox import Limits, Outcome, Sandbox, SandboxUnavailable
from keel.agents.tools import SpecError, parse_spec
from keel.audit.log import AuditLog
from keel.testing import FakeUpstream
from keel.testing.fake_upstream import Script

from ..conftest import Gateway
from .test_runs import admin, agw, completion, keyed  # noqa: F401  (fixtures and helpers)
from .tool_service import ToolService, tool_service

SANDBOX = Sandbox()
LIMITS = Limits(cpu_s=4, wall_s=15, memory_mb=512)


@pytest.fixture(scope="module")
def svc() -> Iterator[ToolService]:
    try:
        asyncio.run(SANDBOX.check())
    except SandboxUnavailable as exc:
        pytest.fail(f"the sandbox cannot run on this machine: {exc}")  # as test_sandbox_escape: never a skip
    with tool_service() as s:
        yield s


def run(code: str, network: list[str]) -> Outcome:
    out = asyncio.run(SANDBOX.run_python(code, {}, limits=LIMITS, network=network))
    print(f"\n--- network={network}\n{out.stdout.strip()}\n{out.stderr.strip()[-300:]}\n{out.network}")
    return out


TRY = "try:\n    {body}\nexcept Exception as e:\n    print('REFUSED', type(e).__name__, e)\n"


def test_a_listed_host_is_reached_through_the_proxy(svc: ToolService) -> None:
    port = int(svc.url.rsplit(":", 1)[1])
    out = run(TRY.format(body=f"s, b = fetch('{svc.url}/echo?q=hello'); print('REACHED', s, b[:60])"),
              [f"127.0.0.1:{port}"])  # fmt: skip
    assert out.exit_code == 0 and "REACHED 200" in out.stdout and "hello" in out.stdout
    assert [(d.host, d.port, d.allowed) for d in out.network] == [("127.0.0.1", port, True)]


def test_what_the_list_does_not_name_stays_out(svc: ToolService) -> None:
    port = int(svc.url.rsplit(":", 1)[1])
    code = (
        TRY.format(body="connect('127.0.0.1', 6379); print('REACHED redis')")
        + TRY.format(body=f"connect('127.0.0.1', {port + 1 if port < 65535 else 1}); print('REACHED other port')")
        + TRY.format(body=f"connect('localhost', {port}); print('REACHED localhost')")
        + TRY.format(body="import socket; socket.create_connection(('127.0.0.1', 5432)); print('REACHED direct')")
    )
    out = run(code, [f"127.0.0.1:{port}", f"localhost:{port}"])
    assert out.exit_code == 0 and "REACHED" not in out.stdout and out.stdout.count("REFUSED") == 4, out.stdout
    assert "not in the tool's network allow-list" in out.stdout
    assert "not a public address" in out.stdout  # a name may not lead to the gateway's loopback services
    assert all(not d.allowed for d in out.network)


def test_without_a_list_there_is_no_way_out(svc: ToolService) -> None:
    code = (
        "import os\nprint('SOCKET' if os.path.exists('/run/keel/net.sock') else 'NO SOCKET', 'connect' in globals())\n"
    )
    out = run(code, [])
    assert out.stdout.strip() == "NO SOCKET False" and out.network == ()


def test_network_entries_are_checked() -> None:
    base = {"name": "t", "kind": "code", "code": {"source": "print(1)"}}
    assert parse_spec({**base, "code": {"source": "x", "network": ["api.example.com:443", "[::1]:80"]}}).code
    for bad in ("api.example.com", "host:0", ":80", "host:http"):
        with pytest.raises(SpecError, match="host:port"):
            parse_spec({**base, "code": {"source": "x", "network": [bad]}})


MCP_SERVER = (Path(__file__).parent / "mini_mcp_server.py").read_text()


def test_a_stdio_mcp_server_gets_the_same_allow_list(svc: ToolService) -> None:
    from keel.agents import mcp_client
    from keel.agents.tools import McpTool

    port = int(svc.url.rsplit(":", 1)[1])
    command = ("/usr/bin/python3", "-I", "-S", "-c", MCP_SERVER)
    server = McpTool(transport="stdio", command=command, network=(f"127.0.0.1:{port}",))

    async def call(s: McpTool, target: str) -> dict[str, Any]:
        ok, text = await mcp_client.call_tool(s, "whoami", {"connect": target}, {}, LIMITS)
        assert ok, text
        return json.loads(text)  # type: ignore[no-any-return]

    allowed = asyncio.run(call(server, f"127.0.0.1:{port}"))
    refused = asyncio.run(call(server, "127.0.0.1:6379"))
    print(f"\nstdio MCP server: listed -> {allowed['connect']!r}, Redis -> {refused['connect']!r}")
    assert allowed["net_socket"] == "/run/keel/net.sock" and allowed["connect"] == "HTTP/1.1 200 Connection established"
    assert refused["connect"] == "HTTP/1.1 403 Forbidden"
    plain = McpTool(transport="stdio", command=command)
    ok, text = asyncio.run(mcp_client.call_tool(plain, "whoami", {}, {}, LIMITS))
    assert ok and json.loads(text)["net_socket"] == ""  # no list, no socket


def test_a_runs_network_decisions_are_in_its_audit_entry(svc: ToolService, agw: Gateway, up: FakeUpstream) -> None:  # noqa: F811
    port = int(svc.url.rsplit(":", 1)[1])
    code = TRY.format(body=f"connect('127.0.0.1', {port}).close(); connect('127.0.0.1', 6379)") + "print('done')\n"
    spec = {"tenant": "t1", "name": "net", "kind": "code", "code": {"source": code, "network": [f"127.0.0.1:{port}"]}}
    with admin(agw) as a:
        assert a.post("/api/agents/tools", json=spec).status_code == 201
    up.script(Script(body_override=completion(("c1", "net", {}))), Script(text="ok"))
    with keyed(agw) as k:
        run = k.post("/api/agents/runs", json={"model": "gpt-4o-mini", "input": "go", "tools": ["net"]}).json()
    assert run["state"] == "done", run
    (entry,) = [e for e in AuditLog(agw.runtime.store).entries() if e.action == "tool.result"]
    network = json.loads(entry.detail)["result"]["network"]
    print(f"\naudited: {network}")
    assert network[0] == f"127.0.0.1:{port} allowed"
    assert network[1].startswith("127.0.0.1:6379 refused: ") and "allow-list" in network[1]
