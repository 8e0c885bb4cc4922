"""How late the event loop runs while the trace writer loads a spill file back: `python bench/reload_lag.py`.

In one process, as in `keel serve`: the real `TraceWriter` on a fresh SQLite file (its defaults), and
an event loop (uvloop) whose ticker sleeps 1 ms at a time and notes how late each wake-up runs. Each
round drops a spill file of `--records` records in the writer's spill dir (as an outage or a queue
overflow leaves); the writer loads it back within a second, while the ticker runs. Every late wake-up
is time a call's next step (a request read, a Redis reply, the upstream's answer) would wait: the
loop needs the GIL back from the writer thread. Prints the lag p50/p99/max while a reload runs and
outside reloads, how long each reload took, and the process CPU. `--cpu N` pins the process to one
core, as bench/run.py and bench/tail.py pin the gateway. Complements `bench/tail.py --spills`, whose
p99 at one connection is mostly the machine's when other work shares it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

import uvloop

from keel.store.open import open_store
from keel.traces.spill import SpillDir
from keel.traces.writer import TraceWriter
from keel.types import TraceRecord


def spill_text(tmp: Path, n: int) -> bytes:
    now = time.time()
    records = [
        TraceRecord(id=f"spill-0-{i}", started_at=now - 60, tenant="default", alias="bench50",
                    provider="up50", model="gpt-4o-mini", user=f"u{i % 500}", input_tokens=12, output_tokens=9,
                    request={"messages": [{"role": "user", "content": f"spilled {i}"}]}, response={"text": "Hello"})
        for i in range(n)
    ]  # fmt: skip
    made = SpillDir(tmp / "made", 2**26)
    made.spill(records)
    [path] = made.spills()
    return path.read_bytes()


async def measure(writer: TraceWriter, spill_dir: Path, text: bytes, rounds: int, n: int) -> None:
    ticks: list[tuple[float, float]] = []  # (when, ms late)
    reloads: list[tuple[float, float]] = []
    stop = asyncio.Event()

    async def ticker() -> None:
        while not stop.is_set():
            t = time.perf_counter()
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            ticks.append((now, (now - t - 0.001) * 1000))

    load_back = writer._reload  # timed from the writer's thread: when each reload began and ended

    def timed(path: Path) -> bool:
        start = time.perf_counter()
        try:
            return load_back(path)
        finally:
            reloads.append((start, time.perf_counter()))

    writer._reload = timed  # type: ignore[method-assign]
    task = asyncio.ensure_future(ticker())
    await asyncio.sleep(1.0)
    for r in range(rounds):
        before = writer.stats.reloaded
        path = spill_dir / f"traces-{time.time_ns()}-{os.getpid()}-{r}.jsonl"
        path.with_suffix(".tmp").write_bytes(text.replace(b'"id":"spill-0-', f'"id":"spill-{r}-'.encode()))
        path.with_suffix(".tmp").rename(path)
        while path.exists():  # the writer takes it within a second; it is deleted once loaded
            await asyncio.sleep(0.01)
        if writer.stats.reloaded - before != n:
            raise SystemExit(f"reload_lag: {writer.stats.reloaded - before} of {n} records reloaded")
        await asyncio.sleep(0.5)
    stop.set()
    await task
    during = sorted(ms for t, ms in ticks if any(a <= t <= b for a, b in reloads))
    outside = sorted(ms for t, ms in ticks if not any(a - 0.01 <= t <= b + 0.01 for a, b in reloads))

    def pct(values: list[float], p: float) -> float:
        return values[min(len(values) - 1, int(p / 100 * len(values)))] if values else float("nan")

    print(f"{'ticker lag (ms)':<24}{'n':>7}{'p50':>8}{'p90':>8}{'p99':>8}{'max':>8}")
    for label, values in (("while reloading", during), ("outside reloads", outside)):
        row = "".join(f"{pct(values, p):8.2f}" for p in (50, 90, 99)) + f"{values[-1] if values else 0:8.2f}"
        print(f"{label:<24}{len(values):>7}{row}")
    took = sorted((b - a) * 1000 for a, b in reloads)
    print(f"reload of {n} records: p50 {pct(took, 50):.0f} ms, max {took[-1]:.0f} ms ({rounds} rounds)")


def main() -> int:
    parser = argparse.ArgumentParser(description="event-loop lag while the trace writer reloads a spill file")
    parser.add_argument("--records", type=int, default=5000, help="records per spill file (default 5000)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--cpu", type=int, help="pin the process to this core (as the bench pins the gateway)")
    args = parser.parse_args()
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    with tempfile.TemporaryDirectory(prefix="keel-reload-lag-") as tmp:
        text = spill_text(Path(tmp), args.records)
        store = open_store(f"sqlite:///{tmp}/keel.db")
        spill_dir = Path(tmp) / "spill"
        spill_dir.mkdir()
        writer = TraceWriter(store, spill_dir=spill_dir)
        writer.start()
        cpu0 = time.process_time()
        try:
            uvloop.run(measure(writer, spill_dir, text, args.rounds, args.records))
        finally:
            writer.close()
            store.close()
        print(f"process CPU {time.process_time() - cpu0:.2f} s; switch interval {sys.getswitchinterval() * 1000:g} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
