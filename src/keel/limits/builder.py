"""The limits capability's builder: the limits slot, its counters, and the overrides' refresh."""

from __future__ import annotations

import asyncio
import logging
import time

from keel.config import LimitsConfig
from keel.gateway.capability import Context, Contribution, ThresholdAlert, Worker
from keel.limits.book import book_from
from keel.limits.stage import LimitsStage
from keel.providers.prices import PriceBook
from keel.store.open import open_limits
from keel.store.protocols import LimitStore, Store

log = logging.getLogger("keel.runtime")
REFRESH_S = 2.0  # per-tenant and per-key overrides reach every process within this


def build(ctx: Context) -> Contribution:
    config = ctx.config
    limits = open_limits(config.redis.url, blocks=True)  # no round trip on most calls' path
    ctx.add(limits, as_=LimitStore)
    stage = LimitsStage(
        limits,
        book_from(config.limits, ctx.store.list_limits()),
        ctx.get(PriceBook),
        default_output_tokens=config.limits.default_output_tokens,
        thresholds=tuple(config.limits.soft_thresholds),
        alert=ctx.find(ThresholdAlert),  # type: ignore[type-abstract]
    )
    ctx.add(stage)
    overrides = Overrides(config.limits, ctx.store, stage)
    return Contribution(
        [("limits", stage)], workers=[Worker("limit-overrides", overrides.refresh, REFRESH_S)], close=[limits.aclose]
    )


class Overrides:
    """Reads per-tenant and per-key overrides into the stage's book; an outage keeps the last ones."""

    def __init__(self, config: LimitsConfig, store: Store, stage: LimitsStage) -> None:
        self._config = config
        self._store = store
        self._stage = stage
        self._warned_at = float("-inf")

    async def refresh(self) -> None:
        read_at = time.time()
        try:
            overrides = await asyncio.to_thread(self._store.list_limits)
        except Exception as exc:
            if time.monotonic() - self._warned_at >= 30.0:  # once per half minute of an outage, not every read
                self._warned_at = time.monotonic()
                log.warning("reading limit overrides failed (%s: %s); keeping the last ones", type(exc).__name__, exc)
            return
        self._stage.update(book_from(self._config, overrides), read_at)
