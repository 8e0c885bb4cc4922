"""Cache lookup latency: `python bench/cache_lookup.py [--entries 100000] [--queries 500] [--no-pg]`.

Semantic: one partition (the worst case: every search scans or walks all of it) holding --entries
random unit 384-d float32 vectors, the size of the default embedding model's output; random vectors
suffice for a latency figure, the real model's are not needed. Each query is a stored vector plus
noise (similarity ≈ 0.95), searched with min_similarity 0.9, one at a time; p50/p99 over --queries.
Recall: how often the answer is the true nearest stored vector (numpy's exact argmax), for those
near-duplicate queries and, apart, for 200 random unit queries searched with min_similarity -1.
Backends: `MemoryVectors` (signature search past `APPROX_ROWS`, and forced exact for comparison),
`SqliteVectors` (first use of the partition loads it from the file: timed separately) and
`PgVectors` on a `pgserver` PostgreSQL 16 + pgvector with an HNSW index. Bulk loading goes around
the stores (executemany / COPY into the tables they created) to save minutes.
`--crossover` instead times the memory index's exact and signature searches at sizes up to --entries.
Exact: `get` p50/p99 of --gets hits among 10,000 entries of 2 KB, for each CacheStore backend
(Redis at --redis). Target (the Caches issue): ≤ 10 ms p50 semantic lookup at 100,000 entries.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import shutil
import sqlite3
import statistics
import tempfile
import time
import warnings
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np

from keel.store.memory.cache import MemoryCache
from keel.store.memory.vectors import APPROX_ROWS, MemoryVectors
from keel.store.postgres.vectors import PgVectors
from keel.store.protocols import CacheEntry, CacheStore, VectorHit, VectorIndex
from keel.store.redis.cache import RedisCache
from keel.store.sqlite.cache import SqliteCache
from keel.store.sqlite.vectors import SqliteVectors

DIM = 384
TARGET_MS = 10.0
SLOT = ("acme", "partition-1", "bench-model")


def unit_rows(rng: np.random.Generator, n: int) -> Any:
    m = rng.standard_normal((n, DIM)).astype(np.float32)
    return m / np.linalg.norm(m, axis=1, keepdims=True)


def queries_near(rng: np.random.Generator, stored: Any, n: int) -> Any:
    picked = stored[rng.integers(0, len(stored), n)]
    noisy = picked + 0.33 * unit_rows(rng, n)  # cos ≈ 1/√(1 + 0.33²) ≈ 0.95
    return noisy / np.linalg.norm(noisy, axis=1, keepdims=True)


class Queries:
    """Near-duplicate and random queries, with the key of each one's true nearest stored vector."""

    def __init__(self, rng: np.random.Generator, stored: Any, n: int) -> None:
        self.near = queries_near(rng, stored, n)
        self.random = unit_rows(rng, 200)
        self.near_truth = [f"k{i}" for i in np.argmax(self.near @ stored.T, axis=1)]
        self.random_truth = [f"k{i}" for i in np.argmax(self.random @ stored.T, axis=1)]


def pct(samples: list[float], p: float) -> float:
    s = sorted(samples)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))]


async def timed(calls: list[Callable[[], Awaitable[Any]]]) -> tuple[list[float], list[Any]]:
    """Milliseconds per call, one at a time; and what each answered."""
    ms, out = [], []
    for call in calls:
        t0 = time.perf_counter()
        out.append(await call())
        ms.append((time.perf_counter() - t0) * 1000)
    return ms, out


def recall(hits: list[VectorHit | None], truth: list[str]) -> float:
    return sum(h is not None and h.key == t for h, t in zip(hits, truth, strict=True)) / len(truth)


async def search(index: VectorIndex, queries: Queries, name: str, note: str = "") -> dict[str, Any]:
    now = time.time()
    near = [list(map(float, q)) for q in queries.near]
    for q in near[:20]:  # warm-up: pools, plans, the first load
        await index.nearest(*SLOT, q, 0.9, now)
    ms, hits = await timed([lambda q=q: index.nearest(*SLOT, q, 0.9, now) for q in near])  # type: ignore[misc]
    anywhere = [await index.nearest(*SLOT, list(map(float, q)), -1.0, now) for q in queries.random]
    return {
        "backend": name,
        "ms": ms,
        "found": sum(h is not None for h in hits),
        "recall": recall(hits, queries.near_truth),
        "recall_random": recall(anywhere, queries.random_truth),
        "note": note,
    }


