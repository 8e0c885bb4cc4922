"""An eval run's model calls: each item and each judge call goes through the gateway pipeline as the
run's key, like a live call (auth, prompt, route, limits, cache, failover, invoke, trace, cost), tagged
`eval_run` (and `eval_item`, `eval_judge`). The answer comes back as an assertion `Output` carrying
the call's latency, cost and trace id, read from the call's own trace record.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from keel.cache.stage import CacheState
from keel.errors import KeelError, RateLimited, Unavailable
from keel.evals.assertions import Output
from keel.gateway.call import Call
from keel.gateway.directives import Directives
from keel.gateway.pipeline import Handler
from keel.jobs.calls import Caller, parse
from keel.traces.ids import new_trace_id
from keel.types import ChatRequest, TraceRecord
from keel.wire import openai_chat as wire

CHAT = "/v1/chat/completions"
MAX_WAITS = 8  # a call refused for now (rate limited, saturated) waits its Retry-After at most this often
MAX_WAIT_S = 30.0


class CallFailed(RuntimeError):
    """The gateway answered an item's call with an error; `trace_id` names the call's trace."""

    def __init__(self, message: str, status: int, trace_id: str) -> None:
        super().__init__(message)
        self.status = status
        self.trace_id = trace_id


class GatewayCalls:
    """`cache`: False (the default of a run) skips the response cache, so repeats and reruns measure fresh
    answers; True lets the aliases' cache answer, as for any caller."""

    def __init__(
        self, pipeline: Handler, caller: Caller, run_id: str, *, store_payloads: bool = True, cache: bool = False
    ) -> None:
        self._pipeline = pipeline
        self._caller = caller
        self._run_id = run_id
        self._payloads = store_payloads
        self._directives = None if cache else Directives.parse("skip")

    async def chat(self, body: Mapping[str, Any], tags: Mapping[str, str]) -> Output:
        """The item's answer; CallFailed when the gateway refuses or every target fails."""
        for _ in range(MAX_WAITS):
            try:
                return await self._once(body, tags)
            except (RateLimited, Unavailable) as err:
                wait = err.retry_after or 1.0
                await asyncio.sleep(min(max(wait, 0.05), MAX_WAIT_S))
        return await self._once(body, tags)

    async def _once(self, body: Mapping[str, Any], tags: Mapping[str, str]) -> Output:
        started, trace_id = time.time(), new_trace_id()
        t0 = time.perf_counter()
        try:
            request = parse(CHAT, dict(body))
        except KeelError as err:
            raise CallFailed(err.message, err.status, trace_id) from None
        assert isinstance(request, ChatRequest)
        record = TraceRecord(
            id=trace_id, started_at=started, endpoint="chat", alias=request.model,
            request=dict(body) if self._payloads else None,
        )  # fmt: skip
        all_tags = {"eval_run": self._run_id, **tags}
        c = self._caller
        call = Call(
            request, record, principal=c.principal, allowed=c.allowed, user=c.user, feature=c.feature,
            session=c.session, tags=all_tags, timeout_s=c.timeout_s, asked_priority=c.priority,
        )  # fmt: skip
        if self._directives is not None:
            call.state(CacheState).directives = self._directives
        try:
            reply = await self._pipeline(call)
            response = await reply.collect()
        except (RateLimited, Unavailable):
            raise
        except KeelError as err:
            raise CallFailed(err.message, err.status, trace_id) from None
        raw = wire.response_json(response, response.model or record.model or request.model, int(started))
        message = raw["choices"][0]["message"]
        return Output(
            text=message.get("content") or "",
            tool_calls=tuple(message.get("tool_calls") or ()),
            latency_ms=record.latency_ms if record.latency_ms is not None else (time.perf_counter() - t0) * 1000,
            cost_usd=record.cost_usd or 0.0,
            trace_id=trace_id,
            raw=raw,
            cached=record.cache in ("hit", "semantic", "stale"),
        )

    def judge(self, item: str) -> Callable[..., Any]:
        """The assertions' `Judge` for one item: a call of the grader alias, tagged with the item."""

        async def ask(messages: Sequence[Mapping[str, object]], *, alias: str) -> Output:
            body = {"model": alias, "messages": [dict(m) for m in messages], "temperature": 0}
            try:
                return await self.chat(body, {"eval_item": item, "eval_judge": "1"})
            except CallFailed as err:
                raise RuntimeError(f"{err} (HTTP {err.status}, trace {err.trace_id})") from None

        return ask
