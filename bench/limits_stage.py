"""CPU the limits stage adds to a call: `python bench/limits_stage.py [--calls 30000] [--limits redis]`.

Runs the real `LimitsStage` (bench/run.py's four counters: rpm, tpm, usd_day per tenant, concurrency
per key; never reached) in front of a next stage that only answers, with 50 concurrent callers, and
the same calls without the stage; prints the difference in this process's CPU per call. Counters in
memory or in the Redis at 127.0.0.1:6379 (with admission blocks, as the gateway runs them; keys under
a random prefix, deleted afterwards). The garbage collector is frozen and tuned as `keel serve` does. Pin it to one core
(`taskset -c 1`) and alternate checkouts (PYTHONPATH=<tree>/src) to compare them.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import redis
import uvloop

from keel.config import LimitsConfig
from keel.gateway.call import Call, Outcome, Reply
from keel.limits.book import book_from
from keel.limits.stage import LimitsStage
from keel.providers.prices import PriceBook
from keel.store.memory.counters import MemoryLimits
from keel.store.protocols import LimitStore
from keel.store.redis.limits import RedisLimits
from keel.types import ChatEvent, ChatRequest, Message, Principal, RoutePlan, Target, TraceRecord, Usage

LIMITS = LimitsConfig.model_validate(
    {
        "defaults": [
            {"scope": ["tenant"], "rpm": 100_000_000, "tpm": 10_000_000_000, "usd_day": 1_000_000},
            {"scope": ["key"], "concurrency": 100_000},
        ]
    }
)
PLAN = RoutePlan("bench", (Target("up", "gpt-4o-mini"),), "default")
REQUEST = ChatRequest("bench", (Message("user", "Say hello to the benchmark."),), max_tokens=16)
CALLERS = 50
REDIS_URL = "redis://127.0.0.1:6379/0"


async def _no_events() -> AsyncIterator[ChatEvent]:
    return
    yield  # pragma: no cover - makes this an async generator


async def answer(call: Call) -> Reply:
    """The next stage: a reply billed as the invoke slot bills one."""
    reply = Reply(_no_events(), call.t0)

    def bill(outcome: Outcome) -> None:
        outcome.billed, outcome.cost_usd = Usage(input_tokens=10, output_tokens=5), 0.00001

    reply.on_done(bill)
    return reply


def new_call() -> Call:
    return Call(REQUEST, TraceRecord("bench", 0.0), principal=Principal("default", "k1"), plan=PLAN)


async def cpu_per_call(one: Callable[[], Awaitable[None]], calls: int) -> float:
    """µs of this process's CPU per call, `calls` spread over CALLERS concurrent callers."""

    async def caller() -> None:
        for _ in range(calls // CALLERS):
            await one()

    cpu0 = time.process_time()
    await asyncio.gather(*(caller() for _ in range(CALLERS)))
    return (time.process_time() - cpu0) / calls * 1e6


async def main(limits: str, calls: int) -> None:
    prefix = f"keel:bench:{secrets.token_hex(4)}:"
    store: LimitStore = RedisLimits(REDIS_URL, prefix=prefix, blocks=True) if limits == "redis" else MemoryLimits()
    stage = LimitsStage(store, book_from(LIMITS, []), PriceBook.bundled())

    async def through_stage() -> None:
        reply = await stage(new_call(), answer)
        await asyncio.sleep(0)  # the call is in flight for a loop turn, as a real one is
        await reply.collect()

    async def without() -> None:
        reply = await answer(new_call())
        await asyncio.sleep(0)
        await reply.collect()

    await cpu_per_call(through_stage, 5_000)  # warm-up (and the first blocks)
    await cpu_per_call(without, 5_000)
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)
    base = await cpu_per_call(without, calls)
    staged = await cpu_per_call(through_stage, calls)
    print(
        f"limits {limits}: the stage adds {staged - base:.1f} µs CPU per call ({staged:.1f} with, {base:.1f} without)"
    )
    await store.aclose()
    if limits == "redis":
        with redis.Redis.from_url(REDIS_URL) as sync:
            keys = list(sync.scan_iter(match=f"{prefix}*"))
            if keys:
                sync.delete(*keys)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--calls", type=int, default=30_000)
    parser.add_argument("--limits", choices=["memory", "redis"], default="redis")
    args = parser.parse_args()
    uvloop.run(main(args.limits, args.calls))