async def bench_memory(stored: Any, queries: Queries, approx_rows: int, name: str) -> dict[str, Any]:
    index = MemoryVectors(len(stored) + 1, approx_rows=approx_rows)
    stale = time.time() + 3600
    t0 = time.perf_counter()
    for i, v in enumerate(stored):
        await index.add(*SLOT, f"k{i}", v, stale)
    add_us = (time.perf_counter() - t0) / len(stored) * 1e6
    return await search(index, queries, name, f"add {add_us:.0f} µs each")


async def bench_sqlite(stored: Any, queries: Queries, tmp: Path) -> dict[str, Any]:
    url = f"sqlite:///{tmp}/keel-cache.db"
    index = SqliteVectors(url, len(stored) + 1)
    await index.add(*SLOT, "k0", stored[0], time.time() + 3600)  # the store creates its schema
    await index.aclose()
    stale = time.time() + 3600
    with sqlite3.connect(tmp / "keel-cache.db") as conn:
        conn.executemany(
            "INSERT OR REPLACE INTO cache_vectors (tenant, partition, model, key, vector, stale_until, user)"
            " VALUES (?, ?, ?, ?, ?, ?, NULL)",
            ((*SLOT, f"k{i}", v.tobytes(), stale) for i, v in enumerate(stored)),
        )
    index = SqliteVectors(url, len(stored) + 1)
    t0 = time.perf_counter()
    await index.nearest(*SLOT, list(map(float, queries.near[0])), 0.9, time.time())
    load_ms = (time.perf_counter() - t0) * 1000
    row = await search(index, queries, "SqliteVectors", f"first use loads the partition: {load_ms:.0f} ms")
    await index.aclose()
    return row


async def bench_pg(stored: Any, queries: Queries, uri: str) -> dict[str, Any]:
    import psycopg

    index = PgVectors(uri, len(stored) + 1)
    await index.add(*SLOT, "k0", list(map(float, stored[0])), time.time() + 3600)  # creates the table
    table = f"keel_cache_vectors_{DIM}"
    t0 = time.perf_counter()
    with psycopg.connect(uri, autocommit=True) as conn:
        conn.execute(f"DROP INDEX {table}_hnsw")  # building once after the copy is far faster
        conn.execute(f"TRUNCATE {table}")
        stale = time.time() + 3600
        with conn.cursor().copy(
            f"COPY {table} (tenant, partition, model, key, embedding, stale_until) FROM STDIN"
        ) as copy:
            for i, v in enumerate(stored):
                copy.write_row((*SLOT, f"k{i}", "[" + ",".join(map(repr, map(float, v))) + "]", stale))
        conn.execute("SET maintenance_work_mem = '1GB'")
        conn.execute(f"CREATE INDEX {table}_hnsw ON {table} USING hnsw (embedding vector_cosine_ops)")
        conn.execute(f"ANALYZE {table}")
        plan = conn.execute(
            f"EXPLAIN SELECT key FROM {table} WHERE tenant = %s AND partition = %s AND model = %s AND stale_until > %s"
            " ORDER BY embedding <=> %s::vector LIMIT 1",
            (*SLOT, time.time(), "[" + ",".join(map(repr, map(float, queries.near[0]))) + "]"),
        ).fetchall()
    build_s = time.perf_counter() - t0
    uses = "HNSW index" if any("hnsw" in line[0] for line in plan) else "no HNSW: " + plan[0][0].strip()
    row = await search(index, queries, "PgVectors", f"plan: {uses}; load + index build {build_s:.0f} s")
    await index.aclose()
    return row


async def crossover(rng: np.random.Generator, largest: int, n: int) -> None:
    """p50/p99 of the memory index's exact and signature searches, partition by partition size."""
    print(f"\ncrossover: {n} near-duplicate queries per size, min_similarity 0.9")
    print(f"{'rows':>8} {'exact p50':>10} {'exact p99':>10} {'approx p50':>11} {'approx p99':>11}")
    for size in [s for s in (1000, 2000, 5000, 10_000, 20_000, 50_000, 100_000) if s <= largest]:
        stored = unit_rows(rng, size)
        queries = Queries(rng, stored, n)
        figures = []
        for approx_rows in (size, 0):
            row = await bench_memory(stored, queries, approx_rows, "")
            figures += [statistics.median(row["ms"]), pct(row["ms"], 99)]
        print(f"{size:>8,} " + " ".join(f"{f:>10.3f}" for f in figures))


