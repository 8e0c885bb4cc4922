"""The failover stage: walks the route plan, then its fallback chain, under one deadline.

Levels, in order: the plan's first target (`primary`); its other targets (`target`, e.g. the same
model on another provider); each fallback alias (`alias:<name>`, a degraded model); an expired
cached answer (`stale`, served by the cache stage around this one, which raises to let it); the
alias's static answer (`static`); then a clean error. What happens after a failure is decided by one
table keyed on `ErrorKind` (`ACTIONS`). Breakers skip open targets without paying their latency; a
half-open breaker's probe is one attempt. Failed attempts before the commit carry no usage.

A self-hosted server that is loading its model (gateway/warmth.py) is `warming`, not failing: the call
is held until it is ready when its deadline outlasts `cold_start_wait_s`, else goes to the next level
at once; either way its trace carries `keel.cold_start`, and the breaker hears nothing of it.

A stream that breaks or stalls after content resumes on the levels left (gateway/resume.py): the
attempt that broke and the one that continued are both billed. Errors kept for the final answer
carry no traceback: its frames would keep the request's payload alive until a full collection.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Callable, Collection, Iterator
from dataclasses import dataclass
from enum import Enum
from functools import partial
from typing import Any

from keel.errors import AllTargetsFailed, ErrorKind, KeelError, ProviderError
from keel.gateway.call import Call, Outcome, Reply
from keel.gateway.health import HealthBook
from keel.gateway.pipeline import Handler
from keel.gateway.resume import Diverged, continuation, spent, with_prefill
from keel.gateway.warmth import Warmth, WarmthBook, may_be_cold
from keel.store.protocols import BreakerStore, Permit
from keel.types import ChatEvent, ChatRequest, Finish, RoutePlan, Start, Target, Text, Usage, UsageEvent
from keel.wire.base import Oversized


class Action(Enum):
    retry = "retry"  # the same target again, after a backoff or Retry-After
    next = "next"  # the next target
    bigger = "bigger"  # only targets with a larger context window
    stop = "stop"  # the caller's request is the problem: pass the error on


ACTIONS: dict[ErrorKind, Action] = {
    ErrorKind.rate_limited: Action.retry,  # if Retry-After fits under the cap, else next
    ErrorKind.overloaded: Action.retry,
    ErrorKind.server: Action.retry,
    ErrorKind.timeout: Action.next,
    ErrorKind.network: Action.next,
    ErrorKind.protocol: Action.next,
    ErrorKind.auth: Action.next,  # our credentials for that provider, not the caller's
    ErrorKind.not_found: Action.next,
    ErrorKind.context_length: Action.bigger,
    ErrorKind.bad_request: Action.stop,  # from the upstream; Keel's codec refusing a shape moves on (_action)
    ErrorKind.content_filter: Action.stop,
}
# Kinds that say something about the target's health (the others are about the request).
BREAKER_KINDS = frozenset(
    {ErrorKind.rate_limited, ErrorKind.overloaded, ErrorKind.server, ErrorKind.timeout}
    | {ErrorKind.network, ErrorKind.protocol, ErrorKind.auth}
)
DEFAULT_RETRY_AFTER_S = 1.0  # a final 429 or 503 always tells the client when to come back


def _action(err: ProviderError) -> Action:
    if err.error_kind is ErrorKind.bad_request and err.upstream_status is None:
        # Keel's codec refused this request's shape for this target (nothing was sent): another may take it.
        return Action.next
    return ACTIONS[err.error_kind]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    retries_per_target: int = 1
    max_attempts: int = 6
    backoff_s: float = 0.1
    backoff_max_s: float = 2.0
    retry_after_cap_s: float = 2.0
    rate_limit_floor_s: float = 1.0  # a 429 without Retry-After waits at least this before its retry
    total_timeout_s: float = 120.0
    max_total_timeout_s: float = 600.0


PlanFor = Callable[[Call, str], RoutePlan]  # a fallback alias → its plan for this call
_OWN_LEVELS = frozenset({"primary", "target"})  # the plan's own targets; the others are degraded answers


@dataclass(slots=True)
class FailoverState:
    """Per-call state of the failover slot (`call.state(FailoverState)`), made only off the common path.

    `stale_held`: a stage above holds an expired answer for when every target fails (the cache slot
    sets it); the alias's static answer then gives way to it. `degraded`: the level that served when
    it was not one of the plan's own targets (a fallback alias, `static`), for stages above to read.
    """

    stale_held: bool = False
    degraded: str | None = None


class FailoverStage:
    def __init__(
        self,
        policy: RetryPolicy,
        breakers: BreakerStore,
        health: HealthBook,
        plan_for: PlanFor,
        *,
        prefill: Collection[str] = (),
        rng: random.Random | None = None,
        warmth: WarmthBook | None = None,
    ) -> None:
        self._policy = policy
        self._breakers = breakers
        self._health = health
        self._plan_for = plan_for
        self._prefill = frozenset(prefill)  # providers that continue a trailing assistant message
        self._rng = rng or random.Random()
        self._warmth = warmth or None  # None when no server is tracked: the common path asks nothing
        self._outcomes: list[tuple[str, bool, float]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def __call__(self, call: Call, next: Handler) -> Reply:
        assert call.plan is not None
        loop = asyncio.get_running_loop()
        budget = min(call.timeout_s or self._policy.total_timeout_s, self._policy.max_total_timeout_s)
        call.deadline = loop.time() + budget
        walk = _Walk()
        levels = self._levels(call, walk)
        for level, target in levels:
            reply = await self._try_target(call, next, level, target, walk)
            if reply is not None:
                if call.plan.resume and isinstance(call.request, ChatRequest) and call.request.stream:
                    reply.resumable(partial(self._resume, call, next, walk, levels))
                return reply
            if walk.stopped is not None:
                break
        static = self._static(call, walk)
        if static is not None:
            return static
        err = _final_error(walk)
        del walk, levels  # the error's traceback keeps this frame: nothing in it may lead back to the error
        try:
            raise err
        finally:
            del err

    def _levels(self, call: Call, walk: _Walk) -> Iterator[tuple[str, Target]]:
        assert call.plan is not None
        for i, target in enumerate(call.plan.targets):
            yield ("primary" if i == 0 else "target"), target
        for alias in call.plan.fallbacks:
            try:
                plan = self._plan_for(call, alias)
            except KeelError as err:
                walk.log.append({"level": f"alias:{alias}", "outcome": "skipped", "why": err.message})
                continue
            for target in plan.targets:
                yield f"alias:{alias}", target

    async def _try_target(self, call: Call, next: Handler, level: str, target: Target, walk: _Walk) -> Reply | None:
        loop = asyncio.get_running_loop()
        if walk.min_window is not None and (target.context_window or 0) <= walk.min_window:
            walk.skip(level, target, "context window not larger than the one exceeded")
            return None
        warm = self._warmth.get(target.provider) if self._warmth is not None else None
        if warm is not None and not warm.ready and not await self._held(call, level, target, warm, walk):
            return None
        permit = await self._breakers.allow(target.key, time.time())  # wall clock: breakers may be shared across hosts
        if not permit:
            walk.skip(level, target, "circuit breaker open")
            return None
        retries = 0 if permit is Permit.probe else self._policy.retries_per_target
        cold: str | None = None  # the error kind of an attempt that found the server cold
        for attempt in range(1 + retries):
            if len(walk.errors) + walk.breaks >= self._policy.max_attempts or loop.time() >= call.deadline:  # type: ignore[operator]
                walk.stopped = walk.stopped or "budget"
                return None
            call.target = target
            started = loop.time()
            try:
                reply = await next(call)
            except ProviderError as err:
                err.provider = err.provider or target.provider
                if warm is not None and may_be_cold(err) and await warm.recheck():
                    cold = err.kind  # loading, not failing: no breaker failure
                    break
                self._failed(target, err, started, level, walk)
                delay = self._retry_delay(err, retries - attempt, call.deadline - loop.time())  # type: ignore[operator]
                if delay is not None:
                    await asyncio.sleep(delay)
                call.waited_s += loop.time() - started
                if delay is None:
                    return None
                continue
            self._served(call, reply, level, target, walk, started)
            return reply
        if cold is None or warm is None:
            return None
        walk.log.append({"level": level, "target": target.key, "outcome": "cold", "kind": cold})
        if await self._held(call, level, target, warm, walk):  # held once, then tried again
            return await self._try_target(call, next, level, target, walk)
        return None

    async def _held(self, call: Call, level: str, target: Target, warm: Warmth, walk: _Walk) -> bool:
        """`target`'s server is not ready: wait for it if the call's deadline allows (once per target and
        call); True when it is ready, False to move on. Wakes a scaled-to-zero server either way."""
        loop = asyncio.get_running_loop()
        warm.wake()
        key = target.key
        hold = 0.0 if key in walk.held else warm.hold_for(call.deadline - loop.time())  # type: ignore[operator]
        waited = 0.0
        if hold > 0:
            walk.held += (key,)
            started = loop.time()
            ready = await warm.wait_ready(hold)
            waited = loop.time() - started
            call.waited_s += waited
            if ready:
                warm.counted(key, "waited")
                call.trace.tags["keel.cold_start"] = f"waited {waited:.1f}s"
                walk.log.append({"level": level, "target": key, "outcome": "waited", "ms": round(waited * 1000, 3)})
                return True
        warm.counted(key, "rerouted")
        call.trace.tags["keel.cold_start"] = f"waited {waited:.1f}s, rerouted" if waited else "rerouted"
        walk.skip(level, target, f"{warm.state}: {warm.why}")
        message = f"Target '{key}' is {warm.state} ({warm.why}); retry shortly."
        walk.cold = ProviderError(
            ErrorKind.overloaded, message, provider=target.provider, retry_after=warm.retry_after()
        )
        return False

    def _retry_delay(self, err: ProviderError, retries_left: int, remaining: float) -> float | None:
        """Seconds to wait before retrying the same target, or None to leave it."""
        if retries_left <= 0 or _action(err) is not Action.retry:
            return None
        p = self._policy
        attempt = p.retries_per_target - retries_left
        backoff = min(p.backoff_max_s, p.backoff_s * 2**attempt)
        wait = err.retry_after
        if wait is None and err.error_kind is ErrorKind.rate_limited:
            wait = max(p.rate_limit_floor_s, self._rng.uniform(0, backoff))  # a limiter needs time to refill
        if wait is not None:
            return None if wait > p.retry_after_cap_s or wait >= remaining else wait
        delay = self._rng.uniform(0, backoff)  # full jitter
        return delay if delay < remaining else None

    def _failed(self, target: Target, err: ProviderError, started: float, level: str, walk: _Walk) -> None:
        loop = asyncio.get_running_loop()
        err.__traceback__ = err.__context__ = err.__cause__ = None  # kept, so it must not keep frames and payloads
        walk.errors.append(err)
        ms = round((loop.time() - started) * 1000, 3)
        walk.log.append({"level": level, "target": target.key, "outcome": "error", "kind": err.kind, "ms": ms})
        if err.error_kind in BREAKER_KINDS:
            self._health.observe(target.key, False, None, None)
            self._note(target.key, False, time.time())
        action = _action(err)
        if action is Action.stop:
            walk.stopped = "stop"
        elif action is Action.bigger:
            walk.min_window = max(walk.min_window or 0, target.context_window or 0)

    def _served(self, call: Call, reply: Reply, level: str, target: Target, walk: _Walk, started: float) -> None:
        loop = asyncio.get_running_loop()
        entry: dict[str, Any] = {"level": level, "target": target.key, "outcome": "ok"}
        walk.log.append(entry)
        record = call.trace
        record.fallback = level
        record.attempt_log = walk.log
        if level not in _OWN_LEVELS:
            call.state(FailoverState).degraded = level

        def done(outcome: Outcome) -> None:
            if outcome.status == "cancelled":
                return  # the client left: says nothing about the target
            ok = outcome.status == "ok"
            if not ok:
                diverged = isinstance(outcome.error, Diverged)
                entry["outcome"] = "diverged" if diverged else "failed mid-stream"
                entry["kind"] = outcome.error.kind if outcome.error is not None else None
                if diverged:
                    walk.bill(entry, outcome)
                    return  # it answered; only not the same words again
            if not ok or "resumed" in entry:
                walk.bill(entry, outcome)
            self._health.observe(target.key, ok, loop.time() - started, outcome.ttft_s)
            self._note(target.key, ok, time.time())

        reply.on_done(done)

    async def _resume(
        self, call: Call, next: Handler, walk: _Walk, levels: Iterator[tuple[str, Target]], reply: Reply, err: KeelError
    ) -> Reply | None:
        """Continue `reply`, broken after content by `err`, on the levels left: the next attempt or None."""
        request = call.request
        if not isinstance(err, ProviderError) or isinstance(err, Oversized) or _action(err) is Action.stop:
            return None  # a cut for size or a refusal stands
        if reply.has_tool_calls:
            return None
        assert isinstance(request, ChatRequest)
        sent = reply.text()
        if spent(request, sent):
            return None
        walk.breaks += 1  # an attempt of its own (not kept in `errors`: the reply raises it if this fails)
        try:
            for level, target in levels:
                resumed = await self._continue_on(call, next, level, target, walk, request, sent, err)
                if resumed is not None:
                    reply.notes["keel.resumed"] = walk.log[-1]["resumed"]  # the call's outcome carries it
                if resumed is not None or walk.stopped is not None:
                    return resumed
        except KeelError:
            return None  # e.g. the next target's queue is full: the break stands
        finally:
            call.request = request
        return None

    async def _continue_on(
        self,
        call: Call,
        next: Handler,
        level: str,
        target: Target,
        walk: _Walk,
        request: ChatRequest,
        sent: str,
        broke: ProviderError,
    ) -> Reply | None:
        """One level of a resume: a prefill where the target takes one, else (or if it refuses it) a restart."""
        if target.provider in self._prefill and sent.strip():
            call.request = with_prefill(request, sent)
            failed = len(walk.errors)
            reply = await self._try_target(call, next, level, target, walk)
            if reply is not None:
                return _spliced(reply, walk, "prefill", sent[len(sent.rstrip()) :], broke, target)
            refused = len(walk.errors) > failed and walk.errors[-1].error_kind is ErrorKind.bad_request
            if not refused:
                return None
            walk.stopped = None  # it refused the prefill, not the request: restart on it
            call.request = request
        reply = await self._try_target(call, next, level, target, walk)
        return None if reply is None else _spliced(reply, walk, "restart", sent, broke, target)

    def _static(self, call: Call, walk: _Walk) -> Reply | None:
        """The alias's static answer when the walk may end with one, else None."""
        assert call.plan is not None
        record = call.trace
        record.attempt_log = walk.log
        state = call.find(FailoverState)
        if walk.stopped != "stop" and call.plan.static_answer is not None and (state is None or not state.stale_held):
            record.fallback, record.provider, record.model = "static", "static", "static"
            call.state(FailoverState).degraded = "static"
            walk.log.append({"level": "static", "outcome": "ok"})
            reply = Reply(_static(call.plan.static_answer), call.t0)
            reply.cost_usd = 0.0
            return reply
        return None

    def _note(self, target: str, ok: bool, now: float) -> None:
        """Queue an outcome for the breakers; one task records all that arrived meanwhile."""
        self._outcomes.append((target, ok, now))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.ensure_future(self._flush())

    async def _flush(self) -> None:
        while self._outcomes:
            batch, self._outcomes = self._outcomes, []
            await self._breakers.record_many(batch)


