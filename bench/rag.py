"""RAG search: quality on msmarco-5k, query latency at 100,000 chunks under an ACL, re-index under load.

    python bench/rag.py quality            # nDCG@10, Recall@10/100, MRR@10: hybrid beside BM25-only and vector-only
    python bench/rag.py speed              # p50/p99 of hybrid queries at 100,000 chunks, the ACL admitting 10%
    python bench/rag.py reindex            # the same index re-built for another model under continuous queries
    python bench/rag.py reindex --model hash:384   # ... for a product model (the copy process embeds it itself)
    python bench/rag.py speed --url postgresql://…   # the same on PostgreSQL (filled once per schema)
    python bench/rag.py cost --chunks 20000 --db FILE   # a re-index without queries: this process's CPU a page
    python bench/rag.py cost --chunks 20000 --url postgresql://…   # ... and the database server's CPU (if local)
    python bench/rag.py write --chunks 20000   # ingestion's index writes: chunks per second, database size
    python bench/rag.py write --chunks 20000 --writers 4 --url postgresql://…   # the same, 4 documents at once

Quality reads /work/shared/data/retrieval/msmarco-5k in place (never copied) and embeds with the local
MiniLM; its vectors are cached under $TMPDIR/keel-rag-bench (5,050 texts take minutes on 2 busy cores).
The hybrid row is also printed on each half of the queries (odd/even position), since the fusion was
chosen on this set. Speed and reindex use synthetic text (Zipf-distributed words) and synthetic unit
vectors, 384-d, seeded per text, through the real index on SQLite (BM25 and vectors in process).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import hashlib
import itertools
import json
import os
import random
import resource
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # as `keel serve` sets it: read when numpy loads, just below
import numpy as np

from keel.cli.serve import tune_gc
from keel.rag import evaluate
from keel.rag.index import ChunkIn, DocumentRef, Index, IndexSpec
from keel.rag.index_models import Models
from keel.rag.index_rebuild import reindex
from keel.rag.search import Mode, SearchQuery
from keel.store.open import open_store

DATA = Path("/work/shared/data/retrieval/msmarco-5k")
CACHE = Path(tempfile.gettempdir()) / "keel-rag-bench"


class CachedMiniLM:
    """The local MiniLM with its vectors cached on disk by text hash (the bench's, not the product's)."""

    def __init__(self) -> None:
        from keel.embedding.model import LocalEmbedder

        self._model = LocalEmbedder()
        self.model_id = self._model.model_id
        CACHE.mkdir(exist_ok=True)
        self._path = CACHE / f"{self.model_id}.npz"
        self._known: dict[str, np.ndarray] = {}
        if self._path.exists():
            stored = np.load(self._path)
            self._known = dict(zip(stored["keys"].tolist(), stored["rows"], strict=True))

    def warm(self, texts: Sequence[str]) -> None:
        todo = [t for t in dict.fromkeys(texts) if _key(t) not in self._known]
        for i in range(0, len(todo), 256):
            rows = self._model.embed(todo[i : i + 256])
            self._known.update(zip(map(_key, todo[i : i + 256]), rows, strict=True))
            print(f"  embedded {min(i + 256, len(todo))}/{len(todo)}", flush=True)
        if todo:
            np.savez(self._path, keys=np.array(list(self._known)), rows=np.stack(list(self._known.values())))

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        return np.stack([self._known[_key(t)] for t in texts]).astype(np.float32)


class Synthetic:
    """Unit vectors seeded by each text's hash: the cost of real vectors without a model. Like the
    product's local model (keel.rag.index_models.LocalModel), it embeds in its own thread, not on the
    event loop."""

    def __init__(self, dim: int = 384, seed: str = "a") -> None:
        self.dim, self._seed = dim, seed
        self.model_id = f"synthetic-{dim}-{seed}"
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="bench-embed")

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        return await asyncio.get_running_loop().run_in_executor(self._thread, self._embed, texts)

    def _embed(self, texts: Sequence[str]) -> np.ndarray:
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for i, t in enumerate(texts):
            rng = np.random.default_rng(
                int.from_bytes(hashlib.blake2b((self._seed + t).encode(), digest_size=8).digest())
            )
            v = rng.standard_normal(self.dim).astype(np.float32)
            out[i] = v / np.linalg.norm(v)
        return out


def _key(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:24]


async def quality(args: argparse.Namespace) -> None:
    docs = [json.loads(line) for line in (DATA / "corpus.jsonl").read_text().split("\n") if line.strip()]
    queries = evaluate.read_queries(DATA / "queries.jsonl")
    qrels = evaluate.read_qrels(DATA / "qrels" / "test.tsv")
    model = CachedMiniLM()
    model.warm([d["text"] for d in docs] + list(queries.values()))
    models = Models()
    models.add("minilm", model)
    with tempfile.TemporaryDirectory() as tmp:
        store = open_store(f"sqlite:///{tmp}/rag.db")
        index = Index(store, models)
        await index.ensure("t", "ms", IndexSpec("minilm", {}))
        started = time.perf_counter()
        for d in docs:
            ref = DocumentRef("t", "ms", d["_id"], 1, d.get("title") or "", {}, (), (), None, 0.0, "msmarco")
            await index.replace(ref, [ChunkIn(0, d["text"], (), _key(d["text"]), len(d["text"].split()))])
        print(f"indexed {len(docs)} passages in {time.perf_counter() - started:.1f} s (vectors cached)")
        order = list(queries)
        for mode in ("lexical", "vector", "hybrid"):
            run: dict[str, list[str]] = {}
            for qid in order:
                result = await index.search(SearchQuery("t", "ms", queries[qid], top_k=100, mode=mode))
                run[qid] = [h.document_id for h in result.hits]
            name = {"lexical": "BM25 only", "vector": "vector only", "hybrid": index.fusion.describe()}[mode]
            print(f"{name:>58}  {evaluate.score(run, qrels).row()}")
            if mode == "hybrid":
                for half in (0, 1):
                    only = order[half::2]
                    print(f"{'  hybrid, half ' + str(half):>58}  {evaluate.score(run, qrels, only).row()}")
        await index.aclose()
        store.close()


WORDS = [f"w{i}" for i in range(20000)]
ZIPF = list(itertools.accumulate(1 / (rank + 1) for rank in range(len(WORDS))))  # word frequency ~ 1/rank


def synthetic_text(rng: random.Random, n: int, *, query: bool = False) -> str:
    """n words drawn by Zipf's law; a query's skip the 50 most frequent (what a stopword list would)."""
    words = rng.choices(WORDS[50:] if query else WORDS, cum_weights=ZIPF[50:] if query else ZIPF, k=n)
    return " ".join(words)


async def fill(index: Index, chunks: int, per_doc: int = 5, writers: int = 1) -> None:
    """`writers` tasks write the documents at once (each its share, d mod writers), as ingestion's workers do."""
    await index.ensure("t", "big", IndexSpec("synthetic", {}))
    started = time.perf_counter()

    async def writer(k: int) -> None:
        rng = random.Random(1 + k)
        for d in range(k, chunks // per_doc, writers):
            allowed = d % 10 == 0  # 10% of the documents admit group "readers"
            groups = ("readers",) if allowed else (f"team{d % 97}",)
            ref = DocumentRef("t", "big", f"d{d}", 1, f"doc {d}", {"n": d}, (), groups, None, 0.0, "synthetic")
            body = [ChunkIn(i, synthetic_text(rng, 60), (), f"{d}-{i}", 60) for i in range(per_doc)]
            await index.replace(ref, body)
            if d % 2000 == 0:
                print(f"  {d * per_doc} chunks, {time.perf_counter() - started:.0f} s", flush=True)

    await asyncio.gather(*(writer(k) for k in range(writers)))


async def timed_queries(index: Index, n: int, rng: random.Random, mode: Mode = "hybrid") -> list[float]:
    """Wall milliseconds per query, one at a time; `CPU` keeps the process's CPU seconds they took (all
    threads), which a busy machine inflates far less than wall time."""
    out = []
    cpu = time.process_time()
    STAGES.clear()
    for _ in range(n):
        text = synthetic_text(rng, 4, query=True)
        t = time.perf_counter()
        result = await index.search(SearchQuery("t", "big", text, top_k=10, groups=("readers",), mode=mode))
        out.append((time.perf_counter() - t) * 1000)
        assert all(int(h.document_id[1:]) % 10 == 0 for h in result.hits)
        for stage, ms in result.ms.items():
            STAGES.setdefault(stage, []).append(ms)
    CPU.append((time.process_time() - cpu) * 1000 / n)
    return out


MODEL = ["synthetic-b"]  # the model `reindex` builds for (--model)
CPU: list[float] = []
STAGES: dict[str, list[float]] = {}  # the last run's milliseconds per stage (SearchResult.ms)


def pct(values: list[float], p: float) -> float:
    return sorted(values)[min(len(values) - 1, int(len(values) * p))]


async def with_index(args: argparse.Namespace, body: Any) -> None:
    tune_gc()  # the collector as `keel serve` sets it
    models = Models()
    models.add("synthetic", Synthetic(seed="a"))
    models.add("synthetic-b", Synthetic(seed="b"))
    db = Path(args.db) if args.db else Path(tempfile.mkdtemp()) / "rag.db"
    store = open_store(args.url or f"sqlite:///{db}")
    # a re-index loads its new build in a subprocess
    index = Index(store, models, url=store.url, in_process_mb=args.in_process_mb)
    if await index.active("t", "big") is None:
        await fill(index, args.chunks)
    if args.url and args.url.startswith("postgres"):  # what autovacuum would have done by now
        import psycopg

        with psycopg.connect(args.url, autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE")
        rss, started = _rss_mb(), time.perf_counter()
        here = await index.hold("t", "big")
        print(
            f"searched {'in process' if here else 'in the database (pgvector + full text)'}"
            f" (rag.in_process_mb {args.in_process_mb})"
            + (
                f": loaded in {time.perf_counter() - started:.1f} s, ~{index.vectors.nbytes / 2**20:.0f} MiB"
                f" estimated, RSS +{_rss_mb() - rss:.0f} MiB"
                if here
                else ""
            )
        )
    await body(index)
    await index.aclose()
    store.close()


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


async def speed(index: Index) -> None:
    rng = random.Random(2)
    started = time.perf_counter()
    await timed_queries(index, 1, rng)
    print(f"first query (loads the build's vectors): {(time.perf_counter() - started) * 1000:.0f} ms")
    for mode in ("hybrid", "lexical", "vector"):
        ms = await timed_queries(index, 300, rng, mode)  # type: ignore[arg-type]
        print(
            f"{mode:>8}: p50 {statistics.median(ms):.1f} ms  p99 {pct(ms, 0.99):.1f} ms  CPU {CPU[-1]:.1f} ms/query"
            f"  (300 queries, ACL admits 10%; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)"
        )
        stages = [s for s in ("builds", "embed", "admitted", "lexical", "vector", "fuse", "fetch") if s in STAGES]
        print(
            " " * 10
            + "  ".join(f"{s} {statistics.median(STAGES[s]):.1f}/{pct(STAGES[s], 0.99):.1f}" for s in stages)
            + "  (p50/p99 ms per stage)"
        )


class GcPasses:
    """The collector's passes while a re-index runs: (start, generation, ms) each."""

    def __init__(self) -> None:
        self.passes: list[tuple[float, int, float]] = []
        self._began = 0.0

    def seen(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._began = time.perf_counter()
        else:
            self.passes.append((self._began, info["generation"], (time.perf_counter() - self._began) * 1000))

    def between(self, begin: float, end: float) -> str:
        inside = [(g, ms) for t, g, ms in self.passes if begin <= t < end]
        counts = "/".join(str(sum(1 for g, _ in inside if g == gen)) for gen in (0, 1, 2))
        return f"; collector passes (gen 0/1/2) {counts}, longest {max((ms for _, ms in inside), default=0):.0f} ms"


def client_io(url: str) -> dict[str, tuple[int, int]] | None:
    """PostgreSQL 16+: the buffers client backends (searches and writers, not the background writer or
    the checkpointer) have evicted and written themselves since the server started, per context
    (pg_stat_io: "normal" is the shared pool, "bulkwrite" a COPY's own ring); else None."""
    if not url.startswith("postgres"):
        return None
    import psycopg

    try:
        with psycopg.connect(url, autocommit=True) as conn:
            rows = conn.execute(
                "SELECT context, sum(evictions), sum(writes) FROM pg_stat_io WHERE backend_type = 'client backend'"
                " GROUP BY context"
            ).fetchall()
    except psycopg.Error:  # before 16: no pg_stat_io
        return None
    return {str(r[0]): (int(r[1] or 0), int(r[2] or 0)) for r in rows}


def print_io_since(url: str, before: dict[str, tuple[int, int]] | None) -> None:
    if before is None or (now := client_io(url)) is None:
        return
    moved = {c: (e - before.get(c, (0, 0))[0], w - before.get(c, (0, 0))[1]) for c, (e, w) in now.items()}
    said = ", ".join(f"{c} {e} evicted / {w} written" for c, (e, w) in sorted(moved.items()) if e or w)
    print(f"  database: buffers client backends evicted and wrote themselves (pg_stat_io): {said or 'none'}")


BEFORE = 1000  # queries before the re-index: its threshold is twice their p99 (the 10th slowest; of 200
# queries, the 2nd slowest moved 15.5-30.5 ms between runs of one machine)


async def rebuild(index: Index) -> None:
    rng = random.Random(3)
    base = await timed_queries(index, BEFORE, rng)
    p99 = pct(base, 0.99)
    print(f"before: p50 {statistics.median(base):.1f} ms  p99 {p99:.1f} ms ({BEFORE} queries)")
    active = await index.active("t", "big")
    assert active is not None
    builds: list[str] = []
    latencies: list[float] = []
    failures = 0
    stamps: list[float] = []  # when each query started
    stages: list[dict[str, float]] = []  # each query's milliseconds per stage (SearchResult.ms)
    done = asyncio.Event()

    async def load() -> None:
        nonlocal failures
        while not done.is_set():
            t = time.perf_counter()
            try:
                result = await index.search(
                    SearchQuery("t", "big", synthetic_text(rng, 4, query=True), groups=("readers",))
                )
                builds.append(result.build)
                stages.append(dict(result.ms))
            except Exception as exc:  # counted, never expected
                failures += 1
                stages.append({})
                print("query failed:", exc)
            latencies.append((time.perf_counter() - t) * 1000)
            stamps.append(t)

    copied = [0.0]  # when the copy's last page was written: then the new build's load and index, the swap
    readied: list[float] = []  # when the store began and ended making the new build ready (pgvector: HNSW)
    prepare = index.store.rag_prepare

    def timed_prepare(build: str) -> None:
        readied.append(time.perf_counter())
        try:
            prepare(build)
        finally:
            readied.append(time.perf_counter())

    index.store.rag_prepare = timed_prepare  # type: ignore[method-assign]
    activate = index.store.rag_activate

    def timed_activate(*args: Any) -> Any:
        readied.extend([time.perf_counter()] * (2 - len(readied)))  # none made before a held build's swap
        return activate(*args)

    index.store.rag_activate = timed_activate  # type: ignore[method-assign]
    calls: dict[str, list[tuple[float, float]]] = {"rag_allowed": [], "rows since": []}  # (start, ms)

    def timed(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any) -> Any:
            t = time.perf_counter()
            try:
                return fn(*args)
            finally:
                calls[name].append((t, (time.perf_counter() - t) * 1000))

        return call

    allowed, since = index.store.rag_allowed, index.vectors._vectors
    index.store.rag_allowed = timed("rag_allowed", allowed)  # type: ignore[method-assign]
    index.vectors._vectors = timed("rows since", since)  # the admitted stage: both, at once

    def progress(n: int, total: int) -> None:
        copied[0] = time.perf_counter()
        if n % 20000 < 400:
            print(f"  re-indexed {n}/{total} chunks", flush=True)

    pauses = GcPasses()
    gc.callbacks.append(pauses.seen)
    io = client_io(index.store.url)
    loader = asyncio.create_task(load())
    started = time.perf_counter()
    print(f"re-index started at {time.strftime('%H:%M:%S')}", flush=True)
    rebuilt = await reindex(index, "t", "big", IndexSpec(MODEL[0], {}), progress=progress)
    took = time.perf_counter() - started
    answered = len(builds)
    while len(builds) < answered + 50:  # queries answered by the new build, after the swap
        await asyncio.sleep(0.05)
    done.set()
    await loader
    gc.callbacks.remove(pauses.seen)
    switches = sum(1 for a, b in itertools.pairwise(builds) if a != b)
    slow = sum(1 for ms in latencies if ms > 2 * p99)
    print(
        f"re-index of {rebuilt.chunks} chunks in {took:.0f} s under load: {len(latencies)} queries, {failures} failed,"
        f" {slow} slower than 2 x p99 ({2 * p99:.0f} ms), p50 {statistics.median(latencies):.1f} ms"
        f" p99 {pct(latencies, 0.99):.1f} ms max {max(latencies):.0f} ms; builds served: {builds[0]} then"
        f" {builds[-1]}, {switches} switch(es); load average {os.getloadavg()[0]:.1f}"
    )
    swapped = started + took
    slow_after = sum(1 for ms, t in zip(latencies, stamps, strict=True) if ms > 2 * p99 and t >= swapped)
    index.store.rag_prepare, index.store.rag_allowed, index.vectors._vectors = prepare, allowed, since  # type: ignore[method-assign]
    index.store.rag_activate = activate  # type: ignore[method-assign]
    phases = [("copy", started, copied[0]), ("load", copied[0], readied[0]), ("ready", *readied[:2])]
    for name, begin, end in [*phases, ("swap", readied[1], swapped)]:  # ready: pgvector's HNSW index made
        during = [ms for ms, t in zip(latencies, stamps, strict=True) if begin <= t < end]
        print(
            f"  {name}: {end - begin:.1f} s, {len(during)} queries, {sum(1 for ms in during if ms > 2 * p99)}"
            " slower than 2 x p99"
            + (f", p50 {statistics.median(during):.1f} ms max {max(during):.0f} ms" if during else "")
            + "".join(
                f"; {call} p50 {statistics.median(ms):.1f} max {max(ms):.0f}"
                for call, timings in calls.items()
                if (ms := [ms for t, ms in timings if begin <= t < end])
            )
            + pauses.between(begin, end)
        )
    print_io_since(index.store.url, io)
    worst = sorted(zip(latencies, stamps, stages, strict=True), key=lambda x: -x[0])[:5]
    print(
        f"slow ones started after the swap: {slow_after}; the 5 slowest (ms @ s from the start):"
        f" {', '.join(f'{ms:.0f} @ {t - started:.1f}' for ms, t, _ in worst)}; the re-index took {took:.1f} s"
    )
    print(
        "their stages (ms), and the collector's passes during each:",
        *(
            " ".join(f"{k} {v:.0f}" for k, v in s.items())
            + "".join(f"; gen {g} {p:.0f} ms" for b, g, p in pauses.passes if t <= b < t + ms / 1000 and p >= 1)
            for ms, t, s in worst
        ),
        sep="\n  ",
    )


def database_cpu() -> float | None:
    """CPU seconds of the PostgreSQL server's processes on this machine so far, the exited ones included
    (from /proc; the bench's pgserver runs here); None where there are none to see."""
    total, seen = 0, False
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/comm") as f:
                if not f.read().startswith("postgres"):
                    continue
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        # utime, stime, and those of its reaped children (the postmaster's: backends that have exited)
        total, seen = total + sum(int(x) for x in fields[11:15]), True
    return total / os.sysconf("SC_CLK_TCK") if seen else None


async def cost(index: Index) -> None:
    """A re-index with no queries: what it costs the serving process (its CPU, all threads) and how late a
    10 ms sleep on its event loop wakes meanwhile (what a query waiting for the GIL or the loop sees);
    CPU time, unlike query latency, barely moves with other processes' load. The probe wakes every 10 ms;
    its own CPU (measured alone first) is taken off."""
    late: list[float] = []
    pages = [0]
    done = asyncio.Event()

    async def probe() -> None:
        while not done.is_set():
            t = time.perf_counter()
            await asyncio.sleep(0.01)
            late.append((time.perf_counter() - t) * 1000 - 10)

    def progress(n: int, total: int) -> None:
        pages[0] += 1

    calibrate = time.process_time()  # the probe's own CPU per wake-up, alone (subtracted below)
    prober = asyncio.create_task(probe())
    await asyncio.sleep(3)
    per_wake = (time.process_time() - calibrate) / max(len(late), 1)
    late.clear()
    database = database_cpu() if index.store.url.startswith("postgres") else None
    cpu, children, started = time.process_time(), resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    rebuilt = await reindex(index, "t", "big", IndexSpec(MODEL[0], {}), progress=progress)
    took, cpu = time.perf_counter() - started, time.process_time() - cpu - per_wake * len(late)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if database is not None and (now := database_cpu()) is not None:
        print(f"  the database server's processes (PostgreSQL, this machine): CPU {now - database:.2f} s")
    done.set()
    await prober
    sub = after.ru_utime + after.ru_stime - children.ru_utime - children.ru_stime
    print(
        f"re-index of {rebuilt.chunks} chunks ({pages[0]} pages, model {MODEL[0]}) in {took:.1f} s: this process's CPU"
        f" {cpu:.2f} s ({cpu * 1000 / max(pages[0], 1):.1f} ms a page; the probe's {per_wake * 1e6:.0f} us a wake-up"
        f" taken off), subprocesses' {sub:.2f} s; event-loop lateness p50 {statistics.median(late):.2f}"
        f" p99 {pct(late, 0.99):.2f} max {max(late):.0f} ms; load average {os.getloadavg()[0]:.1f} on"
        f" {os.cpu_count()} cores"
    )


async def write(args: argparse.Namespace) -> None:
    """Fill a new index (synthetic vectors: the embedding is not what is measured) with `--writers` tasks at
    once and report the write rate and, on SQLite, the file's size. `--url`: a PostgreSQL schema, emptied of
    RAG rows first."""
    models = Models()
    models.add("synthetic", Synthetic(seed="a"))
    with tempfile.TemporaryDirectory() as tmp:
        store = open_store(args.url or f"sqlite:///{tmp}/rag.db")
        index = Index(store, models, threads=max(4, args.writers))
        if args.url:
            await index.run(store.rag_purge, "t")
        cpu, started = time.process_time(), time.perf_counter()
        await fill(index, args.chunks, writers=args.writers)
        took, cpu = time.perf_counter() - started, time.process_time() - cpu
        await index.aclose()
        store.close()
        size = "" if args.url else f"; database {sum(f.stat().st_size for f in Path(tmp).iterdir()) / 2**20:.0f} MB"
        print(
            f"wrote {args.chunks} chunks in {took:.1f} s with {args.writers} writer(s): {args.chunks / took:,.0f}"
            f" chunks/s, CPU {cpu:.1f} s{size} (load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["quality", "speed", "reindex", "cost", "write"])
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument(
        "--model", default="synthetic-b", help="reindex: the new build's model (a product one: hash:384, local)"
    )
    parser.add_argument("--writers", type=int, default=1, help="write: documents written at once")
    parser.add_argument("--db", help="keep the synthetic index in this SQLite file (reused when it exists)")
    parser.add_argument("--url", help="a store URL instead (e.g. postgresql://…?options=-csearch_path%%3Dbench)")
    parser.add_argument(
        "--in-process-mb", type=int, default=1024,
        help="PostgreSQL: rag.in_process_mb (0: pgvector and full text in the database; default as the gateway's)",
    )  # fmt: skip
    args = parser.parse_args()
    MODEL[0] = args.model
    if args.what == "quality":
        asyncio.run(quality(args))
    elif args.what == "write":
        asyncio.run(write(args))
    elif args.what == "speed":
        asyncio.run(with_index(args, speed))
    elif args.what == "cost":
        asyncio.run(with_index(args, cost))
    else:
        asyncio.run(with_index(args, rebuild))


if __name__ == "__main__":
    main()
