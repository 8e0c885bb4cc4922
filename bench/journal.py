"""What a local trace journal would cost the request path, and what SIGKILL loses without one.

`python bench/journal.py [--records 20000]` prices a journal; `python bench/journal.py --kill [--rate 200]`
measures the loss window instead: it runs `keel serve` (SQLite, the simulated provider), calls it at
--rate requests/s for a few seconds, sends SIGKILL, and compares the calls answered with the rows
stored, --runs times: how many were lost and how long before the kill the oldest lost one was answered.

A SIGKILL loses the records queued for the trace writer (docs/decisions/0012-trace-durability.md).
An append-only journal written before a response ends would keep them, but its work would run on
the event loop, per call: serialise the record, redact it (the journal must not be a plaintext copy
of prompts and keys that redaction is there to remove), and append it with write(2). This prints the
CPU and latency of each piece per record, beside what the request path pays today (`put`: one deque
append), for chat records of ~1 KB and ~8 KB as the gateway emits them. Run it on an idle machine;
the budget for all of issue 10's fixes together is 0.03 ms of CPU per request.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import sqlite3
import statistics
import subprocess
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import httpx
import orjson

import served
from keel.config import RedactionConfig
from keel.traces.redaction import Redactor
from keel.types import TraceRecord

WORDS = [
    "the",
    "gateway",
    "routes",
    "each",
    "call",
    "to",
    "a",
    "provider",
    "and",
    "records",
    "what",
    "it",
    "cost",
    "and",
    "how",
    "long",
    "it",
    "took",
]


def record(i: int, size: int, rng: random.Random) -> TraceRecord:
    text = " ".join(rng.choice(WORDS) for _ in range(size // 5))[:size]
    return TraceRecord(
        id=f"{i:028d}",
        started_at=time.time(),
        tenant="acme",
        key_id="key-1",
        user="user-42",
        feature="chat",
        tags={"env": "prod"},
        alias="gpt-4o-mini",
        provider="openai",
        model="gpt-4o-mini",
        request={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}]},
        response={"id": "chatcmpl-1", "content": text[:200], "tool_calls": [], "finish_reason": "stop"},
        input_tokens=size // 4,
        output_tokens=50,
        cost_usd=0.0001,
        latency_ms=120.0,
        attempts=1,
    )


_ACCOUNTING = ("id", "started_at", "tenant", "key_id", "user", "feature", "session", "alias", "provider", "model",
               "status", "input_tokens", "output_tokens", "cost_usd", "latency_ms")  # fmt: skip


def _accounting(r: TraceRecord) -> dict[str, object]:
    """What a lean journal would keep: enough to count the call's spend, no payloads (nothing to redact
    but the attribution values)."""
    return {name: getattr(r, name) for name in _ACCOUNTING}


def per_record_us(work: Callable[[TraceRecord], object], records: list[TraceRecord], rounds: int = 5) -> float:
    """Best of `rounds` of CPU time over all records, per record, in µs."""
    best = float("inf")
    for _ in range(rounds):
        t = time.process_time()
        for r in records:
            work(r)
        best = min(best, time.process_time() - t)
    return best / len(records) * 1e6


def write_latency_us(fd: int, lines: list[bytes]) -> tuple[float, float]:
    """p50 and p99 wall time of one write(2) of a line, in µs."""
    samples = []
    for line in lines:
        t = time.perf_counter()
        os.write(fd, line)
        samples.append((time.perf_counter() - t) * 1e6)
    q = statistics.quantiles(samples, n=100)
    return q[49], q[98]


def bench(size: int, n: int, directory: Path) -> None:
    rng = random.Random(size)
    records = [record(i, size, rng) for i in range(n)]
    redactor = Redactor(RedactionConfig(), [])
    lines = [orjson.dumps(r) + b"\n" for r in records]
    queue: deque[TraceRecord] = deque()
    path = directory / f"journal-{size}.jsonl"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    it = iter(lines * 5)
    try:
        lean = [_accounting(r) for r in records[:1]]
        figures = {
            "put (today)": per_record_us(queue.append, records),
            "lean line (accounting only)": per_record_us(lambda r: os.write(fd, orjson.dumps(_accounting(r))), records),
            "serialise (orjson)": per_record_us(lambda r: orjson.dumps(r), records),
            "redact (default policy)": per_record_us(redactor.scrub, records),
            "append (write, no fsync)": per_record_us(lambda r: os.write(fd, next(it)), records),
        }
        p50, p99 = write_latency_us(fd, lines)
        synced = []
        for line in lines[:200]:
            t = time.perf_counter()
            os.write(fd, line)
            os.fdatasync(fd)
            synced.append((time.perf_counter() - t) * 1e6)
    finally:
        os.close(fd)
        path.unlink()
    journal = sum(v for k, v in figures.items() if k not in ("put (today)", "lean line (accounting only)"))
    print(
        f"\nchat record, ~{size:,} B prompt ({len(lines[0]):,} B as a JSON line, {len(orjson.dumps(lean[0]))} B lean), {n:,} records"
    )
    for name, us in figures.items():
        print(f"  {name:<28} {us:8.2f} µs CPU per record")
    print(f"  {'journal total':<28} {journal:8.2f} µs CPU per record (budget for all of issue 10: 30 µs)")
    print(f"  write(2) latency            p50 {p50:.1f} µs, p99 {p99:.1f} µs per record")
    print(f"  write + fdatasync latency   p50 {statistics.median(synced):.0f} µs per record")


# ---- the loss window of SIGKILL ---------------------------------------------------------------


def serve(cwd: Path) -> tuple[subprocess.Popen[bytes], str, str]:
    """`keel serve` in `cwd`: (process, base URL, its bootstrap key)."""
    port = served.free_port()
    proc, key = served.serve(cwd, port, providers={"sim": {"type": "simulated", "ttft_ms": 0}})
    return proc, f"http://127.0.0.1:{port}", key


def load(url: str, key: str, rate: float, answered: list[tuple[str, float]], stop: threading.Event) -> None:
    """Calls at `rate`/s (paced), noting each answered call's trace id and when its answer ended."""
    body = {"model": "demo", "messages": [{"role": "user", "content": "hi"}]}
    with httpx.Client(base_url=url, headers={"authorization": f"Bearer {key}"}, timeout=5) as h:
        due = time.monotonic()
        while not stop.is_set():
            due += 1 / rate
            try:
                r = h.post("/v1/chat/completions", json=body)
            except httpx.HTTPError:
                return
            if r.status_code == 200:
                answered.append((r.headers["x-keel-trace-id"], time.monotonic()))
            time.sleep(max(0.0, due - time.monotonic()))