def start_pgserver() -> tuple[Any, str, str]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pgserver

        pgdata = tempfile.mkdtemp(prefix="keel-bench-pg-")  # not under a private dir: pgserver may run as its own user
        server = pgserver.get_server(pgdata, cleanup_mode="stop")
        return server, server.get_uri(), pgdata


async def bench_gets(store: CacheStore, name: str, n: int) -> dict[str, Any]:
    now = time.time()
    for i in range(10_000):
        await store.put(CacheEntry("acme", f"key-{i:05d}", secrets.token_bytes(2048), now, now + 3600, now + 7200))
    keys = [f"key-{i:05d}" for i in np.random.default_rng(3).integers(0, 10_000, n)]
    for k in keys[:50]:
        await store.get("acme", k, now)
    ms, got = await timed([lambda k=k: store.get("acme", k, now) for k in keys])  # type: ignore[misc]
    await store.aclose()
    return {"backend": name, "ms": ms, "found": sum(e is not None for e in got)}


async def main(args: argparse.Namespace) -> None:
    rng = np.random.default_rng(1)
    if args.crossover:
        await crossover(rng, args.entries, args.queries)
        return
    stored = unit_rows(rng, args.entries)
    queries = Queries(rng, stored, args.queries)
    tmp = Path(tempfile.mkdtemp(prefix="keel-bench-cache-"))
    rows = [
        await bench_memory(stored, queries, APPROX_ROWS, "MemoryVectors"),
        await bench_memory(stored, queries, len(stored) + 1, "exact scan"),
        await bench_sqlite(stored, queries, tmp),
    ]
    if not args.no_pg:
        server, uri, pgdata = start_pgserver()
        try:
            rows.append(await bench_pg(stored, queries, uri))
        finally:
            server.cleanup()
            shutil.rmtree(pgdata, ignore_errors=True)
    print(f"\nsemantic lookup: {args.entries:,} random unit {DIM}-d vectors in one partition, {args.queries} queries")
    report(rows, args.queries, TARGET_MS)
    prefix = f"keel:bench:{secrets.token_hex(4)}:"
    gets = [
        await bench_gets(MemoryCache(20_000), "MemoryCache", args.gets),
        await bench_gets(SqliteCache(f"sqlite:///{tmp}/exact.db", 20_000), "SqliteCache", args.gets),
        await bench_gets(RedisCache(args.redis, 20_000, prefix=prefix), "RedisCache", args.gets),
    ]
    import redis

    client = redis.Redis.from_url(args.redis)
    keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
    for i in range(0, len(keys), 1000):
        client.delete(*keys[i : i + 1000])
    client.close()
    print(f"\nexact get: 10,000 entries of 2 KB, {args.gets} hits")
    report(gets, args.gets, None)
    shutil.rmtree(tmp, ignore_errors=True)


def report(rows: list[dict[str, Any]], n: int, target: float | None) -> None:
    recalls = "recall  random" if "recall" in rows[0] else ""
    print(f"{'backend':<15} {'p50 ms':>8} {'p99 ms':>8} {'found':>8}  {recalls}  {'verdict' if target else ''}")
    for r in rows:
        p50 = statistics.median(r["ms"])
        verdict = ("PASS" if p50 <= target else "MISS") if target else ""
        found = f"{r['found']:>4}/{n}" if "found" in r else ""
        rec = f"{r['recall']:>6.1%} {r['recall_random']:>7.1%}" if "recall" in r else ""
        print(
            f"{r['backend']:<15} {p50:>8.3f} {pct(r['ms'], 99):>8.3f} {found:>8}  {rec}  {verdict:<4}  {r.get('note', '')}"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--gets", type=int, default=2000)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--no-pg", action="store_true")
    parser.add_argument("--crossover", action="store_true", help="exact vs signature search by partition size")
    asyncio.run(main(parser.parse_args()))
