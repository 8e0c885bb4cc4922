"""The invoke slot, the last handler: one attempt on `call.target`, with its deadlines, priced when it ends.

A chat reply is committed only after the first content event (text, tool call or finish): until
then every failure — an error status, a reset, a malformed chunk, no first token before the TTFT
deadline — is raised from here, so the failover stage can try another target invisibly. After the
commit, a stall longer than the idle deadline or a call past its total deadline ends the stream
with a timeout error (which the failover stage may resume from): never a silent truncation.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping

from keel.errors import ErrorKind, KeelError, ProviderError
from keel.gateway.backpressure import Gates
from keel.gateway.call import Call, Outcome, Reply, no_events
from keel.gateway.routing import estimate_prompt_tokens
from keel.providers.base import Provider
from keel.providers.prices import PriceBook
from keel.types import ChatEvent, EmbeddingRequest, Note, Start, Target, Usage, UsageEvent

_HEAD = (Start, UsageEvent, Note)  # events that carry no content: a reply is not committed by them


class Invoker:
    def __init__(
        self,
        providers: Mapping[str, Provider],
        prices: PriceBook,
        *,
        ttft_timeout: float = 30.0,
        idle_timeout: float = 30.0,
        gates: Gates | None = None,
    ) -> None:
        self._gates = gates  # per-target concurrency caps with priority queues
        self._providers = dict(providers)
        self._prices = prices
        self._ttft = ttft_timeout
        self._idle = idle_timeout

    async def __call__(self, call: Call) -> Reply:
        assert call.plan is not None
        target = call.target or call.plan.targets[0]
        call.target = target
        record = call.trace
        record.provider, record.model = target.provider, target.model
        loop = asyncio.get_running_loop()
        deadline = call.deadline if call.deadline is not None else loop.time() + 3600.0
        gate = self._gates.get(target.key) if self._gates is not None else None
        if gate is None:
            return await self._attempt(call, target, deadline)
        call.waited_s += await gate.acquire(call.priority, deadline)  # raises Overloaded at once if hopeless
        try:
            reply = await self._attempt(call, target, deadline)
        except BaseException:
            gate.release()
            raise
        reply.on_done(lambda _: gate.release())  # a stream holds its slot until it ends
        return reply

    async def _attempt(self, call: Call, target: Target, deadline: float) -> Reply:
        call.trace.attempts += 1
        provider = self._providers[target.provider]
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        if isinstance(call.request, EmbeddingRequest):
            try:
                async with asyncio.timeout_at(deadline):
                    embedding = await provider.embed(call.request, target)
            except TimeoutError:
                raise ProviderError(
                    ErrorKind.timeout, "no answer before the deadline", provider=target.provider
                ) from None
            reply = Reply(no_events(), call.t0, embedding=embedding)
        elif call.request.stream:
            events = provider.chat(call.request, target)
            head = await _prime(events, min(loop.time() + self._ttft, deadline), target)
            reply = Reply(_guarded(head, events, self._idle, deadline, target), call.t0)
            # Response headers go out before the first event is read: name the model that is answering now.
            reply.id, reply.model = next(((e.id, e.model) for e in head if isinstance(e, Start)), ("", ""))
        else:
            # One answer in one body: only the total deadline applies (a long answer is not a stall).
            events = provider.chat(call.request, target)
            head = await _prime(events, deadline, target, until_end=True)
            reply = Reply(_replay(head), call.t0)
        reply.upstream_s = time.perf_counter() - started
        reply.on_done(lambda outcome: self._account(call, target, outcome))
        return reply

    def _account(self, call: Call, target: Target, outcome: Outcome) -> None:
        """Bill this attempt on its outcome (the first of its callbacks): a resumed stream bills every attempt
        that served (the Reply sums them on the call's outcome); unpriced usage has no cost, not a zero one."""
        usage = outcome.usage or _consumed(call, outcome)
        if usage is None:
            return
        outcome.billed = usage
        served = outcome.response.model
        price_model = served if served and self._prices.lookup(served) else target.model
        outcome.cost_usd = self._prices.cost(price_model, usage)


def _consumed(call: Call, outcome: Outcome) -> Usage | None:
    """A stream cut short (client gone, upstream broke) never got its usage: estimate what it used,
    so limits settle and the trace bills what was consumed rather than nothing."""
    r = outcome.response
    produced = len(r.content or "") + sum(len(c.arguments) + len(c.name) for c in r.tool_calls)
    if outcome.status == "ok" or not produced:
        return None
    outcome.notes["keel.usage"] = "estimated"
    return Usage(input_tokens=estimate_prompt_tokens(call.request), output_tokens=produced // 4 + 1)


async def _prime(
    events: AsyncIterator[ChatEvent], deadline: float, target: Target, *, until_end: bool = False
) -> list[ChatEvent]:
    """Read up to and including the first content event (or every event); all before it may fail over."""
    head: list[ChatEvent] = []
    try:
        async with asyncio.timeout_at(deadline):
            async for event in events:
                head.append(event)
                if not until_end and not isinstance(event, _HEAD):
                    break
    except TimeoutError:
        await _close(events)
        raise ProviderError(ErrorKind.timeout, "no first token before the deadline", provider=target.provider) from None
    except KeelError:
        await _close(events)
        raise
    except Exception as exc:  # a provider bug must still end as a clean, classified error
        await _close(events)
        raise ProviderError(
            ErrorKind.protocol, f"provider failed: {type(exc).__name__}", provider=target.provider
        ) from exc
    return head


async def _guarded(
    head: list[ChatEvent], rest: AsyncIterator[ChatEvent], idle: float, deadline: float, target: Target
) -> AsyncIterator[ChatEvent]:
    loop = asyncio.get_running_loop()
    try:
        for event in head:
            yield event
        while True:
            try:
                async with asyncio.timeout_at(min(loop.time() + idle, deadline)):
                    event = await rest.__anext__()
            except StopAsyncIteration:
                return
            except TimeoutError:
                why = "the request's deadline passed" if loop.time() >= deadline else f"no event for {idle:g} s"
                raise ProviderError(ErrorKind.timeout, f"stream stalled: {why}", provider=target.provider) from None
            yield event
    finally:
        await _close(rest)


async def _replay(events: list[ChatEvent]) -> AsyncIterator[ChatEvent]:
    for event in events:
        yield event


async def _close(events: AsyncIterator[ChatEvent]) -> None:
    closer = getattr(events, "aclose", None)
    if closer is not None:
        await closer()
