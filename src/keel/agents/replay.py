"""Replaying a run's model steps: each step is sent again through the pipeline with the conversation as
it was recorded before it (the recorded tool results, so no tool runs and nothing has side effects), and
the new answer is compared with the recorded one: the same tool calls (names and arguments) and the same
text, or the first step where they diverge."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import Any

import orjson

from keel.agents.loop import _caller
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
