"""Runs one tool call: reveals the secrets the tool declares (and only those), sends them where the spec
says (an HTTP header or query parameter, an environment variable in the sandbox), runs the tool within its
timeout and output cap, and scrubs every revealed secret from what comes back: the model, the trace, the
client and the audit log only ever see the scrubbed text.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson

from keel.agents import mcp_client
from keel.agents.sandbox import Limits, Sandbox, SandboxUnavailable
from keel.agents.secrets import SecretError, Vault, scrub
from keel.agents.tools import ToolSpec


@dataclass(frozen=True, slots=True)
class ToolResult:
    ok: bool
    output: str  # scrubbed and capped; an error's message when not ok
    network: tuple[str, ...] = ()  # a code tool's allow-list proxy decisions ("host:port allowed|refused: why")


class Executor:
    def __init__(self, vault: Vault, sandbox: Sandbox) -> None:
        self._vault = vault
        self._sandbox = sandbox
        self._http: aiohttp.ClientSession | None = None

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.close()

    async def run(self, tenant: str, spec: ToolSpec, args: dict[str, Any], call_id: str, actor: str) -> ToolResult:
        try:
            values = {s.name: self._vault.reveal(tenant, s.name, tool=spec.name, actor=actor) for s in spec.secrets}
        except SecretError as exc:
            return ToolResult(False, str(exc))
        egress: list[str] = []
        try:
            ok, text = await asyncio.wait_for(self._dispatch(spec, args, call_id, values, egress), spec.timeout_s + 1.0)
        except TimeoutError:
            ok, text = False, f"tool '{spec.name}' timed out after {spec.timeout_s:g} s"
        except SandboxUnavailable as exc:
            ok, text = False, f"tool '{spec.name}' cannot run: {exc}"
        except (aiohttp.ClientError, OSError) as exc:
            ok, text = False, f"tool '{spec.name}' failed: {type(exc).__name__}: {exc}"
        except Exception as exc:  # an MCP server's protocol error, and the like: the model hears it
            ok, text = False, f"tool '{spec.name}' failed: {type(exc).__name__}: {str(exc)[:500]}"
        text = scrub(text, values.values())
        if len(text) > spec.max_output:
            text = text[: spec.max_output] + f"\n[output truncated at {spec.max_output} characters]"
        return ToolResult(ok, text, tuple(egress))

    async def _dispatch(
        self, spec: ToolSpec, args: dict[str, Any], call_id: str, values: Mapping[str, str], egress: list[str]
    ) -> tuple[bool, str]:
        env = {s.env: s.format.replace("{value}", values[s.name]) for s in spec.secrets if s.env}
        limits = Limits(wall_s=spec.timeout_s, output_bytes=spec.max_output * 4)
        if spec.kind == "code":
            assert spec.code is not None
            limits = Limits(wall_s=spec.timeout_s, output_bytes=spec.max_output * 4, cpu_s=spec.code.cpu_s,
                            memory_mb=spec.code.memory_mb, cpus=spec.code.cpus)  # fmt: skip
            out = await self._sandbox.run_python(
                spec.code.source, args, env=env, limits=limits, network=spec.code.network
            )
            egress += [
                f"{d.host}:{d.port} " + ("allowed" if d.allowed else f"refused: {d.reason}") for d in out.network
            ]
            if out.timed_out:
                return False, f"timed out after {spec.timeout_s:g} s"
            if out.exit_code != 0 and not out.truncated:
                return False, f"exit {out.exit_code}: {out.stderr.strip()[-2000:]}"
            return True, out.stdout
        if spec.kind == "mcp":
            assert spec.mcp is not None
            return await mcp_client.call_tool(spec.mcp, spec.mcp.tool or spec.name, args, env, limits, self._sandbox)
        return await self._http_call(spec, args, call_id, values)

    async def _http_call(
        self, spec: ToolSpec, args: dict[str, Any], call_id: str, values: Mapping[str, str]
    ) -> tuple[bool, str]:
        assert spec.http is not None
        url, rest = spec.http.url, dict(args)
        for key in list(rest):
            mark = "{" + key + "}"
            if mark in url:
                url = url.replace(mark, quote(str(rest.pop(key)), safe=""))
        headers = {**spec.http.headers, "Idempotency-Key": call_id, "User-Agent": "keel-tools"}
        query = {k: _text(rest.pop(k)) for k in spec.http.query if k in rest}
        for s in spec.secrets:
            value = s.format.replace("{value}", values[s.name])
            if s.header:
                headers[s.header] = value
            elif s.query:
                query[s.query] = value
        body = None
        if spec.http.method in ("GET", "DELETE"):
            query.update({k: _text(v) for k, v in rest.items()})
        else:
            body = orjson.dumps(rest)
            headers["Content-Type"] = "application/json"
        if self._http is None:
            self._http = aiohttp.ClientSession()
        timeout = aiohttp.ClientTimeout(total=spec.timeout_s)
        async with self._http.request(
            spec.http.method, url, params=query or None, data=body, headers=headers, timeout=timeout,
            allow_redirects=False,
        ) as resp:  # fmt: skip
            raw = await resp.content.read(spec.max_output * 4)
            text = raw.decode("utf-8", "replace")
            if resp.status >= 400:
                return False, f"HTTP {resp.status}: {text}"
            return True, text


def _text(v: Any) -> str:
    return v if isinstance(v, str) else orjson.dumps(v).decode()
