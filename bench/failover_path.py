"""The failover stage's own cost on the common path: `python bench/failover_path.py`.

One successful attempt per call, in process, with an instant `next` handler and in-memory breakers,
no provider declaring readiness: microseconds per call, seven rounds of 20,000 (median and best).
Run it against two trees (PYTHONPATH=<tree>/src) to compare a change to the stage.
"""

from __future__ import annotations

import asyncio
import statistics
import time

from keel.gateway.call import Call, Reply, no_events
from keel.gateway.health import HealthBook
from keel.gateway.stages.failover import FailoverStage, RetryPolicy
from keel.store.open import open_breakers
from keel.store.protocols import BreakerPolicy
from keel.types import ChatRequest, Message, RoutePlan, Target, TraceRecord

CALLS, ROUNDS = 20_000, 7


async def main() -> None:
    breakers = open_breakers(None, BreakerPolicy(5, 0.5, 20, 10, 30.0))
    stage = FailoverStage(RetryPolicy(), breakers, HealthBook(), lambda call, alias: RoutePlan(alias, (), ""))
    plan = RoutePlan("a", (Target("p", "m"),), "bench")
    request = ChatRequest("a", (Message("user", "hi"),))

    async def answer(call: Call) -> Reply:
        return Reply(no_events(), call.t0)

    rounds = []
    for _ in range(ROUNDS):
        started = time.perf_counter()
        for _ in range(CALLS):
            call = Call(request, TraceRecord("id", 0.0))
            call.plan = plan
            await stage(call, answer)
        rounds.append((time.perf_counter() - started) / CALLS * 1e6)
    print(f"failover stage: median {statistics.median(rounds):.2f} µs/call, best {min(rounds):.2f} µs/call")


if __name__ == "__main__":
    asyncio.run(main())
