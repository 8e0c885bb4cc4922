"""Agents' tools, secrets, runs and approvals, and the audit log (api/agents_admin.py). Tools, secrets and
runs take the admin token (any tenant) or a virtual key (its own; a run needs a key: its steps are that
key's calls); the audit log and approvals take the admin token only."""

from __future__ import annotations

from keel.api.openapi.spec import (
    ANY,
    BOOL,
    COMMON_ERRORS,
    EITHER,
    INT,
    NUM,
    OBJ,
    SLUG,
    STR,
    TENANT_Q,
    TIME,
    WINDOW_EDGE,
    Op,
    Schema,
    arr,
    closed,
    enum,
    limit,
    null,
    obj,
    page,
    q,
)

ENTRY: Schema = obj(
    ("seq", "at", "actor", "action", "hash", "prev_hash"),
    seq=INT,
    at=TIME,
    tenant=null(STR),
    actor=STR,
    action=STR,
    target=null(STR),
    detail=ANY,
    detail_json=STR,
    source_ip=null(STR),
    prev_hash=STR,
    hash=STR,
)
VERDICT: Schema = obj(("ok", "checked"), ok=BOOL, checked=INT, bad_seq=null(INT), reason=null(STR))
TOOL: Schema = obj(
    ("tenant", "name", "kind"),
    tenant=STR,
    name=STR,
    kind=enum("http", "code", "mcp"),
    description=null(STR),
    parameters=OBJ,
    timeout_s=NUM,
    policy=OBJ,
    updated_at=TIME,
)
HTTP_TOOL: Schema = closed(
    obj(
        ("url",),
        method=enum("GET", "POST", "PUT", "PATCH", "DELETE"),
        url={"type": "string", "pattern": "^https?://", "maxLength": 2048},
        headers={"type": "object", "additionalProperties": STR},
        query=arr(STR),
    )
)
NETWORK: Schema = arr({"type": "string", "pattern": "^.+:[0-9]{1,5}$"}, maxItems=32)
CODE_TOOL: Schema = closed(
    obj(
        ("source",),
        source={"type": "string", "minLength": 1, "maxLength": 256 * 1024},
        memory_mb={"type": "integer", "minimum": 16, "maximum": 4096},
        cpu_s={"type": "integer", "minimum": 1, "maximum": 300},
        cpus={"type": "number", "exclusiveMinimum": 0, "maximum": 16},
        network=NETWORK,
    )
)
MCP_TOOL: Schema = closed(
    obj(
        ("transport",),
        transport=enum("stdio", "http"),
        command=arr(STR),
        url=null(STR),
        tool=null(STR),
        network=NETWORK,
    )
)
TOOL_COMMON: dict[str, Schema] = {
    "tenant": SLUG,
    "name": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"},
    "description": {"type": "string", "maxLength": 4096},
    "parameters": obj(("type",), type={"const": "object"}),
    "policy": OBJ,
    "timeout_s": {"type": "number", "exclusiveMinimum": 0, "maximum": 300},
    "max_output": {"type": "integer", "minimum": 64, "maximum": 1024 * 1024},
    "rate_per_minute": null({"type": "integer", "minimum": 1, "maximum": 1_000_000}),
    "limits": null(
        closed(
            obj(
                rpm=null({"type": "integer", "minimum": 1, "maximum": 1_000_000}),
                calls_day=null({"type": "integer", "minimum": 1, "maximum": 100_000_000}),
                usd_day=null({"type": "number", "exclusiveMinimum": 0}),
                usd_per_call={"type": "number", "minimum": 0},
            )
        )
    ),
    "secrets": arr(closed(obj(("name",), name=SLUG, header=STR, query=STR, env=STR, format=STR))),
}
TOOL_SPEC: Schema = {
    "oneOf": [
        closed(obj(("name", "kind", kind), **TOOL_COMMON, kind={"const": kind}, **{kind: section}))
        for kind, section in (("http", HTTP_TOOL), ("code", CODE_TOOL), ("mcp", MCP_TOOL))
    ]
}
MESSAGE: Schema = obj(
    ("role", "content"), role=enum("system", "developer", "user", "assistant", "tool"), content=null(STR)
)
SECRET: Schema = obj(("tenant", "name"), tenant=STR, name=STR, key_id=null(STR), created_at=TIME)
RUN: Schema = obj(
    ("id", "tenant", "state", "model"),
    id=STR,
    tenant=STR,
    state=STR,
    model=STR,
    tools=arr(STR),
    answer=null(STR),
    error=null(STR),
    cost_usd=null(NUM),
    trace_id=null(STR),
    pending=arr(STR),
    created_at=TIME,
    updated_at=TIME,
)
FULL_RUN: Schema = {**RUN, "properties": {**RUN["properties"], "steps": arr(OBJ), "messages": arr(OBJ)}}
CALL: Schema = obj(
    ("id", "run_id", "tenant", "tool", "state"),
    id=STR,
    run_id=STR,
    tenant=STR,
    tool=STR,
    arguments=ANY,
    state=STR,
    result=ANY,
    decided_by=null(STR),
    expires_at=null(TIME),
    created_at=TIME,
    updated_at=TIME,
)
DECIDED: Schema = {**CALL, "properties": {**CALL["properties"], "changed": BOOL}}
DELETED: Schema = obj(("deleted",), deleted=STR)
AGENT_NAME: Schema = {
    "type": "string",
    "pattern": "^[A-Za-z0-9_-]{1,64}$",
    "not": {"enum": ["tools", "secrets", "runs"]},
}
AGENT_FIELDS: dict[str, Schema] = {
    "model": {"type": "string", "minLength": 1, "maxLength": 256},
    "tools": arr(SLUG, maxItems=64, description="names of the tenant's registered tools"),
    "max_steps": limit(64),
    "system": null({"type": "string", "maxLength": 32768}),
    "roles": arr(SLUG, maxItems=16, description="roles it acts as (tool policies' rules can name them)"),
    "description": {"type": "string", "maxLength": 4096},
}
AGENT: Schema = obj(("tenant", "name", "model"), tenant=STR, name=STR, updated_at=TIME, **AGENT_FIELDS)
AGENT_SPEC: Schema = closed(obj(("name", "model"), tenant=SLUG, name=AGENT_NAME, **AGENT_FIELDS))
AGENT_REPLACE: Schema = closed(obj(("model",), tenant=SLUG, name=AGENT_NAME, **AGENT_FIELDS))
NAMED_AGENTS: tuple[Op, ...] = (
    Op("GET", "/api/agents", "A tenant's named agents", {200: page(AGENT)}, query=(TENANT_Q,), security=EITHER),
    Op(
        "POST",
        "/api/agents",
        "Create a named agent (409: the name is taken; tools, secrets and runs are refused)",
        {201: AGENT},
        body=AGENT_SPEC,
        query=(TENANT_Q,),
        security=EITHER,
        errors=(*COMMON_ERRORS, 409),
    ),
    Op("GET", "/api/agents/{name}", "One named agent", {200: AGENT}, query=(TENANT_Q,), security=EITHER),
    Op(
        "PUT",
        "/api/agents/{name}",
        "Create or replace a named agent (201 new, 200 replaced)",
        {201: AGENT, 200: AGENT},
        body=AGENT_REPLACE,
        query=(TENANT_Q,),
        security=EITHER,
    ),
    Op("DELETE", "/api/agents/{name}", "Remove a named agent", {200: DELETED}, query=(TENANT_Q,), security=EITHER),
)

