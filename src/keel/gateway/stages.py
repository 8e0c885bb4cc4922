"""The spine's stages: trace → auth → route → invoke (see DESIGN.md §2)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping

from keel.accounting import PriceBook
from keel.errors import AuthError, ErrorKind, KeelError, ModelNotFound, ProviderError
from keel.gateway.call import Call, Outcome, Reply, no_events
from keel.gateway.pipeline import Handler
from keel.keys import Authenticator
from keel.providers.base import Provider
from keel.traces import TraceWriter
from keel.types import ChatEvent, ChatRequest, EmbeddingRequest, RoutePlan, Target, TraceRecord


class TraceStage:
    """Emits the call's record (made at the edge) exactly once, whatever happens.

    Calls refused before authentication are counted, not recorded: an unauthenticated flood must
    not be able to write to the database.
    """

    def __init__(self, writer: TraceWriter) -> None:
        self._writer = writer
        self.unauthenticated = 0

    async def __call__(self, call: Call, next: Handler) -> Reply:
        try:
            reply = await next(call)
        except Exception as exc:
            if call.principal is None:
                self.unauthenticated += 1
                raise
            err = exc if isinstance(exc, KeelError) else KeelError(f"internal error: {type(exc).__name__}")
            _fail(call.trace, err, call.t0)
            self._writer.put(call.trace)
            raise
        reply.on_done(lambda outcome: self._emit(call, outcome))
        return reply

    def _emit(self, call: Call, outcome: Outcome) -> None:
        record = call.trace
        record.latency_ms = (time.perf_counter() - call.t0) * 1000
        record.ttft_ms = None if outcome.ttft_s is None else outcome.ttft_s * 1000
        r = outcome.response
        if isinstance(call.request, ChatRequest):
            record.response = {
                "id": r.id,
                "content": r.content,
                "tool_calls": [{"id": c.id, "name": c.name, "arguments": c.arguments} for c in r.tool_calls],
                "finish_reason": r.finish_reason,
            }
        if r.model:
            record.model = r.model
        if outcome.status == "cancelled":
            record.status, record.error_kind = "partial", "client_closed"
        elif outcome.error is not None:
            record.status = "partial" if outcome.ttft_s is not None else "error"
            record.error_kind, record.error_message = outcome.error.kind, outcome.error.message
        self._writer.put(record)


def _fail(record: TraceRecord, err: KeelError, t0: float) -> None:
    record.status = "error"
    record.error_kind = err.kind
    record.error_message = err.message
    record.http_status = err.status
    record.latency_ms = (time.perf_counter() - t0) * 1000


class AuthStage:
    def __init__(self, authenticator: Authenticator) -> None:
        self._auth = authenticator

    async def __call__(self, call: Call, next: Handler) -> Reply:
        principal, allowed = await self._auth.resolve(call.api_key)
        call.principal, call.allowed = principal, allowed
        record = call.trace
        record.tenant, record.key_id = principal.tenant, principal.key_id
        record.user = record.user or principal.user
        return await next(call)


class Router:
    """Alias → RoutePlan. The spine's rule: the alias's targets, in configured order."""

    def __init__(self, plans: Mapping[str, RoutePlan]) -> None:
        self._plans = dict(plans)

    def aliases(self, allowed: tuple[str, ...] | None) -> list[str]:
        return [a for a in self._plans if allowed is None or a in allowed]

    def plan(self, alias: str, allowed: tuple[str, ...] | None) -> RoutePlan:
        plan = self._plans.get(alias)
        if plan is None or (allowed is not None and alias not in allowed):
            raise ModelNotFound(alias, self.aliases(allowed))
        return plan


class RouteStage:
    def __init__(self, router: Router) -> None:
        self._router = router

    async def __call__(self, call: Call, next: Handler) -> Reply:
        if call.principal is None:
            raise AuthError("unauthenticated call reached routing")
        call.plan = self._router.plan(call.request.model, call.allowed)
        return await next(call)


class Invoker:
    """The last handler: calls the provider of `call.target` (default: the plan's first target).

    For chat it waits for the first event before returning, so an upstream failure before any
    output is raised here (a clean HTTP error, and later a fallback) rather than mid-stream.
    """

    def __init__(self, providers: Mapping[str, Provider], prices: PriceBook) -> None:
        self._providers = dict(providers)
        self._prices = prices

    async def __call__(self, call: Call) -> Reply:
        assert call.plan is not None
        target = call.target or call.plan.targets[0]
        call.target = target
        record = call.trace
        record.provider, record.model = target.provider, target.model
        record.attempts += 1
        provider = self._providers[target.provider]
        started = time.perf_counter()
        if isinstance(call.request, EmbeddingRequest):
            embedding = await provider.embed(call.request, target)
            reply = Reply(no_events(), call.t0, embedding=embedding)
        else:
            events = provider.chat(call.request, target)
            first = await _first(events)
            reply = Reply(_prepend(first, events), call.t0)
        reply.upstream_s = time.perf_counter() - started
        reply.on_done(lambda outcome: self._account(call, target, outcome))
        return reply

    def _account(self, call: Call, target: Target, outcome: Outcome) -> None:
        record = call.trace
        usage = outcome.usage
        if usage is None:
            return
        record.input_tokens = usage.input_tokens
        record.cached_input_tokens = usage.cached_input_tokens
        record.cache_write_tokens = usage.cache_write_tokens
        record.output_tokens = usage.output_tokens
        record.reasoning_tokens = usage.reasoning_tokens
        served = outcome.response.model
        price_model = served if served and self._prices.lookup(served) else target.model
        record.cost_usd = self._prices.cost(price_model, usage)


async def _first(events: AsyncIterator[ChatEvent]) -> ChatEvent | None:
    try:
        return await events.__anext__()
    except StopAsyncIteration:
        return None
    except ProviderError:
        raise
    except KeelError:
        raise
    except Exception as exc:  # a provider bug must still end as a clean error
        raise ProviderError(ErrorKind.protocol, f"provider failed: {type(exc).__name__}") from exc


async def _prepend(first: ChatEvent | None, rest: AsyncIterator[ChatEvent]) -> AsyncIterator[ChatEvent]:
    try:
        if first is not None:
            yield first
            async for event in rest:
                yield event
    finally:
        closer = getattr(rest, "aclose", None)
        if closer is not None:
            await closer()
