"""Server-side tools in a chat call: `keel_tools: ["lookup", "pay"]` in the body (extra_body in the SDKs)
makes the call an agent run. The stage (prompt slot, after auth and prompt rendering) runs the loop, each
model step a pipeline call of its own (traced, limited, priced), and answers the client with the run's
last turn, streamed or not. Tool calls of the client's own tools end the run there and reach the client
as today. A run that waits for an approval answers with a message naming the run and the call to approve;
it goes on without the client (GET /api/agents/runs/RUN).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from keel.agents.loop import Caller, Runs
from keel.errors import InvalidRequest
from keel.gateway.call import Call, Reply
from keel.gateway.pipeline import Handler
from keel.types import ChatEvent, ChatRequest, Finish, Start, Text, ToolCallDelta, Usage, UsageEvent
from keel.wire import openai_chat as wire

FIELD = "keel_tools"


class AgentStage:
    def __init__(self, runs: Runs) -> None:
        self._runs = runs

    async def __call__(self, call: Call, next: Handler) -> Reply:
        request = call.request
        if not isinstance(request, ChatRequest) or FIELD not in request.extra:
            return await next(call)
        names = request.extra[FIELD]
        if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
            raise InvalidRequest(f"'{FIELD}' is a non-empty list of registered tool names.", FIELD)
        assert call.principal is not None  # the auth slot ran
        body = wire.request_json(request, request.model, stream=False)
        body.pop(FIELD, None)
        run_body = {"model": request.model, "messages": body["messages"], "tools": names,
                    "client_tools": body.get("tools") or []}  # fmt: skip
        caller = Caller(call.principal, call.allowed, f"key:{call.principal.key_id}")
        run = await self._runs.start(caller, run_body)
        d = run.data
        record = call.trace
        record.provider, record.model = "keel:agent", request.model
        record.tags["keel.agent_run"] = run.id
        if run.state == "waiting":
            asks = ", ".join(p["call_id"] for p in d["pending"])
            text = f"[keel] Run {run.id} is waiting for approval of tool call(s) {asks}; follow it at /api/agents/runs/{run.id}."
            return Reply(_events(run.id, request.model, text, [], "stop"), call.t0)
        if run.state == "failed":
            return Reply(
                _events(run.id, request.model, f"[keel] Run {run.id} stopped: {d['error']}", [], "stop"), call.t0
            )
        handoff = d.get("handoff") or []
        return Reply(
            _events(run.id, request.model, d.get("answer"), handoff, "tool_calls" if handoff else "stop"), call.t0
        )


async def _events(
    run_id: str, model: str, text: str | None, calls: list[dict[str, object]], finish: str
) -> AsyncIterator[ChatEvent]:
    yield Start("chatcmpl-" + run_id, model)
    if text:
        yield Text(text)
    for i, c in enumerate(calls):
        fn = c["function"]
        assert isinstance(fn, dict)
        yield ToolCallDelta(i, str(c["id"]), str(fn["name"]), str(fn["arguments"]))
    yield Finish(finish)
    yield UsageEvent(Usage())
