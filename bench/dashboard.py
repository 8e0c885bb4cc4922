"""How long the dashboard's overview page takes on the server, over many trace rows.

Fills a store (SQLite by default, or --url postgresql://...) with --rows trace records spread over
30 days (5 tenants, 20 features, 6 models, 500 users), then requests `/ui?window=W` through the
dashboard's own ASGI routes with a logged-in session, --reps times per window, and prints wall time
per request and the page's own Server-Timing split (db = the rollup reads, render = the HTML).

    python bench/dashboard.py                    # 200,000 rows into a temp SQLite file
    python bench/dashboard.py --rows 1000000
    python bench/dashboard.py --url postgresql://postgres@127.0.0.1:5432/test
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

from keel.dashboard.overview import WINDOWS
from keel.dashboard.pages import Dashboard
from keel.store.open import open_store
from keel.store.protocols import Store
from keel.types import TraceRecord

TOKEN = "bench-admin-token"
DAYS = 30


def fill(store: Store, rows: int, now: float) -> float:
    """Append `rows` random records in batches as the trace writer would; return records/s."""
    rng = random.Random(1)
    features = [f"feature-{i}" for i in range(20)]
    models = ["gpt-4o-mini", "gpt-4o", "claude-sonnet-4-5", "claude-haiku-4-5", "llama-3-70b", "mistral-large"]
    t0 = time.perf_counter()
    for start in range(0, rows, 5000):
        batch = [
            TraceRecord(
                id=f"b{i}",
                started_at=now - rng.random() * DAYS * 86400,
                tenant=f"tenant-{rng.randrange(5)}",
                key_id=f"k{rng.randrange(20)}",
                user=f"user-{rng.randrange(500)}",
                feature=rng.choice(features),
                alias="main",
                provider="oai",
                model=rng.choice(models),
                status="ok" if rng.random() > 0.03 else "error",
                input_tokens=rng.randrange(10, 4000),
                output_tokens=rng.randrange(1, 1000),
                cost_usd=rng.random() / 100,
                latency_ms=rng.lognormvariate(6, 0.8),
                ttft_ms=rng.lognormvariate(5, 0.5),
            )
            for i in range(start, min(rows, start + 5000))
        ]
        store.append_traces(batch)
    return rows / (time.perf_counter() - t0)


async def measure(store: Store, reps: int) -> None:
    app = Starlette(routes=Dashboard(store, None, TOKEN).routes())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bench") as client:
        r = await client.post("/ui/login", data={"token": TOKEN})
        assert r.status_code == 303, r.text
        print(f"{'window':>7} {'p50 ms':>8} {'p95 ms':>8} {'db p50':>8} {'render p50':>11} {'bytes':>8}")
        for window in WINDOWS:
            walls, db, render = [], [], []
            size = 0
            for _ in range(reps):
                t0 = time.perf_counter()
                r = await client.get(f"/ui?window={window}")
                walls.append((time.perf_counter() - t0) * 1000)
                assert r.status_code == 200, r.text
                timing = dict(re.findall(r"(\w+);dur=([\d.]+)", r.headers["server-timing"]))
                db.append(float(timing["db"]))
                render.append(float(timing["render"]))
                size = len(r.content)
            walls.sort()
            p95 = walls[int(0.95 * (len(walls) - 1))]
            print(
                f"{window:>7} {statistics.median(walls):8.2f} {p95:8.2f} {statistics.median(db):8.2f}"
                f" {statistics.median(render):11.2f} {size:8,}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--reps", type=int, default=50)
    parser.add_argument("--url", help="a store URL (default: a temp SQLite file)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store = open_store(args.url or f"sqlite:///{Path(tmp) / 'keel.db'}")
        try:
            rate = fill(store, args.rows, time.time())
            print(f"{args.rows:,} trace rows over {DAYS} days into {store.url.split('?')[0]} ({rate:,.0f} records/s)")
            asyncio.run(measure(store, args.reps))
        finally:
            store.close()


if __name__ == "__main__":
    main()
