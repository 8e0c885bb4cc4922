"""Replaying a run's model steps: each step is sent again through the pipeline with the conversation as
it was recorded before it (the recorded tool results, so no tool runs and nothing has side effects), and
the new answer is compared with the recorded one: the same tool calls (names and arguments) and the same
text, or the first step where they diverge.

`replay_live` instead starts a new run from the recorded run's opening messages, under today's tools,
policies, limits and named agent: its tools really run (side effects happen again, approvals are asked
again), and its steps, model and tool alike, are compared with the recorded ones."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import Any

import orjson

from keel.agents.loop import Runs, _caller
from keel.gateway.call import Call
from keel.gateway.pipeline import Handler
from keel.store.protocols.agents import RunRow
from keel.types import TraceRecord
from keel.wire import openai_chat as wire


@dataclass(frozen=True, slots=True)
class StepReplay:
    n: int
    same: bool
    recorded: str
    replayed: str


def _summary(content: Any, calls: list[dict[str, Any]]) -> str:
    if calls:
        return "; ".join(f"{c['function']['name']}({_args(c['function']['arguments'])})" for c in calls)
    return f"says: {content}"


def _args(text: str) -> str:
    try:
        return orjson.dumps(orjson.loads(text or "{}"), option=orjson.OPT_SORT_KEYS).decode()
    except orjson.JSONDecodeError:
        return text


async def replay(pipeline: Handler, run: RunRow, tools: list[dict[str, Any]]) -> list[StepReplay]:
    d, caller = run.data, _caller(run.data)
    messages: list[dict[str, Any]] = d["messages"]
    out = []
    assistant_at = [i for i, m in enumerate(messages) if m.get("role") == "assistant"]
    for n, at in enumerate(assistant_at, start=1):
        body: dict[str, Any] = {"model": d["model"], "messages": messages[:at]}
        if tools:
            body["tools"] = tools
        record = TraceRecord(id="trc_" + secrets.token_hex(12), started_at=time.time(), alias=d["model"],
                             session=run.id, tags={"keel.agent_replay": run.id, "keel.agent_step": n})  # fmt: skip
        call = Call(wire.parse_request(body), record, principal=caller.principal, allowed=caller.allowed,
                    session=run.id, tags={"keel.agent_replay": run.id})  # fmt: skip
        response = await (await pipeline(call)).collect()
        new_calls = [{"function": {"name": c.name, "arguments": c.arguments}} for c in response.tool_calls]
        recorded = _summary(messages[at].get("content"), messages[at].get("tool_calls") or [])
        replayed = _summary(response.content, new_calls)
        out.append(StepReplay(n, recorded == replayed, recorded, replayed))
    return out


def _step(step: dict[str, Any]) -> str:
    if step["kind"] == "model":
        return "model " + _summary(step.get("content"), step.get("tool_calls") or [])
    return f"tool {step['tool']}({_args(orjson.dumps(step.get('arguments') or {}).decode())}) {step['state']}"


async def replay_live(runs: Runs, run: RunRow) -> tuple[RunRow, list[StepReplay]]:
    """A new run from `run`'s opening messages, live; (the new run, its steps against the recorded ones)."""
    d, caller = run.data, _caller(run.data)
    messages: list[dict[str, Any]] = d["messages"]
    first = next((i for i, m in enumerate(messages) if m.get("role") == "assistant"), len(messages))
    body: dict[str, Any] = {"messages": messages[:first], "client_tools": d.get("client_tools") or []}
    if d.get("agent"):
        body["agent"] = d["agent"]  # today's definition brings its system prompt again
        body["messages"] = [m for m in messages[:first] if m.get("role") != "system"] or messages[:first]
    else:
        body |= {"model": d["model"], "tools": d["tools"], "max_steps": d["max_steps"]}
    new = await runs.start(caller, body)
    before, after = [_step(s) for s in d["steps"]], [_step(s) for s in new.data["steps"]]
    out = [
        StepReplay(n, a == b, a or "(no step)", b or "(no step)")
        for n, (a, b) in enumerate(zip(before + [""] * (len(after) - len(before)),
                                       after + [""] * (len(before) - len(after)), strict=True), start=1)
    ]  # fmt: skip
    return new, out
