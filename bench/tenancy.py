"""What resolving an admin caller costs: a personal access token from the Directory's cache, the same
token with the cache off (one token and one user read), and a permission check, on SQLite.

    PYTHONPATH=src python bench/tenancy.py [--calls 2000]

Prints p50/p99 per part, in microseconds.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time

from keel.store.open import open_store
from keel.tenancy.directory import Directory


def figures(name: str, samples: list[float]) -> None:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    print(f"{name:36} p50 {statistics.median(ordered) * 1e6:8.1f} us   p99 {p99 * 1e6:8.1f} us")


async def run(calls: int, url: str) -> None:
    store = open_store(url)
    cached, uncached = Directory(store), Directory(store, cache_s=0.0)
    store.create_tenant("acme")
    user = await cached.add_user("acme", ("developer",), user_id="dev")
    token = (await cached.issue_token(user.id)).token
    for directory, name in ((cached, "PAT resolve, cached"), (uncached, "PAT resolve, store (cache off)")):
        samples = []
        for _ in range(calls):
            start = time.perf_counter()
            actor = await directory.resolve(token)
            samples.append(time.perf_counter() - start)
        figures(name, samples)
    samples = []
    for _ in range(calls):
        start = time.perf_counter()
        actor.can("keys.write")
        samples.append(time.perf_counter() - start)
    figures("permission check (Actor.can)", samples)
    store.close()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--calls", type=int, default=2000)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(run(args.calls, f"sqlite:///{tmp}/bench.db"))


if __name__ == "__main__":
    main()
