"""The trace slot: the one stage that emits a call's record, exactly once, whatever happens.

The record is written here from the `Call` (attribution, route) and its `Outcome` (usage, cost, status,
the provider's notes); other stages may add their own facts to it, and no stage reads it back.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence

from keel.errors import KeelError
from keel.gateway.call import Call, Outcome, Reply
from keel.gateway.pipeline import Handler
from keel.traces.writer import TraceWriter
from keel.types import ChatRequest, EmbeddingRequest, TraceRecord

Export = Callable[[TraceRecord, ChatRequest | EmbeddingRequest], None]


class TraceStage:
    """Emits the call's record (made at the edge) exactly once, whatever happens.

    Calls refused before authentication are counted, not recorded: an unauthenticated flood must
    not be able to write to the database. Each of `consumers` (the metrics' `observe`, the
    OpenTelemetry exporter's `put`) receives the same records, with the parsed request they may
    describe; each must return at once and never raise.
    """

    def __init__(
        self, writer: TraceWriter, consumers: Sequence[Export] = (), *, max_response_chars: int = 2**20
    ) -> None:
        self._writer = writer
        self._consumers = tuple(consumers)
        self._cap = max_response_chars  # a giant answer is not held a second time, whole, by its record
        self.unauthenticated = 0

    async def __call__(self, call: Call, next: Handler) -> Reply:
        try:
            reply = await next(call)
        except asyncio.CancelledError:
            # An in-process caller (a job past its timeout, a worker handing work back) stopped waiting
            # before an answer: the call may still have cost upstream time, so it is recorded too.
            if call.principal is not None:
                _closed(call.trace, call.t0)
                self._put(call, None)
            raise
        except Exception as exc:
            if call.principal is None:
                self.unauthenticated += 1
                raise
            # No local may hold the error: its traceback keeps this frame, and the cycle would keep the payload.
            internal = None if isinstance(exc, KeelError) else KeelError(f"internal error: {type(exc).__name__}")
            _fail(call.trace, internal or exc, call.t0)  # type: ignore[arg-type]
            self._put(call, None)
            raise
        reply.on_done(lambda outcome: self._emit(call, outcome))
        return reply

    def _emit(self, call: Call, outcome: Outcome) -> None:
        record = call.trace
        record.latency_ms = (time.perf_counter() - call.t0) * 1000
        record.ttft_ms = None if outcome.ttft_s is None else outcome.ttft_s * 1000
        r = outcome.response
        if isinstance(call.request, ChatRequest):
            cap = self._cap
            record.response = {
                "id": r.id,
                "content": _capped(r.content, cap),
                "tool_calls": [
                    {"id": c.id, "name": c.name, "arguments": _capped(c.arguments, cap)} for c in r.tool_calls
                ],
                "finish_reason": r.finish_reason,
            }
            if r.reasoning:  # the thinking text; signatures and redacted blocks are opaque
                thought = "".join(str(b.get("thinking") or "") for b in r.reasoning)
                record.response["reasoning"] = _capped(thought, cap)
        if r.model:
            record.model = r.model
        if outcome.notes:
            record.tags.update(outcome.notes)
        if outcome.status == "cancelled":
            record.status, record.error_kind = "partial", "client_closed"
        elif outcome.error is not None:
            record.status = "partial" if outcome.ttft_s is not None else "error"
            record.error_kind, record.error_message = outcome.error.kind, outcome.error.message
        self._put(call, outcome)

    def _put(self, call: Call, outcome: Outcome | None) -> None:
        record = call.trace
        principal = call.principal
        if principal is not None:
            record.tenant, record.key_id = principal.tenant, principal.key_id
        record.user, record.feature, record.session = call.user, call.feature, call.session
        if call.tags:
            record.tags = {**call.tags, **record.tags}  # the caller's tags, then Keel's own keel.* ones
        if record.route is None and call.plan is not None:
            record.route = call.plan.explain or None
        if outcome is not None:
            _bill(record, outcome)
        self._writer.put(record)
        for consume in self._consumers:
            consume(record, call.request)


def _bill(record: TraceRecord, outcome: Outcome) -> None:
    usage = outcome.billed
    if usage is not None:
        record.input_tokens, record.output_tokens = usage.input_tokens, usage.output_tokens
        record.cached_input_tokens, record.cache_write_tokens = usage.cached_input_tokens, usage.cache_write_tokens
        record.reasoning_tokens = usage.reasoning_tokens
    if outcome.cost_usd is not None:
        record.cost_usd = outcome.cost_usd


def _capped(text: str | None, cap: int) -> str | None:
    if text is None or len(text) <= cap:
        return text
    return f"{text[:cap]}…[truncated by Keel: {len(text) - cap} more characters]"


def _fail(record: TraceRecord, err: KeelError, t0: float) -> None:
    record.status = "error"
    record.error_kind = err.kind
    record.error_message = err.message
    record.http_status = err.status
    record.latency_ms = (time.perf_counter() - t0) * 1000


def _closed(record: TraceRecord, t0: float) -> None:
    record.status, record.error_kind, record.http_status = "error", "client_closed", 499
    record.error_message = "the caller stopped waiting before the call was answered"
    record.latency_ms = (time.perf_counter() - t0) * 1000
