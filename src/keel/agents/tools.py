"""A tenant's tool: what the model sees (name, description, JSON-schema parameters), how Keel runs it
(`http`, `code` in the sandbox, or `mcp`: a tool of a registered MCP server), its bounds (timeout, output
cap, rate limits and budgets on the shared counters), the secrets it may use and where they go, and its policy.

Specs arrive as JSON (admin API, CLI YAML) and are checked whole here (`parse_spec`): unknown keys are
refused, and each error names its field.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from keel.agents.policy import Condition
from keel.agents.sandbox.netproxy import parse_entry

NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
Action = Literal["allow", "deny", "approve"]


class SpecError(ValueError):
    def __init__(self, message: str, field: str | None) -> None:
        super().__init__(message)
        self.message, self.field = message, field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SecretUse(_Strict):
    """Where a declared secret goes: an HTTP header or query parameter, or an environment variable."""

    name: str = Field(min_length=1, max_length=128)
    header: str | None = None
    query: str | None = None
    env: str | None = None
    format: str = "{value}"  # e.g. "Bearer {value}"

    @model_validator(mode="after")
    def one_place(self) -> SecretUse:
        if sum(x is not None for x in (self.header, self.query, self.env)) != 1:
            raise ValueError("a secret goes to exactly one of header, query or env")
        if "{value}" not in self.format:
            raise ValueError("format must contain {value}")
        return self


class Rule(_Strict):
    """Applies when its condition holds and the run's subject matches: one of `roles` (the caller's or the
    named agent's), one of `agents` (the run's named agent). Unset: any."""

    when: str | None = None  # a condition on the arguments: "amount > 100"
    roles: tuple[str, ...] | None = None
    agents: tuple[str, ...] | None = None
    action: Action

    @field_validator("when")
    @classmethod
    def parses(cls, v: str | None) -> str | None:
        if v is not None:
            Condition.parse(v)
        return v


class Policy(_Strict):
    """The first rule whose condition holds decides; else `default`."""

    default: Action = "allow"
    rules: tuple[Rule, ...] = ()
    approval_ttl_s: float = Field(3600.0, gt=0, le=30 * 86400)


class ToolLimits(_Strict):
    """Per-tool limits on the shared counters (keel.agents.budgets), per tenant."""

    rpm: int | None = Field(None, ge=1, le=1_000_000)  # calls per minute
    calls_day: int | None = Field(None, ge=1, le=100_000_000)  # calls per UTC day
    usd_day: float | None = Field(None, gt=0)  # spend per UTC day, at usd_per_call a call
    usd_per_call: float = Field(0.0, ge=0)

    @model_validator(mode="after")
    def priced(self) -> ToolLimits:
        if self.usd_day is not None and not self.usd_per_call:
            raise ValueError("usd_day needs usd_per_call (what one call of the tool costs)")
        return self


class HttpTool(_Strict):
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "POST"
    url: str = Field(pattern=r"^https?://", max_length=2048)  # {param} placeholders are filled, URL-quoted
    headers: dict[str, str] = {}
    query: tuple[str, ...] = ()  # arguments sent in the query string whatever the method (OpenAPI `in: query`)


class CodeTool(_Strict):
    source: str = Field(min_length=1, max_length=256 * 1024)  # sees `args`; prints its result
    memory_mb: int = Field(256, ge=16, le=4096)
    cpu_s: int = Field(5, ge=1, le=300)
    cpus: float = Field(1.0, gt=0, le=16)  # CPU time per second over all its processes (the run's cgroup)
    network: tuple[str, ...] = Field((), max_length=32)  # host:port it may reach, through the sandbox's proxy

    @field_validator("network")
    @classmethod
    def reachable(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for entry in v:
            parse_entry(entry)
        return v


class McpTool(_Strict):
    transport: Literal["stdio", "http"]
    command: tuple[str, ...] = ()  # stdio: the server's command line, run in the sandbox
    url: str | None = None  # http: the server's streamable HTTP endpoint
    tool: str | None = None  # the server's tool name (default: this tool's name)
    network: tuple[str, ...] = Field((), max_length=32)  # stdio: host:port it may reach (sandbox netproxy)

    @model_validator(mode="after")
    def where(self) -> McpTool:
        if self.transport == "stdio" and not self.command:
            raise ValueError("a stdio MCP server needs its command")
        if self.transport == "http" and not self.url:
            raise ValueError("an http MCP server needs its url")
        if self.network and self.transport != "stdio":
            raise ValueError("network applies to a stdio server's sandbox")
        for entry in self.network:
            parse_entry(entry)
        return self


class ToolSpec(_Strict):
    name: str
    kind: Literal["http", "code", "mcp"]
    description: str = Field("", max_length=4096)
    parameters: dict[str, Any] = {"type": "object", "properties": {}}
    timeout_s: float = Field(10.0, gt=0, le=300)
    max_output: int = Field(16_384, ge=64, le=1024 * 1024)
    rate_per_minute: int | None = Field(None, ge=1, le=1_000_000)  # the same as limits.rpm
    limits: ToolLimits | None = None
    secrets: tuple[SecretUse, ...] = ()
    policy: Policy = Policy()
    http: HttpTool | None = None
    code: CodeTool | None = None
    mcp: McpTool | None = None

    @field_validator("name")
    @classmethod
    def named(cls, v: str) -> str:
        if not NAME.match(v):
            raise ValueError("1 to 64 letters, digits, '_' or '-'")
        return v

    @field_validator("parameters")
    @classmethod
    def a_schema(cls, v: dict[str, Any]) -> dict[str, Any]:
        import jsonschema  # type: ignore[import-untyped]

        try:
            jsonschema.Draft202012Validator.check_schema(v)
        except jsonschema.SchemaError as exc:
            raise ValueError(f"not a JSON schema: {exc.message}") from None
        if v.get("type") != "object":
            raise ValueError("a tool's parameters are an object schema (type: object)")
        return v

    @model_validator(mode="after")
    def section(self) -> ToolSpec:
        if getattr(self, self.kind) is None:
            raise ValueError(f"a tool of kind '{self.kind}' needs its '{self.kind}' section")
        if self.kind == "http" and any(s.env for s in self.secrets):
            raise ValueError("an http tool's secrets go to a header or a query parameter, not env")
        if self.kind != "http" and any(s.header or s.query for s in self.secrets):
            raise ValueError(f"a {self.kind} tool's secrets go to env")
        return self

    def function(self) -> dict[str, Any]:
        """The OpenAI tool definition the model sees."""
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": self.parameters},
        }


def parse_spec(data: Any) -> ToolSpec:
    if not isinstance(data, dict):
        raise SpecError("a tool spec is an object: name, kind, description, parameters, ...", None)
    try:
        return ToolSpec.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or None
        return _raise(f"{field or 'spec'}: {err['msg']}", field)


def _raise(message: str, field: str | None) -> ToolSpec:
    raise SpecError(message, field)