AGENTS: tuple[Op, ...] = (
    *NAMED_AGENTS,
    Op(
        "GET",
        "/api/audit",
        "Audit entries in chain order, with their hashes",
        {200: page(ENTRY, next_after=null(INT))},
        query=(
            q("since", WINDOW_EDGE),
            q("until", WINDOW_EDGE),
            q("tenant", SLUG),
            q("after", {"type": "integer", "minimum": 0}, "a seq: the page after it"),
            q("limit", limit(1000)),
        ),
    ),
    Op(
        "GET",
        "/api/audit/verify",
        "Verify the audit log's hash chain (409: broken)",
        {200: VERDICT, 409: VERDICT},
        errors=(401, 403),
    ),
    Op("GET", "/api/agents/tools", "A tenant's tools", {200: page(TOOL)}, query=(TENANT_Q,), security=EITHER),
    Op(
        "POST",
        "/api/agents/tools",
        "Register or replace a tool (201 new, 200 replaced)",
        {201: TOOL, 200: TOOL},
        body=TOOL_SPEC,
        query=(TENANT_Q,),
        security=EITHER,
    ),
    Op("GET", "/api/agents/tools/{name}", "One tool", {200: TOOL}, query=(TENANT_Q,), security=EITHER),
    Op("DELETE", "/api/agents/tools/{name}", "Remove a tool", {200: DELETED}, query=(TENANT_Q,), security=EITHER),
    Op(
        "GET",
        "/api/agents/secrets",
        "A tenant's secrets (names only, never values)",
        {200: page(SECRET)},
        query=(TENANT_Q,),
        security=EITHER,
    ),
    Op(
        "PUT",
        "/api/agents/secrets/{name}",
        "Set a secret (encrypted with the master key; never shown again)",
        {201: SECRET},
        body=obj(("value",), value={"type": "string", "minLength": 1, "maxLength": 16384}, tenant=SLUG),
        query=(TENANT_Q,),
        security=EITHER,
    ),
    Op("DELETE", "/api/agents/secrets/{name}", "Remove a secret", {200: DELETED}, query=(TENANT_Q,), security=EITHER),
    Op(
        "POST",
        "/api/agents/runs",
        "Run an agent to its answer, a pending approval or a limit (stream: true: server-sent events)",
        {200: FULL_RUN},
        body=obj(
            model=SLUG,
            agent=SLUG,
            input={"type": "string", "minLength": 1},
            messages=arr(MESSAGE, minItems=1),
            tools=arr(SLUG, description="names of the tenant's registered tools"),
            max_steps=limit(64),
            max_seconds={"type": "number", "exclusiveMinimum": 0, "maximum": 86400},
            stream=BOOL,
        )
        | {"anyOf": [{"required": ["input"]}, {"required": ["messages"]}]},
        security=EITHER,
        streams=True,
        errors=(*COMMON_ERRORS, 429, 502, 503, 504),
    ),
    Op(
        "GET",
        "/api/agents/runs",
        "Agent runs, newest first",
        {200: page({**RUN, "properties": {**RUN["properties"], "steps": INT}})},
        query=(TENANT_Q, q("state"), q("limit", {"type": "integer", "minimum": 1, "maximum": 500})),
        security=EITHER,
    ),
    Op(
        "GET",
        "/api/agents/runs/{run_id}",
        "One run with its steps and tool calls",
        {200: {**FULL_RUN, "properties": {**FULL_RUN["properties"], "calls": arr(CALL)}}},
        security=EITHER,
    ),
    Op(
        "GET",
        "/api/approvals",
        "Tool calls waiting for (or past) a decision",
        {200: page(CALL)},
        query=(q("tenant"), q("state", STR, "pending (default), approved, denied, expired …")),
    ),
    Op(
        "POST",
        "/api/approvals/{call_id}/approve",
        "Approve a pending tool call (409: already decided)",
        {200: DECIDED, 409: DECIDED},
        body=obj(by=STR),
        body_required=False,
    ),
    Op(
        "POST",
        "/api/approvals/{call_id}/deny",
        "Deny a pending tool call (409: already decided)",
        {200: DECIDED, 409: DECIDED},
        body=obj(by=STR),
        body_required=False,
    ),
)

NAMED: dict[str, Schema] = {
    "AuditEntry": ENTRY,
    "AuditVerdict": VERDICT,
    "Tool": TOOL,
    "ToolSpec": TOOL_SPEC,
    "Secret": SECRET,
    "AgentRun": RUN,
    "AgentRunDetail": FULL_RUN,
    "ToolCall": CALL,
}
