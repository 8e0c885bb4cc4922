"""Agent runs: the tool loop above the pipeline, with its state in the store so a restart loses nothing.

A run alternates model steps (one pipeline call each: authenticated as the run's key, routed, limited,
cached, traced and priced like any call) and tool calls (validated against the tool's schema, decided by
its policy, rate-limited, executed at most once), until the model answers, `max_steps`, the deadline or
the cost budget. A tool whose policy says `approve` leaves its call `pending` and the run `waiting`;
once every pending call is decided (approved, denied or expired), the runs worker (or whoever approved, in
this process) claims the run and goes on. A call runs only after the one conditional move to `running`
succeeds (a call that needs no approval is stored by that move: one commit), and with its id as the HTTP
Idempotency-Key; a call found `running` after a crash is never run again: the model hears that its outcome
is unknown; a pending call with no row never ran, and is proposed again.

Every model step and tool call is a span of the run's trace, and a step of the run's durable record
(`keel runs show`). A tool call's audit is two entries: `tool.run` (who, which tool, the arguments),
committed in one transaction with the claim, before the tool starts, so a crash mid-tool leaves evidence; and
`tool.result` (ok, size, egress) committed in one transaction with the call's outcome, before the model hears it
(`audit.tool_outcomes: fast`: without waiting for PostgreSQL's WAL flush; the claim and `tool.run` always do).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any, Literal

import orjson

from keel.agents.approvals import decide as decide_call
from keel.agents.budgets import ToolBudgets
from keel.agents.definitions import AgentSpec, owner_roles, parse_agent
from keel.agents.executor import Executor, ToolResult
from keel.agents.policy import Subject, decide
from keel.agents.tools import ToolSpec, parse_spec
from keel.audit.log import AuditLog
from keel.errors import InvalidRequest, KeelError
from keel.gateway.call import Call
from keel.gateway.pipeline import Handler
from keel.store.protocols import CallRow, Store
from keel.store.protocols.agents import CallClaim, CallOutcome, RunRow
from keel.traces.spans import child_span
from keel.types import Principal, Span, TraceRecord
from keel.wire import openai_chat as wire

log = logging.getLogger("keel.agents")
Emit = Callable[[dict[str, Any]], Awaitable[None]]
MAX_STEPS, MAX_SECONDS = 8, 600.0
RUN_LEASE_S = 120.0  # a `running` run untouched this long lost its process: another claims it


async def _quiet(event: dict[str, Any]) -> None:
    return None


@dataclass(frozen=True, slots=True)
class Caller:
    principal: Principal
    allowed: tuple[str, ...] | None
    actor: str  # who, for the audit log: key:<id> or admin
    source_ip: str | None = None
    roles: tuple[str, ...] = ()  # the caller's roles, when the edge knows them (tool policies' `roles`)


def _principal_json(c: Caller) -> dict[str, Any]:
    p = c.principal
    return {"tenant": p.tenant, "key_id": p.key_id, "key_name": p.key_name, "user": p.user, "regions": p.regions,
            "priority": p.priority, "max_priority": p.max_priority, "allowed": c.allowed, "actor": c.actor,
            "roles": list(c.roles)}  # fmt: skip


def _caller(data: dict[str, Any]) -> Caller:
    p = data["principal"]
    regions = tuple(p["regions"]) if p.get("regions") is not None else None
    principal = Principal(p["tenant"], p["key_id"], p.get("key_name"), p.get("user"), regions, p.get("priority", 0),
                          p.get("max_priority", 0))  # fmt: skip
    allowed = tuple(p["allowed"]) if p.get("allowed") is not None else None
    return Caller(principal, allowed, p.get("actor") or f"key:{p['key_id']}", roles=tuple(p.get("roles") or ()))


class Runs:
    """Start, advance, decide and resume runs. One per process; the edges and the runs worker share it."""

    def __init__(
        self, store: Store, pipeline: Callable[[], Handler], executor: Executor, audit: AuditLog, put_span: Callable[[Span], None],
        put_record: Callable[[TraceRecord], None], budgets: ToolBudgets, *, durable_outcomes: bool = True,
    ) -> None:  # fmt: skip
        self._store, self._pipeline, self._exec, self._audit = store, pipeline, executor, audit
        self._put_span, self._put_record = put_span, put_record
        self._budgets = budgets
        self._durable = durable_outcomes  # False: a call's outcome and tool.result skip the WAL flush wait
        self._fresh: dict[str, CallRow] = {}  # calls this process just stored, not waiting for anyone
        self.on_pending: Callable[[CallRow], None] | None = None  # a call now waits for a person (the webhook)
        self._specs: dict[tuple[str, bytes], ToolSpec] = {}
        self._mine: set[str] = set()  # runs this process is advancing now
        self._store_down = False

    # ---- tools -------------------------------------------------------------------------------------

    def tool(self, tenant: str, name: str) -> ToolSpec | None:
        """The tool as stored now; parsed (and its schema checked) once per version of its spec."""
        row = self._store.get_tool(tenant, name)
        if row is None:
            return None
        key = (name, orjson.dumps(row.spec, option=orjson.OPT_SORT_KEYS))
        spec = self._specs.get(key)
        if spec is None:
            if len(self._specs) >= 4096:
                self._specs.clear()
            spec = self._specs[key] = parse_spec({**row.spec, "name": name})
        return spec

    async def tools(self, tenant: str, names: list[str]) -> list[ToolSpec | None]:
        """`tool` for each name, read in one trip off the event loop (each is a store read)."""
        return await asyncio.to_thread(lambda: [self.tool(tenant, n) for n in names])

    # ---- starting and advancing --------------------------------------------------------------------

    async def start(self, caller: Caller, body: dict[str, Any], emit: Emit = _quiet) -> RunRow:
        """A new run of `body` ({model, messages | input, tools, max_steps, max_seconds, max_cost_usd}), advanced
        until it answers, fails or waits."""
        data = await asyncio.to_thread(self._new_run, caller, body)
        now = time.time()
        run = RunRow(data["id"], caller.principal.tenant, "running", data, now, now)
        await asyncio.to_thread(self._store.put_run, run)
        self._mine.add(run.id)
        await emit({"type": "run.started", "run_id": run.id, "trace_id": data["trace_id"]})
        return await self._advance(run, emit)

    def _named(self, tenant: str, body: dict[str, Any]) -> tuple[dict[str, Any], AgentSpec | None]:
        """`body` with a named agent's settings filled in (its alias, tools, step limit, system prompt)."""
        name = body.get("agent")
        if name is None:
            return body, None
        row = self._store.get_agent(tenant, name) if isinstance(name, str) else None
        if row is None:
            raise InvalidRequest(f"No agent '{name}' for this tenant (keel agents add).", "agent")
        if body.get("model") is not None or body.get("tools") is not None:
            raise InvalidRequest(
                "A named agent brings its model and tools: give 'agent' or 'model', not both.", "agent"
            )
        agent = parse_agent({**row.spec, "name": row.name})
        out = {**body, "model": agent.model, "tools": list(agent.tools)}
        asked = body.get("max_steps")  # at most the agent's own limit; a bad value is refused below
        out["max_steps"] = (
            agent.max_steps if asked is None else min(asked, agent.max_steps) if type(asked) is int else asked
        )
        if agent.system:
            messages = body.get("messages")
            if messages is None and isinstance(body.get("input"), str):
                messages = [{"role": "user", "content": body["input"]}]
            if isinstance(messages, list):
                out["messages"] = [{"role": "system", "content": agent.system}, *messages]
        return out, agent

    def _new_run(self, caller: Caller, body: dict[str, Any]) -> dict[str, Any]:
        body, agent = self._named(caller.principal.tenant, body)
        client_tools = body.get("client_tools") or []
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise InvalidRequest("'model' names the alias the run's model steps call.", "model")
        messages = body.get("messages")
        if messages is None and isinstance(body.get("input"), str):
            messages = [{"role": "user", "content": body["input"]}]
        if not isinstance(messages, list) or not messages:
            raise InvalidRequest("Give 'input' (a string) or 'messages' (a non-empty list).", "input")
        names = body.get("tools") or []
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names) or len(names) > 64:
            raise InvalidRequest("'tools' is a list of at most 64 registered tool names.", "tools")
        for n in names:
            if self.tool(caller.principal.tenant, n) is None:
                raise InvalidRequest(f"Tool '{n}' is not registered for this tenant (keel tools add).", "tools")
        max_steps = body.get("max_steps", MAX_STEPS)
        if type(max_steps) is not int or not 1 <= max_steps <= 64:
            raise InvalidRequest("'max_steps' must be an integer from 1 to 64.", "max_steps")
        seconds = body.get("max_seconds", MAX_SECONDS)
        if not isinstance(seconds, int | float) or not 0 < seconds <= 86400:
            raise InvalidRequest("'max_seconds' must be a number of seconds up to 86400.", "max_seconds")
        budget = body.get("max_cost_usd")
        if budget is not None and (not isinstance(budget, int | float) or budget <= 0):
            raise InvalidRequest("'max_cost_usd' must be a positive number.", "max_cost_usd")
        wire.parse_request({"model": model, "messages": messages})  # the messages' shape, checked now
        run_id = "run_" + secrets.token_hex(12)
        return {
            "id": run_id, "model": model, "messages": messages, "tools": names, "max_steps": max_steps,
            "deadline": time.time() + float(seconds), "max_cost_usd": budget, "cost_usd": 0.0,
            "principal": _principal_json(caller), "trace_id": "trc_" + secrets.token_hex(12),
            "started_at": time.time(), "steps": [], "pending": [], "answer": None, "error": None,
            "client_tools": client_tools, "agent": agent.name if agent else None,
            "roles": sorted({*caller.roles, *owner_roles(self._store, caller.principal), *(agent.roles if agent else ())}),
        }  # fmt: skip

    async def _advance(self, run: RunRow, emit: Emit) -> RunRow:
        data, caller = run.data, _caller(run.data)
        try:
            while True:
                if data["pending"]:
                    waiting = await self._settle(run.id, caller, data, emit)
                    if waiting:
                        return await self._save(run, "waiting", data)
                steps = sum(1 for s in data["steps"] if s["kind"] == "model")
                over = self._over(data, steps)
                if over is not None:
                    data["error"] = over
                    await emit({"type": "run.failed", "run_id": run.id, "error": over})
                    return await self._save(run, "failed", data, final=True)
                answered = await self._model_step(run.id, caller, data, emit)
                run = await self._save(run, "running", data)
                if answered:
                    await emit({"type": "run.completed", "run_id": run.id, "answer": data["answer"]})
                    return await self._save(run, "done", data, final=True)
        except KeelError as err:
            data["error"] = err.message
            await emit({"type": "run.failed", "run_id": run.id, "error": err.message})
            return await self._save(run, "failed", data, final=True)
        finally:
            self._mine.discard(run.id)
            for key in [k for k in self._fresh if k.startswith(run.id + ":")]:
                del self._fresh[key]  # left by a step that failed before its calls were settled

    def _over(self, data: dict[str, Any], steps: int) -> str | None:
        if steps >= data["max_steps"]:
            return f"max_steps ({data['max_steps']}) reached without an answer"
        if time.time() > data["deadline"]:
            return "the run's time limit passed"
        if data.get("max_cost_usd") is not None and data["cost_usd"] >= data["max_cost_usd"]:
            return f"the run's budget (${data['max_cost_usd']}) is spent"
        return None

    async def _save(self, run: RunRow, state: str, data: dict[str, Any], final: bool = False) -> RunRow:
        row = RunRow(run.id, run.tenant, state, data, run.created_at, time.time())
        await asyncio.to_thread(self._store.put_run, row)
        if final:
            self._put_record(self._record(row))
        return row

    def _record(self, run: RunRow) -> TraceRecord:
        d = run.data
        return TraceRecord(
            id=d["trace_id"], started_at=d["started_at"], endpoint="agent", tenant=run.tenant,
            key_id=d["principal"]["key_id"], alias=d["model"], session=run.id, tags={"keel.agent_run": run.id},
            status="ok" if run.state == "done" else "error", error_message=d.get("error"), cost_usd=d["cost_usd"],
            latency_ms=(time.time() - d["started_at"]) * 1000,
        )  # fmt: skip

    def _span(self, data: dict[str, Any], kind: str, name: str, started: float, **kw: Any) -> None:
        record = TraceRecord(id=data["trace_id"], started_at=data["started_at"], tenant=data["principal"]["tenant"])
        self._put_span(child_span(record, kind, name, started, time.time(), **kw))  # type: ignore[arg-type]

    # ---- a model step ------------------------------------------------------------------------------

    async def _model_step(self, run_id: str, caller: Caller, data: dict[str, Any], emit: Emit) -> bool:
        """One pipeline call; True when the model answered (no tool calls)."""
        tenant = caller.principal.tenant
        specs = await self.tools(tenant, data["tools"])
        body = {"model": data["model"], "messages": data["messages"]}
        if specs:
            body["tools"] = [s.function() for s in specs if s is not None]
        if data.get("client_tools"):
            body["tools"] = [*body.get("tools", []), *data["client_tools"]]
        request = wire.parse_request(body)
        n = sum(1 for s in data["steps"] if s["kind"] == "model") + 1
        started = time.time()
        record = TraceRecord(id="trc_" + secrets.token_hex(12), started_at=started, alias=data["model"],
                             session=run_id, tags={"keel.agent_run": run_id, "keel.agent_step": n})  # fmt: skip
        call = Call(request, record, principal=caller.principal, allowed=caller.allowed, user=caller.principal.user,
                    session=run_id, tags={"keel.agent_run": run_id})  # fmt: skip
        await emit({"type": "step.started", "run_id": run_id, "step": n})
        reply = await self._pipeline()(call)
        response = await reply.collect()
        cost = record.cost_usd or 0.0
        data["cost_usd"] += cost
        calls: list[dict[str, Any]] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in response.tool_calls
        ]
        message: dict[str, Any] = {"role": "assistant", "content": response.content}
        if calls:
            message["tool_calls"] = calls
        data["messages"].append(message)
        usage = response.usage
        step = {"kind": "model", "n": n, "trace_id": record.id, "content": response.content, "tool_calls": calls,
                "input_tokens": usage.input_tokens if usage else None,
                "output_tokens": usage.output_tokens if usage else None, "cost_usd": cost, "started_at": started,
                "ended_at": time.time()}  # fmt: skip
        data["steps"].append(step)
        self._span(data, "model", f"step {n}: {data['model']}", started, usage=usage, cost_usd=cost,
                   attributes={"step": n, "call_trace_id": record.id, "tool_calls": [c["function"]["name"] for c in calls]})  # fmt: skip
        await emit({"type": "step.completed", "run_id": run_id, "step": n, "content": response.content,
                    "tool_calls": calls})  # fmt: skip
        client = {t.get("function", {}).get("name") for t in data.get("client_tools") or []}
        if not calls or any(c["function"]["name"] in client for c in calls):
            # an answer, or a call of a tool the client runs: the turn goes back to the client as it is
            data["answer"] = response.content
            data["handoff"] = [c for c in calls if c["function"]["name"] in client]
            return True
        known = {s.name: s for s in specs if s is not None}  # read for this step already
        data["pending"] = [await self._propose(run_id, caller, data, c, emit, known) for c in calls]
        return False

    async def _propose(
        self, run_id: str, caller: Caller, data: dict[str, Any], call: dict[str, Any], emit: Emit,
        known: dict[str, ToolSpec],
    ) -> dict[str, str]:  # fmt: skip
        """Store the model's tool call with the policy's decision; {call id, tool call id} for _settle."""
        tenant, fn = caller.principal.tenant, call["function"]
        name, now = fn["name"], time.time()
        key = f"{run_id}:{call['id']}"  # the idempotency key: stable across restarts of this run
        state, result, args, ttl = "allowed", None, {}, 3600.0
        spec = known.get(name) if name in data["tools"] else None
        if spec is None:
            state, result = "failed", f"error: '{name}' is not a tool of this run"
        else:
            ttl = spec.policy.approval_ttl_s
            try:
                args = orjson.loads(fn["arguments"] or "{}")
                problem = _invalid(spec, args)
            except orjson.JSONDecodeError:
                problem = "the arguments are not JSON"
            if problem is not None:
                state, result = "failed", f"error: invalid arguments for '{name}': {problem}"
            else:
                verdict = decide(spec, args, Subject(data.get("agent"), frozenset(data.get("roles") or ())))
                refused = None if verdict == "deny" else await self._budgets.admit(tenant, spec)
                if verdict == "deny":
                    state, result = "denied", f"error: tool '{name}' is denied by policy"
                elif refused is not None:
                    state, result = "failed", refused
                elif verdict == "approve":
                    state = "pending"
        row = CallRow(key, run_id, tenant, name, args if isinstance(args, dict) else {}, state, result,  # type: ignore[arg-type]
                      "policy" if state in ("denied", "allowed") else None, now + ttl, now, now)  # fmt: skip
        if state == "allowed":  # stored by its claim, with tool.run: one commit (a restart before it re-proposes it)
            self._fresh[row.id] = row
        else:
            row = await asyncio.to_thread(self._store.add_call, row)
            if row.state != "pending":
                self._fresh[row.id] = row  # only this process moves it now: _settle need not read it back
        if state in ("denied", "pending"):
            action = "tool.denied" if state == "denied" else "approval.requested"
            await self._audit.record(
                caller.actor, action, name, tenant=tenant, arguments=args, result={"call": key, "run": run_id}
            )
        if state == "pending":
            if row.state == "pending" and self.on_pending is not None:
                self.on_pending(row)
            await emit({"type": "approval.required", "run_id": run_id, "call_id": key, "tool": name, "arguments": args})
        return {"call_id": key, "tool_call_id": call["id"]}

    # ---- settling tool calls -----------------------------------------------------------------------

    async def _settle(self, run_id: str, caller: Caller, data: dict[str, Any], emit: Emit) -> bool:
        """Run or refuse each pending tool call; True while any still waits for an approver."""
        rows = [self._fresh.pop(p["call_id"], None) or await asyncio.to_thread(self._store.get_call, p["call_id"])
                or await self._again(run_id, caller, data, p, emit) for p in data["pending"]]  # fmt: skip
        now = time.time()
        for i, row in enumerate(rows):
            assert row is not None
            if row.state == "pending" and now > row.expires_at:
                moved = await asyncio.to_thread(self._store.move_call, row.id, ("pending",), "expired", now=now,
                                        result=f"error: the approval for '{row.tool}' expired", decided_by="expiry")  # fmt: skip
                rows[i] = moved or await asyncio.to_thread(self._store.get_call, row.id)  # decided meanwhile
        if any(r is not None and r.state == "pending" for r in rows):
            return True
        for pending, row in zip(data["pending"], rows, strict=True):
            assert row is not None
            text = await self._result(caller, data, row, emit)
            data["messages"].append({"role": "tool", "tool_call_id": pending["tool_call_id"], "content": text})
        data["pending"] = []
        return False

    async def _again(
        self, run_id: str, caller: Caller, data: dict[str, Any], pending: dict[str, str], emit: Emit
    ) -> CallRow | None:
        """A call proposed without approval whose claim never happened (this run's process stopped before it):
        it never ran, so it is proposed again (decided by the tool's policy now) and stored by its claim."""
        calls = [c for m in data["messages"] if m["role"] == "assistant" for c in m.get("tool_calls") or ()]
        call = next((c for c in reversed(calls) if c["id"] == pending["tool_call_id"]), None)
        if call is None:
            return None
        known = {s.name: s for s in await self.tools(caller.principal.tenant, data["tools"]) if s is not None}
        again = await self._propose(run_id, caller, data, call, emit, known)
        key = again["call_id"]
        return self._fresh.pop(key, None) or await asyncio.to_thread(self._store.get_call, key)

    async def _result(self, caller: Caller, data: dict[str, Any], row: CallRow, emit: Emit) -> str:
        started = time.time()
        if row.state in ("approved", "allowed"):
            (spec,) = await self.tools(row.tenant, [row.tool])
            if await self._claim(caller, row, spec, started):
                return await self._execute(caller, data, replace(row, state="running", updated_at=started), spec, emit)
            now_row = await asyncio.to_thread(self._store.get_call, row.id)
            row = now_row if now_row is not None else row
        if row.state == "running":
            text = f"error: the call of '{row.tool}' was interrupted; its outcome is unknown and it is not retried"
        else:
            text = row.result or f"error: tool '{row.tool}' was {row.state}"
        self._step_tool(data, row, row.state, text, started)
        self._span(data, "tool", row.tool, started, status="error",
                   attributes={"call_id": row.id, "state": row.state, "arguments": row.arguments, "result": text[:1000]})  # fmt: skip
        return text

    async def _claim(self, caller: Caller, row: CallRow, spec: ToolSpec | None, now: float) -> bool:
        """Move the call to running (at most once: one claimant wins); with its `tool.run` entry in the same
        durable transaction, so the evidence is on disk before the tool starts. A removed tool is claimed
        alone (it will not run: its outcome says so)."""
        claim = CallClaim(row.id, (row.state,), now, row if row.state == "allowed" else None)
        if spec is None:
            if row.state == "allowed":  # not stored yet (it needed no approval)
                await asyncio.to_thread(self._store.add_call, row)
            return await asyncio.to_thread(self._store.move_call, row.id, claim.sources, "running", now=now) is not None
        entry = await self._audit.claim(claim, caller.actor, "tool.run", row.tool, tenant=row.tenant,
                                        arguments=row.arguments, source_ip=caller.source_ip,
                                        result={"call": row.id, "run": row.run_id})  # fmt: skip
        return entry is not None

    async def _execute(
        self, caller: Caller, data: dict[str, Any], row: CallRow, spec: ToolSpec | None, emit: Emit
    ) -> str:
        started = time.time()
        if spec is None:
            result = ToolResult(False, f"error: tool '{row.tool}' was removed")
        else:
            await emit({"type": "tool.started", "run_id": row.run_id, "call_id": row.id, "tool": row.tool})
            result = await self._exec.run(row.tenant, spec, row.arguments, row.id, caller.actor)
        text = (
            result.output
            if result.ok
            else (result.output if result.output.startswith("error") else f"error: {result.output}")
        )
        state: Literal["done", "failed"] = "done" if result.ok else "failed"
        # the call's outcome and its tool.result entry commit in one transaction, before the model hears it
        await self._audit.record(caller.actor, "tool.result", row.tool, tenant=row.tenant, source_ip=caller.source_ip,
                                 result={"ok": result.ok, "call": row.id, "chars": len(text), **_egress(result)},
                                 durable=self._durable, outcome=CallOutcome(row.id, state, text, time.time()))  # fmt: skip
        self._step_tool(data, row, state, text, started)
        self._span(data, "tool", row.tool, started, status="ok" if result.ok else "error",
                   attributes={"call_id": row.id, "arguments": row.arguments, "result": text[:1000],
                               "approved_by": row.decided_by})  # fmt: skip
        await emit({"type": "tool.completed", "run_id": row.run_id, "call_id": row.id, "ok": result.ok, "output": text})
        return text

    def _step_tool(self, data: dict[str, Any], row: CallRow, state: str, text: str, started: float) -> None:
        data["steps"].append({"kind": "tool", "call_id": row.id, "tool": row.tool, "arguments": row.arguments,
                              "state": state, "decided_by": row.decided_by, "result": text[:4000],
                              "started_at": started, "ended_at": time.time()})  # fmt: skip

    # ---- one call outside a run (Keel's MCP server) -----------------------------------------------------

    async def call_tool(self, caller: Caller, name: str, args: Any) -> tuple[bool, str]:
        """Validate, decide and run one tool call of the caller's tenant, audited: (ok, scrubbed output). A
        tool whose policy asks for approval is refused here: approvals pause runs, and this call has none."""
        tenant = caller.principal.tenant
        spec = await asyncio.to_thread(self.tool, tenant, name)
        if spec is None:
            return False, f"error: no tool '{name}'"
        problem = _invalid(spec, args)
        if problem is not None:
            return False, f"error: invalid arguments for '{name}': {problem}"
        owner = await asyncio.to_thread(owner_roles, self._store, caller.principal)
        verdict = decide(spec, args, Subject(None, frozenset((*caller.roles, *owner))))
        if verdict != "allow":
            why = "is denied by policy" if verdict == "deny" else "needs a person's approval: start it in an agent run"
            await self._audit.record(caller.actor, "tool.denied", name, tenant=tenant, arguments=args,
                                     source_ip=caller.source_ip, result={"policy": verdict, "via": "mcp"})  # fmt: skip
            return False, f"error: tool '{name}' {why}"
        refused = await self._budgets.admit(tenant, spec)
        if refused is not None:
            return False, refused
        now = time.time()
        key = "mcp_" + secrets.token_hex(12)
        row = CallRow(key, "mcp", tenant, name, args, "running", None, "policy", now, now, now)
        await asyncio.to_thread(self._store.add_call, row)
        _, result = await asyncio.gather(
            self._audit.record(caller.actor, "tool.run", name, tenant=tenant, arguments=args, source_ip=caller.source_ip,
                               result={"call": key, "via": "mcp"}),
            self._exec.run(tenant, spec, args, key, caller.actor),
        )  # fmt: skip
        text = result.output
        outcome = CallOutcome(key, "done" if result.ok else "failed", text, time.time())
        await self._audit.record(caller.actor, "tool.result", name, tenant=tenant, source_ip=caller.source_ip,
                                 result={"ok": result.ok, "call": key, "via": "mcp", "chars": len(text),
                                         **_egress(result)}, durable=self._durable, outcome=outcome)  # fmt: skip
        return result.ok, text

    # ---- approvals and resumption ------------------------------------------------------------------

    async def decide(
        self, call_id: str, approve: bool, *, by: str, tenant: str | None = None
    ) -> tuple[CallRow | None, bool]:
        """Approve or deny a pending call (keel.agents.approvals.decide)."""
        return await asyncio.to_thread(
            lambda: decide_call(self._store, self._audit, call_id, approve, by=by, tenant=tenant)
        )

    async def resume(self, run_id: str, emit: Emit = _quiet) -> RunRow | None:
        """Claim a waiting run whose calls are all decided (or a running one whose process died) and advance
        it; None when it is not this process's to take."""
        now = time.time()
        run = await asyncio.to_thread(self._store.get_run, run_id)
        if run is None or run_id in self._mine:
            return None
        if run.state == "waiting":
            calls = [await asyncio.to_thread(self._store.get_call, p["call_id"]) for p in run.data["pending"]]
            if any(c is not None and c.state == "pending" and c.expires_at > now for c in calls):
                return None
            stale = None
        elif run.state == "running":
            stale = now - RUN_LEASE_S
            if run.updated_at > stale:
                return None
        else:
            return None
        claimed = await asyncio.to_thread(
            self._store.claim_run, run_id, run.state, "running", now=now, updated_before=stale
        )
        if claimed is None:
            return None
        self._mine.add(run_id)
        await emit({"type": "run.resumed", "run_id": run_id})
        return await self._advance(claimed, emit)

    async def sweep(self) -> None:
        """The runs worker: resume every run that can go on. A store outage is logged once, and waited out."""
        try:
            found = [
                r
                for state in ("waiting", "running")
                for r in await asyncio.to_thread(self._store.list_runs, None, state, 100)
            ]
        except Exception as exc:
            if not self._store_down:
                log.warning(
                    "agent runs: the store is unreachable (%s); runs resume when it is back", type(exc).__name__
                )
            self._store_down = True
            return
        self._store_down = False
        for run in found:
            with contextlib.suppress(KeelError):
                await self.resume(run.id)


def _egress(result: ToolResult) -> dict[str, Any]:
    """The audit entry's network part: what the tool's sandbox tried to reach, and the proxy's answer."""
    return {"network": list(result.network)} if result.network else {}


_VALIDATORS: dict[bytes, Any] = {}  # a tool's parameter schema (canonical JSON) -> its compiled validator


def _invalid(spec: ToolSpec, args: Any) -> str | None:
    import jsonschema  # type: ignore[import-untyped]

    if not isinstance(args, dict):
        return "the arguments must be a JSON object"
    key = orjson.dumps(spec.parameters, option=orjson.OPT_SORT_KEYS)
    validator = _VALIDATORS.get(key)
    if validator is None:
        if len(_VALIDATORS) >= 1024:
            _VALIDATORS.clear()
        validator = _VALIDATORS[key] = jsonschema.Draft202012Validator(spec.parameters)
    error = jsonschema.exceptions.best_match(validator.iter_errors(args))
    return None if error is None else f"{'/'.join(map(str, error.absolute_path)) or '(root)'}: {error.message}"[:500]


__all__ = ["Caller", "Runs", "parse_spec"]
