"""What the first Redis command after a quiet spell costs: `python bench/redis_wake.py [--n 200]`.

One client (Keel's, on uvloop) against the Redis at `--url`, one command at a time: after sleeping
0, 1, 5 or 50 ms, it times one PING (`cold`); then the same after a PING sent 0.3 ms before it and
answered (`woken`), as a settlement sent when a call ends wakes Redis for the next call's admission.
Prints p50/p90 per quiet spell. A sleeping Redis (and, on a VM, its halted vCPU) takes longer to answer
than a busy one: that is the part of a call's admission that the limits stage cannot pipeline away.
"""

from __future__ import annotations

import argparse
import asyncio
import time

import uvloop

from keel.store.redis.client import Redis


async def measure(url: str, n: int) -> None:
    client = Redis(url)
    try:
        await client.execute("PING")
        print(f"{'quiet before':>14}{'cold p50':>10}{'p90':>8}{'woken p50':>11}{'p90':>8}   (µs, {n} each)")
        for quiet_ms in (0, 1, 5, 50):
            cold, woken = [], []
            for i in range(2 * n):
                await asyncio.sleep(quiet_ms / 1000)
                if i % 2:
                    wake = asyncio.ensure_future(client.execute("PING"))
                    await asyncio.sleep(0.0003)
                    await wake
                t = time.perf_counter()
                await client.execute("PING")
                (woken if i % 2 else cold).append((time.perf_counter() - t) * 1e6)
            cold.sort()
            woken.sort()
            row = [cold[n // 2], cold[n * 9 // 10], woken[n // 2], woken[n * 9 // 10]]
            print(f"{quiet_ms:>11} ms{row[0]:>10.0f}{row[1]:>8.0f}{row[2]:>11.0f}{row[3]:>8.0f}")
    finally:
        await client.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description="the cost of a Redis command after a quiet spell")
    parser.add_argument("--url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--n", type=int, default=200, help="commands timed per quiet spell and kind")
    args = parser.parse_args()
    uvloop.run(measure(args.url, args.n))


if __name__ == "__main__":
    main()
