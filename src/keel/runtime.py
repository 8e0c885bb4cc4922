"""The one composition root: Config → the object graph the edges (api, cli) use."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

from keel.accounting import PriceBook, price_from_config
from keel.config import Config
from keel.gateway.pipeline import Handler, Stage, build_pipeline
from keel.gateway.stages import AuthStage, Invoker, Router, RouteStage, TraceStage
from keel.keys import Authenticator
from keel.providers.base import Provider
from keel.providers.http import Sessions
from keel.providers.registry import build_provider
from keel.store.open import open_store
from keel.store.protocols import Store
from keel.traces import TraceWriter
from keel.types import RoutePlan, Target


@dataclass
class Runtime:
    config: Config
    store: Store
    writer: TraceWriter
    authenticator: Authenticator
    router: Router
    providers: dict[str, Provider]
    sessions: Sessions
    prices: PriceBook
    pipeline: Handler
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @classmethod
    def build(cls, config: Config, store: Store | None = None) -> Runtime:
        store = store or open_store(config.storage.url)
        t = config.traces
        writer = TraceWriter(
            store,
            queue_size=t.queue_size,
            batch_size=t.batch_size,
            flush_interval=t.flush_interval_ms / 1000,
            spill_dir=t.spill_dir,
        )
        authenticator = Authenticator(store, ttl=config.server.key_cache_ttl_s, poll=config.server.revocation_poll_s)
        plans = {
            alias: RoutePlan(alias, tuple(Target(t.provider, t.model) for t in a.targets), "configured order")
            for alias, a in config.models.items()
        }
        router = Router(plans)
        sessions = Sessions()
        providers = {name: build_provider(name, p, sessions) for name, p in config.providers.items()}
        prices = PriceBook.bundled({m: price_from_config(p) for m, p in config.prices.items()})
        stages: list[Stage] = [TraceStage(writer), AuthStage(authenticator), RouteStage(router)]
        pipeline = build_pipeline(stages, Invoker(providers, prices))
        return cls(config, store, writer, authenticator, router, providers, sessions, prices, pipeline)

    async def start(self) -> None:
        self.writer.start()
        self._tasks.append(asyncio.create_task(self.authenticator.run(), name="keel-revocations"))

    async def aclose(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for provider in self.providers.values():
            await provider.aclose()
        await self.sessions.aclose()
        await asyncio.to_thread(self.writer.close)
        self.store.close()
