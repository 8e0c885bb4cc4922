"""What admission control costs the gateway process: `python bench/limits.py [--n 5000] [--repeats 3]`.

Runs N sequential admissions of 4 charges each (rpm, tpm, usd_day, concurrency, as the limits stage
makes them) against `MemoryLimits` and `RedisLimits` (the real Redis at --redis, keys under a random
prefix, deleted afterwards), each settled as the limits stage does it: spawned, not awaited, so on
Redis it waits (up to 5 ms) and goes out in the same write as the next admission. CPU is this
process's `time.process_time()` (the Redis server is another process and is not counted), per call
(reserve + settle); wall time is the reserve's, p50/p99. Redis's own command counter checks the Lua
calls. Each figure is the median of --repeats runs. Target (the Limits issue): ≤ 0.3 ms CPU per
admission with Redis; judged here on the reserve and its settlement together.

`RedisLimits` talks to Redis through Keel's own client (keel.store.redis_client); until decision
0018-redis-client it used redis-py's, and this bench's "bare asyncio protocol" what-if row showed
that half of its CPU was redis-py's.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import redis

from keel.store.memory.counters import MemoryLimits
from keel.store.protocols import Charge, LimitStore
from keel.store.redis.limits import RedisLimits

TARGET_MS = 0.3
CHARGES = [
    Charge("tenant=acme|rpm", "minute", 1e12, 1.0),
    Charge("tenant=acme|tpm", "minute", 1e12, 1200.0),
    Charge("tenant=acme|usd_day", "day", 1e12, 0.0125),
    Charge("tenant=acme|concurrency", "concurrent", 1e12, 1.0),
]
ACTUAL = [1.0, 850.0, 0.0093, 1.0]


@dataclass
class Run:
    cpu_ms: float  # per call: its reserve and its settle
    reserve_wall_ms: list[float]


async def one_run(store: LimitStore, n: int) -> Run:
    """As the limits stage does it: await the reserve; settle when the call ends, without waiting for it."""
    settles: set[asyncio.Task[None]] = set()
    walls: list[float] = []
    cpu0 = time.process_time()
    for _ in range(n):
        t0 = time.perf_counter()
        admission = await store.reserve(CHARGES, time.time())
        walls.append((time.perf_counter() - t0) * 1000)
        assert admission.reservation is not None, admission
        settles.add(asyncio.ensure_future(store.settle(admission.reservation, ACTUAL, time.time())))
        await asyncio.sleep(0)  # the call's own work: its settlement queues meanwhile
    await asyncio.gather(*settles)
    return Run((time.process_time() - cpu0) * 1000 / n, walls)


def evalsha_stats(client: redis.Redis) -> tuple[int, int]:
    """(calls, usec) of EVALSHA so far, from Redis's own counters (run nothing else against that Redis)."""
    stats = client.info("commandstats").get("cmdstat_evalsha", {"calls": 0, "usec": 0})
    return int(stats["calls"]), int(stats["usec"])


async def measure(open_store: Callable[[], Awaitable[LimitStore]], n: int, repeats: int) -> list[Run]:
    store = await open_store()
    try:
        await one_run(store, min(n, 500))  # warm-up: connections, script cache, branch predictors
        return [await one_run(store, n) for _ in range(repeats)]
    finally:
        await store.aclose()


def pct(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def row(name: str, runs: list[Run]) -> str:
    cpu = statistics.median(r.cpu_ms for r in runs)
    walls = [w for r in runs for w in r.reserve_wall_ms]
    return f"{name:<12} {cpu:>8.3f} ms      {pct(walls, 0.5):>6.3f} / {pct(walls, 0.99):.3f} ms"


def main() -> int:
    parser = argparse.ArgumentParser(description="CPU and round trips per admission: RedisLimits vs MemoryLimits")
    parser.add_argument("--n", type=int, default=5000, help="admissions per run (default 5000)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per backend; figures are medians (default 3)")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop", help="default: uvloop, as served")
    args = parser.parse_args()
    if args.loop == "uvloop":
        import uvloop

        uvloop.install()
    sync = redis.Redis.from_url(args.redis, decode_responses=True)
    prefix = f"keel:bench:{secrets.token_hex(4)}:"

    async def memory() -> LimitStore:
        return MemoryLimits()

    async def on_redis() -> LimitStore:
        return RedisLimits(args.redis, prefix=prefix)

    try:
        version = sync.info("server")["redis_version"]
        runs = {"memory": asyncio.run(measure(memory, args.n, args.repeats))}
        before, _ = evalsha_stats(sync)
        runs["redis"] = asyncio.run(measure(on_redis, args.n, args.repeats))
        trips = (evalsha_stats(sync)[0] - before) / (args.repeats * args.n + min(args.n, 500))
    except redis.RedisError as exc:
        print(f"bench/limits: Redis at {args.redis} is unreachable: {exc}", file=sys.stderr)
        return 1
    finally:
        keys = list(sync.scan_iter(match=f"{prefix}*"))
        if keys:
            sync.delete(*keys)
        sync.close()
    print(report(args, version, runs, trips))
    return 0 if statistics.median(r.cpu_ms for r in runs["redis"]) <= TARGET_MS else 1


def report(args: argparse.Namespace, version: str, runs: dict[str, list[Run]], trips: float) -> str:
    def cpu(name: str) -> float:
        return float(statistics.median(r.cpu_ms for r in runs[name]))

    total = cpu("redis")
    verdict = "PASS" if total <= TARGET_MS else "MISS"
    return "\n".join(
        [
            f"limits: {args.n:,} sequential admissions x {len(CHARGES)} charges (rpm, tpm, usd_day, concurrency),"
            f" each settled without waiting (it rides with the next admission); median of {args.repeats} runs;"
            f" loop={args.loop}; Redis {version} at {args.redis}",
            "",
            "backend      CPU per call   reserve wall p50/p99",
            *(row(name, r) for name, r in runs.items()),
            "",
            f"Lua calls per admission (Redis EVALSHA count): {trips:.2f} (1 reserve + 1 settle, in one write)",
            f"CPU per call with Redis (reserve + settle): {total:.3f} ms ({total - cpu('memory'):.3f} ms over memory);"
            f" target <= {TARGET_MS} ms: {verdict}",
        ]
    )


if __name__ == "__main__":
    sys.exit(main())
