"""What admission blocks cost Redis, and how they follow a burst: `python bench/limit_blocks.py [grants|burst]`.

`grants`: bench/run.py's four counters (rpm, tpm, usd_day per tenant, concurrency per key; never
reached) through `RedisLimits` at 127.0.0.1:6379, 100 calls of each kind 10 ms apart: a plain exact
admission (no blocks), an exact admission that is granted four blocks (the first call after a quiet
second), and the return of those blocks, interleaved. Prints the Redis time per script call (`INFO
commandstats`, EVALSHA's usec over its calls around each step: run nothing else against that Redis).

`burst`: 50 callers, each holding its admission ~5 ms, for 3 s, with blocks: how many admissions were
local, how many blocks were granted, and the concurrency block sizes in the order they were held.

Keys go under a random prefix and are deleted afterwards. Compare trees with PYTHONPATH=<tree>/src.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import time
from collections.abc import Awaitable

import redis

from keel.store.protocols import Charge
from keel.store.redis.limits import RedisLimits
from limits import evalsha_stats

URL = "redis://127.0.0.1:6379/0"
CHARGES = [
    Charge("tenant=t|rpm", "minute", 1e8, 1.0),
    Charge("tenant=t|tpm", "minute", 1e10, 30.0),
    Charge("tenant=t|usd_day", "day", 1e6, 0.00001),
    Charge("key=k|concurrency", "concurrent", 1e5, 1.0),
]
ACTUAL = [1.0, 30.0, 0.00001, 1.0]


async def grants(prefix: str, r: redis.Redis) -> None:
    plain = RedisLimits(URL, prefix=prefix + "plain:")
    blocked = RedisLimits(URL, prefix=prefix + "blocks:", blocks=True)
    assert blocked.blocks is not None
    blocks = blocked.blocks
    spent = {"plain exact admission": [0, 0], "exact admission granting 4 blocks": [0, 0], "return of 4 blocks": [0, 0]}

    async def measured(name: str, step: Awaitable[object]) -> None:
        calls, usec = evalsha_stats(r)
        await step
        await asyncio.sleep(0.02)  # (a return is sent later: up to 5 ms)
        after = evalsha_stats(r)
        spent[name][0] += after[0] - calls
        spent[name][1] += after[1] - usec

    async def nothing() -> None:
        blocks.close()

    try:
        await plain.reserve(CHARGES, time.time())
        await blocked.reserve(CHARGES, time.time())
        blocks.close()
        await asyncio.sleep(0.02)
        for _ in range(100):
            await measured("plain exact admission", plain.reserve(CHARGES, time.time()))
            await measured("exact admission granting 4 blocks", blocked.reserve(CHARGES, time.time()))
            await measured("return of 4 blocks", nothing())
        for name, (calls, usec) in spent.items():
            print(f"{name}: {calls} EVALSHA, {usec / max(1, calls):.0f} µs each in Redis")
    finally:
        await plain.aclose()
        await blocked.aclose()


async def burst(prefix: str) -> None:
    store = RedisLimits(URL, prefix=prefix, blocks=True)
    assert store.blocks is not None
    blocks = store.blocks
    calls = 0
    sizes: list[int] = []

    async def caller(end: float) -> None:
        nonlocal calls
        while time.monotonic() < end:
            a = await store.reserve(CHARGES, time.time())
            assert a.reservation is not None
            await asyncio.sleep(0.005)
            await store.settle(a.reservation, ACTUAL, time.time())
            calls += 1

    async def watch(end: float) -> None:
        key = f"{prefix}key=k|concurrency:concurrent"
        while time.monotonic() < end:
            held = blocks._blocks.get(key)
            size = int(held.granted) if held is not None else 0
            if not sizes or sizes[-1] != size:
                sizes.append(size)
            await asyncio.sleep(0.01)

    end = time.monotonic() + 3
    try:
        await asyncio.gather(watch(end), *(caller(end) for _ in range(50)))
    finally:
        await store.aclose()
    print(
        f"{calls} calls, {blocks.local} admitted from blocks ({100 * blocks.local / calls:.1f}%), "
        f"{blocks.granted} blocks granted; concurrency block sizes held: {sizes}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description="what admission blocks cost Redis, and how they follow a burst")
    parser.add_argument("what", choices=["grants", "burst"], nargs="?", default="grants")
    args = parser.parse_args()
    prefix = f"bench:blocks:{secrets.token_hex(4)}:"
    r = redis.Redis.from_url(URL)
    try:
        asyncio.run(grants(prefix, r) if args.what == "grants" else burst(prefix))
    finally:
        keys = list(r.scan_iter(match=prefix + "*"))
        if keys:
            r.delete(*keys)


if __name__ == "__main__":
    main()
