"""The gateway core's builder: providers and prices, the route and failover slots, and the invoke handler."""

from __future__ import annotations

from dataclasses import dataclass

from keel.catalog import CATALOG
from keel.gateway.backpressure import Gates
from keel.gateway.call import Call
from keel.gateway.capability import Context, Contribution, CredentialScrub
from keel.gateway.health import HealthBook
from keel.gateway.pipeline import Stage
from keel.gateway.routing import Router
from keel.gateway.stages.failover import FailoverStage, RetryPolicy
from keel.gateway.stages.invoke import Invoker
from keel.gateway.stages.route import RouteStage
from keel.gateway.warmth import build_warmth
from keel.providers.base import Provider
from keel.providers.http import Sessions
from keel.providers.prices import PriceBook, price_from_config
from keel.providers.registry import build_provider, upstream_headers
from keel.store.open import open_breakers
from keel.store.protocols import BreakerPolicy, BreakerStore
from keel.types import RoutePlan


@dataclass(frozen=True, slots=True)
class GatewayParts:
    """The gateway core's shared parts, for other builders and the edges (`ctx.get(GatewayParts)`)."""

    providers: dict[str, Provider]
    sessions: Sessions
    prices: PriceBook
    router: Router
    health: HealthBook
    breakers: BreakerStore
    gates: Gates


def build(ctx: Context) -> Contribution:
    config = ctx.config
    sessions = Sessions()
    scrub = ctx.find(CredentialScrub) or _unchanged  # type: ignore[type-abstract]
    providers = {name: build_provider(name, p, sessions, redact=scrub) for name, p in config.providers.items()}
    prices = PriceBook.bundled({m: price_from_config(p) for m, p in config.prices.items()})
    r = config.resilience
    policy = RetryPolicy(
        retries_per_target=r.retries_per_target,
        max_attempts=r.max_attempts,
        backoff_s=r.backoff_ms / 1000,
        backoff_max_s=r.backoff_max_ms / 1000,
        retry_after_cap_s=r.retry_after_cap_s,
        rate_limit_floor_s=r.rate_limit_floor_ms / 1000,
        total_timeout_s=r.total_timeout_s,
        max_total_timeout_s=r.max_total_timeout_s,
    )
    b = r.breaker
    breakers = open_breakers(
        config.redis.url, BreakerPolicy(b.failures, b.error_rate, b.window, b.min_calls, b.cooldown_s)
    )
    health = HealthBook()
    regions = {name: p.region for name, p in config.providers.items()}
    router = Router(config.models, regions, prices, health)

    def plan_for(call: Call, alias: str) -> RoutePlan:
        # Fallbacks are the operator's policy: not limited by the key's aliases, but by residency.
        assert call.principal is not None
        return router.plan(alias, call.request, call.principal, None, follow_rules=False)

    prefill = [name for name, p in config.providers.items() if CATALOG[p.type].prefill]
    warmth = build_warmth(config, providers, lambda name: upstream_headers(config.providers[name]))
    failover = FailoverStage(policy, breakers, health, plan_for, prefill=prefill, warmth=warmth)
    caps = {
        f"{t.provider}/{t.model}": (t.max_concurrency, t.queue_limit)
        for a in config.models.values()
        for t in a.targets
        if t.max_concurrency is not None
    }
    gates = Gates(caps)
    invoker = Invoker(providers, prices, ttft_timeout=r.ttft_timeout_s, idle_timeout=r.idle_timeout_s, gates=gates)
    ctx.add(GatewayParts(providers, sessions, prices, router, health, breakers, gates))
    ctx.add(prices)
    ctx.add(warmth)  # self-hosted servers' readiness, for the edges (keel targets, /readyz, /metrics)

    async def close() -> None:
        for provider in providers.values():
            await provider.aclose()
        await sessions.aclose()
        await breakers.aclose()
        await warmth.aclose()

    stages: list[tuple[str, Stage]] = [("route", RouteStage(router)), ("failover", failover)]
    return Contribution(stages, invoke=invoker, workers=warmth.workers(), close=[close])


def _unchanged(text: str) -> str:
    return text
