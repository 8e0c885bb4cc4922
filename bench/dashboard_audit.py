"""How long the dashboard's audit page and its export take, over a long audit chain.

Appends --entries audit entries (5 tenants, 50 actors, 20 actions, spread over the last 7 days) to a
store (SQLite by default, or --url postgresql://...), then requests through the dashboard's own ASGI
routes with a logged-in session: the first page after a new entry (the chain verified from the last
verified head), the same page with the verdict reused, a filter on an actor that
matches nothing, a tenant and action filter, and the JSONL export of one tenant's range. Then the chain verified whole against incrementally.

    python bench/dashboard_audit.py                    # 20,000 entries into a temp SQLite file
    python bench/dashboard_audit.py --entries 100000
"""

from __future__ import annotations

import argparse
import asyncio
import random
import re
import statistics
import tempfile
import time
from pathlib import Path

import httpx
from starlette.applications import Starlette

from keel.audit.log import AuditLog
from keel.dashboard.pages import Dashboard
from keel.store.open import open_store
from keel.store.protocols import Store

TOKEN = "bench-admin-token"


def fill(store: Store, entries: int, now: float) -> float:
    """Append `entries` entries one by one as the control plane would; return entries/s."""
    rng = random.Random(1)
    log = AuditLog(store)
    actions = [
        f"{noun}.write POST /api/{noun}/{i}" for noun in ("keys", "prompts", "limits", "users") for i in range(5)
    ]
    t0 = time.perf_counter()
    for i in range(entries):
        at = now - 7 * 86400 * (1 - i / entries)
        log.append(f"user:u{rng.randrange(50)}", rng.choice(actions), f"t{i}", tenant=f"tenant-{rng.randrange(5)}",
                   after={"i": i, "name": "x" * rng.randrange(10, 200)}, source_ip="127.0.0.1", now=at)  # fmt: skip
    return entries / (time.perf_counter() - t0)


async def timed(client: httpx.AsyncClient, path: str, reps: int, fresh: AuditLog | None = None, note: str = "") -> None:
    walls, db = [], []
    size = 0
    for _ in range(reps):
        if fresh is not None:  # a new entry moves the head: the page verifies the chain again
            await asyncio.to_thread(fresh.append, "bench", "bench.tick", now=time.time() - 8 * 86400)
        t0 = time.perf_counter()
        r = await client.get(path)
        walls.append((time.perf_counter() - t0) * 1000)
        assert r.status_code == 200, r.text[:500]
        timing = dict(re.findall(r"(\w+);dur=([\d.]+)", r.headers.get("server-timing", "")))
        db.append(float(timing.get("db", "nan")))
        size = len(r.content)
    walls.sort()
    p95 = walls[int(0.95 * (len(walls) - 1))]
    print(
        f"{(path + note)[:58]:<58} {statistics.median(walls):9.2f} {p95:9.2f} {statistics.median(db):9.2f} {size:10,}"
    )


def verifications(store: Store, reps: int) -> None:
    """The chain checked whole (`verify`, what every page view after a new entry cost before) against
    incrementally (`verify_new` from the last verified head, what the page does now), one new entry each."""
    log = AuditLog(store)
    full, incremental = [], []
    _, at = log.verify_new(None)
    for _ in range(max(1, reps // 4)):
        log.append("bench", "bench.tick", now=time.time() - 8 * 86400)
        t0 = time.perf_counter()
        assert log.verify().ok
        full.append((time.perf_counter() - t0) * 1000)
    for _ in range(reps):
        log.append("bench", "bench.tick", now=time.time() - 8 * 86400)
        t0 = time.perf_counter()
        verdict, at = log.verify_new(at)
        incremental.append((time.perf_counter() - t0) * 1000)
        assert verdict.ok
    print(f"{'chain verified whole (verify), after 1 new entry':<58} {statistics.median(full):9.2f}")
    print(f"{'chain verified from the last head (verify_new)':<58} {statistics.median(incremental):9.2f}")


async def measure(store: Store, reps: int) -> None:
    app = Starlette(routes=Dashboard(store, None, TOKEN).routes())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bench") as client:
        r = await client.post("/ui/login", data={"token": TOKEN})
        assert r.status_code == 303, r.text
        print(f"{'request':<58} {'p50 ms':>9} {'p95 ms':>9} {'db p50':>9} {'bytes':>10}")
        await timed(client, "/ui/audit?since=7d", reps, AuditLog(store), " (a new entry each)")
        await timed(client, "/ui/audit?since=7d", reps)
        await timed(client, "/ui/audit?since=7d&actor=nobody", reps)
        await timed(client, "/ui/audit?since=7d&tenant=tenant-1&action=keys.", reps)
        await timed(client, "/ui/audit/export?since=7d&tenant=tenant-1", max(1, reps // 10))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=20_000)
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--url", help="a store URL (default: a temp SQLite file)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store = open_store(args.url or f"sqlite:///{Path(tmp) / 'keel.db'}")
        try:
            rate = fill(store, args.entries, time.time())
            print(f"{args.entries:,} audit entries into {store.url.split('?')[0]} ({rate:,.0f} entries/s)")
            asyncio.run(measure(store, args.reps))
            verifications(store, args.reps)
        finally:
            store.close()


if __name__ == "__main__":
    main()