def kill_run(rate: float, seconds: float, threads: int) -> tuple[int, int, float]:
    """One run: (answered, lost, ms between the oldest lost answer and the kill)."""
    with tempfile.TemporaryDirectory() as tmp:
        proc, url, key = serve(Path(tmp))
        answered: list[tuple[str, float]] = []
        stop = threading.Event()
        workers = [
            threading.Thread(target=load, args=(url, key, rate / threads, answered, stop)) for _ in range(threads)
        ]
        for w in workers:
            w.start()
        time.sleep(seconds)
        killed_at = time.monotonic()
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        stop.set()
        for w in workers:
            w.join()
        with closing(sqlite3.connect(Path(tmp) / "k.db")) as conn:
            stored = {r[0] for r in conn.execute("SELECT id FROM traces")}
        lost = [(tid, at) for tid, at in answered if tid not in stored and at <= killed_at]
        window = max(((killed_at - at) * 1000 for _, at in lost), default=0.0)
        return len(answered), len(lost), window


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--records", type=int, default=20_000)
    p.add_argument("--dir", help="where the journal would live (default: a temp dir)")
    p.add_argument("--kill", action="store_true", help="measure what SIGKILL loses instead")
    p.add_argument("--rate", type=float, default=200.0)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--runs", type=int, default=5)
    args = p.parse_args()
    if args.kill:
        print(f"SIGKILL after {args.seconds:.0f} s at {args.rate:.0f} requests/s (flush interval 50 ms):")
        for _ in range(args.runs):
            n, lost, window = kill_run(args.rate, args.seconds, threads=4)
            print(
                f"  answered {n:,}, lost {lost} ({lost / max(n, 1):.2%}), oldest lost answered {window:.0f} ms before the kill"
            )
        return 0
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        for size in (1024, 8192):
            bench(size, args.records, Path(tmp))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
