"""What the hot path pays for authentication and limits bookkeeping: `python bench/keys.py [--n 200000]`.

Two figures, CPU per call (`time.process_time()`, this process only), median of --repeats runs:
- `resolve`: `Authenticator.resolve` of a cached key (the call every request makes). The store is a real
  SQLite file, read once to fill the cache; the loop then never touches it.
- `limits stage`: one pass of a call through `LimitsStage` to a reply that ends at once (`on_done`
  fired), with no limit that applies, and with four in-memory counters (rpm, tpm, usd_day per tenant;
  concurrency per key), as bench/run.py's `--limits memory`.
Run it against another tree to compare, e.g. `PYTHONPATH=/work/main/src python bench/keys.py`: it uses
only the public constructors, so the same script measures before and after a change.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from keel.gateway.call import Call, Reply
from keel.keys.auth import Authenticator, issue_key
from keel.limits.book import LimitBook, Rule
from keel.limits.stage import LimitsStage
from keel.providers.prices import PriceBook
from keel.store.memory.counters import MemoryLimits
from keel.store.open import open_store
from keel.types import ChatEvent, ChatRequest, Message, Principal, RoutePlan, Target, TraceRecord


async def _resolve(n: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        store = open_store(f"sqlite:///{tmp}/keel.db")
        store.create_tenant("acme")
        key = issue_key(store, "acme").key
        auth = Authenticator(store, ttl=3600)
        await auth.resolve(key)  # the one store read
        resolve = auth.resolve
        t0 = time.process_time()
        for _ in range(n):
            await resolve(key)
        cpu = time.process_time() - t0
        getattr(auth, "close", lambda: None)()
        store.close()
    return cpu / n


async def _nothing() -> AsyncIterator[ChatEvent]:
    return
    yield  # pragma: no cover - makes this an async generator


async def _limits(n: int, book: LimitBook) -> float:
    stage = LimitsStage(MemoryLimits(), book, PriceBook.bundled())
    request = ChatRequest("fast", (Message("user", "hello there"),), max_tokens=16)
    principal = Principal("acme", "key_1")
    plan = RoutePlan("fast", (Target("sim", "gpt-4o-mini"),), "default")

    async def last(call: Call) -> Reply:
        return Reply(_nothing(), call.t0)

    calls = [Call(request, TraceRecord(str(i), 0.0), principal=principal, plan=plan) for i in range(n)]
    t0 = time.process_time()
    for call in calls:
        await (await stage(call, last)).collect()
        await asyncio.sleep(0)  # settlements are tasks: let them run, and count them
    cpu = time.process_time() - t0
    return cpu / n


def _median(runs: int, measure: Callable[[], Awaitable[float]]) -> float:
    return statistics.median(asyncio.run(measure()) for _ in range(runs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    n, runs = args.n, args.repeats
    none = LimitBook([], {})
    four = LimitBook(
        [Rule(("tenant",), {"rpm": 1e9, "tpm": 1e12, "usd_day": 1e9}), Rule(("key",), {"concurrency": 1e6})], {}
    )
    rows = [
        ("resolve (cached key)", _median(runs, lambda: _resolve(n))),
        ("limits stage, no limits", _median(runs, lambda: _limits(n // 4, none))),
        ("limits stage, 4 counters in memory", _median(runs, lambda: _limits(n // 4, four))),
    ]
    for name, cpu in rows:
        print(f"{name:<40} {cpu * 1e6:8.2f} µs CPU per call")


if __name__ == "__main__":
    main()