class _Walk:
    """What one call's walk through its levels has seen so far."""

    def __init__(self) -> None:
        self.errors: list[ProviderError] = []
        self.log: list[dict[str, Any]] = []
        self.min_window: int | None = None  # set after a context_length error
        self.stopped: str | None = None  # "stop" (request at fault) or "budget"
        self.breaks = 0  # streams that broke after content and were resumed from
        self.held: tuple[str, ...] = ()  # targets this call already waited for, while their server warmed
        self.cold: ProviderError | None = None  # a target skipped as not ready: the answer if nothing serves

    def skip(self, level: str, target: Target, why: str) -> None:
        self.log.append({"level": level, "target": target.key, "outcome": "skipped", "why": why})

    def bill(self, entry: dict[str, Any], outcome: Outcome) -> None:
        """Note in `entry` what its attempt was billed (on its outcome): a resumed stream bills each attempt."""
        usage = outcome.billed
        entry["input_tokens"] = usage.input_tokens if usage is not None else 0
        entry["output_tokens"] = usage.output_tokens if usage is not None else 0
        entry["cost_usd"] = round(outcome.cost_usd or 0.0, 12)


def _spliced(reply: Reply, walk: _Walk, how: str, expect: str, broke: ProviderError, target: Target) -> Reply:
    """`reply` resuming a broken stream: marked in the trace, its events past what the client has."""
    walk.log[-1]["resumed"] = how
    strict = how == "restart"
    reply.splice(lambda events: continuation(events, expect, strict, broke, target.key))
    return reply


def _final_error(walk: _Walk) -> KeelError:
    errors = walk.errors
    if errors and (walk.stopped == "stop" or len({e.kind for e in errors}) == 1):
        last = errors[-1]  # one kind of failure: pass it on with its own status and Retry-After
        if last.retry_after is None and last.status in (429, 503):
            last.retry_after = DEFAULT_RETRY_AFTER_S
        return last
    if not errors and walk.cold is not None:
        return walk.cold  # only warming servers were met: say so, with when to come back
    if not errors and walk.stopped == "budget":
        return ProviderError(ErrorKind.timeout, "The request's deadline passed before any target could answer.")
    failed = AllTargetsFailed(errors)
    if not errors:
        failed.message = "Every target's circuit breaker is open; the providers are failing. Retry later."
        failed.args = (failed.message,)
    waits = [e.retry_after for e in errors if e.retry_after is not None]
    failed.retry_after = max(waits) if waits else DEFAULT_RETRY_AFTER_S
    return failed


async def _static(text: str) -> AsyncIterator[ChatEvent]:
    yield Start("static", "static")
    yield Text(text)
    yield Finish("stop")
    yield UsageEvent(Usage())
