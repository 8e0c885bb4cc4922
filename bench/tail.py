"""The latency tail at one connection: `python bench/tail.py [--calls 600] [--preload 5] [--attribute]`.

A gateway with its defaults (SQLite store, tracing, auth, cost) in front of the fake upstream answering
after 50 ms; one keep-alive connection makes sequential calls, alternating blocks of 50 direct and
through-the-gateway calls (as bench/run.py does). It prints p50/p90/p99/max of the added latency
(gateway percentile − direct percentile) and the gateway's CPU per gateway call over the phase, which
includes whatever it does in the background while traffic is light.

`--preload S` first loads the gateway at 50 connections for S seconds (wrk, the 0 ms upstream), as a
side-by-side run does before its one-connection phase: a large database, a large WAL, a trace backlog.

`--limits redis` (or memory) turns the limits stage on with bench/run.py's four counters; with
`--attribute` each admission that waited on Redis and each background block renewal is timed too.

`--spills N` drops a spill file of N records into the gateway's spill dir before each block of gateway
calls, as a store outage or a queue overflow leaves; the writer loads it back while the calls run.

`--attribute` runs the gateway with two probes (each garbage collection and each trace-writer write,
timed), samples every thread of the gateway (/proc/PID/task/*/schedstat, ns of CPU) every ~2 ms
and, for each slow gateway call (added > 4 ms over the direct p50), prints the CPU each thread burned
while it was in flight; threads are named from a `py-spy dump` taken at the end (when py-spy is
installed), else by thread id.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import probe
import run as bench_run

SLOW_MS = 4.0
# `keel` with two probes, for --attribute: each garbage collection and each trace-writer write, as
# (what, monotonic start, seconds) lines in $KEEL_TAIL_EVENTS (CLOCK_MONOTONIC is one clock system-wide).
INSTRUMENTED = """
import gc, os, sys, time
from keel.traces import writer as traces
out = open(os.environ["KEEL_TAIL_EVENTS"], "w", buffering=1 << 16)
began = [0.0]
def on_gc(phase, info):
    if phase == "start":
        began[0] = time.monotonic()
    else:
        out.write(f"gc{info['generation']} {began[0]:.6f} {time.monotonic() - began[0]:.6f}\\n")
gc.callbacks.append(on_gc)
write = traces.TraceWriter._write
def timed(self, batch):
    t = time.monotonic()
    write(self, batch)
    out.write(f"write:{len(batch)} {t:.6f} {time.monotonic() - t:.6f}\\n")
traces.TraceWriter._write = timed
try:  # with --limits redis: each admission that waited on Redis, each background block renewal
    from keel.store.redis import limits as rl
except ImportError:
    rl = None
if rl is not None:
    reserve = rl.RedisLimits.reserve
    async def reserve_timed(self, charges, now):
        blocks = getattr(self, "blocks", None)
        t, local = time.monotonic(), blocks.local if blocks is not None else 0
        try:
            return await reserve(self, charges, now)
        finally:
            if blocks is None or blocks.local == local:
                out.write(f"exact {t:.6f} {time.monotonic() - t:.6f}\\n")
    rl.RedisLimits.reserve = reserve_timed
    take = getattr(rl.RedisLimits, "_take_blocks", None)
    if take is not None:
        async def take_timed(self, *args):
            t = time.monotonic()
            await take(self, *args)
            out.write(f"renew {t:.6f} {time.monotonic() - t:.6f}\\n")
        rl.RedisLimits._take_blocks = take_timed
import atexit
atexit.register(out.flush)
from keel.cli.main import main
sys.argv[0] = "keel"
sys.exit(main())
"""


@dataclass
class Call:
    path: str
    start: float  # monotonic seconds
    ms: float


@dataclass
class ThreadSampler:
    """CPU nanoseconds per thread of one process, sampled on a clock into a timeline."""

    pid: int
    every: float = 0.002
    samples: list[tuple[float, dict[int, tuple[int, int]]]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def read(self) -> dict[int, tuple[int, int]]:
        """tid → (ns on a CPU, ns runnable but waiting for a CPU)."""
        out: dict[int, tuple[int, int]] = {}
        for tid in os.listdir(f"/proc/{self.pid}/task"):
            with contextlib.suppress(OSError):
                run, wait, _ = Path(f"/proc/{self.pid}/task/{tid}/schedstat").read_text().split()
                out[int(tid)] = (int(run), int(wait))
        return out

    def start(self) -> None:
        def loop() -> None:
            while not self._stop.wait(self.every):
                self.samples.append((time.monotonic(), self.read()))

        self._thread = threading.Thread(target=loop, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def between(self, t0: float, t1: float, index: int = 0) -> dict[int, float]:
        """ms per thread between two instants (widened to the samples around them): on a CPU (index 0)
        or runnable and waiting for one (index 1)."""
        before = next((s for t, s in reversed(self.samples) if t <= t0), None)
        after = next((s for t, s in self.samples if t >= t1), None)
        if before is None or after is None:
            return {}
        out = {tid: (v[index] - before.get(tid, (0, 0))[index]) / 1e6 for tid, v in after.items()}
        return {tid: ms for tid, ms in out.items() if ms > 0}


def drop_spill(bench: bench_run.Bench, n: int, seq: int) -> None:
    """A spill file of `n` records in the gateway's spill dir, as an outage leaves: the writer loads it back
    within a second, while the calls of the block that follows run. The file's text is made once and its ids
    renamed per file, so that a loaded machine does not stretch the gap before the block beyond the
    gateway's keep-alive timeout (5 s) building records."""
    global _SPILL_TEXT
    if _SPILL_TEXT is None or _SPILL_TEXT[0] != n:
        _SPILL_TEXT = (n, _spill_text(bench, n))
    name = f"traces-{time.time_ns()}-{os.getpid()}-{seq}.jsonl"
    tmp = bench.tmp / "spill" / f"{name}.tmp"
    tmp.parent.mkdir(exist_ok=True)
    tmp.write_bytes(_SPILL_TEXT[1].replace(b'"id":"spill-0-', f'"id":"spill-{seq}-'.encode()))
    tmp.rename(tmp.with_suffix(""))


_SPILL_TEXT: tuple[int, bytes] | None = None


def _spill_text(bench: bench_run.Bench, n: int) -> bytes:
    from keel.traces.spill import SpillDir
    from keel.types import TraceRecord

    now = time.time()
    records = [
        TraceRecord(id=f"spill-0-{i}", started_at=now - 60, tenant="default", alias="bench50",
                    provider="up50", model="gpt-4o-mini", user=f"u{i % 500}", input_tokens=12, output_tokens=9,
                    request={"messages": [{"role": "user", "content": f"spilled {i}"}]}, response={"text": "Hello"})
        for i in range(n)
    ]  # fmt: skip
    made = SpillDir(bench.tmp / "spill-text", 2**26)
    made.spill(records)
    [path] = made.spills()
    text = path.read_bytes()
    path.unlink()
    return text


def thread_names(pid: int) -> dict[int, str]:
    """tid → Python thread name, from py-spy (when installed); empty otherwise."""
    spy = shutil.which("py-spy")
    if spy is None:
        return {}
    out = subprocess.run([spy, "dump", "--pid", str(pid)], capture_output=True, text=True).stdout
    names = {}
    for m in re.finditer(r'^Thread (0x[0-9A-Fa-f]+|\d+) \([^)]*\): "([^"]+)"', out, re.M):
        with contextlib.suppress(ValueError):
            names[int(m.group(1), 0)] = m.group(2)
    # py-spy prints the OS thread id on its own line for native threads: "Thread 1234 ..." is the tid
    return names


def measure(
    bench: bench_run.Bench, calls: int, attribute: bool, profile: str | None = None, spills: int = 0
) -> dict[str, Any]:
    up_port, gw_port = bench.ports["up50"], bench.ports["gateway"]
    paths = {
        "direct": (probe.Probe(up_port), probe.build_request(up_port, bench_run.chat_body("gpt-4o-mini"))),
        "gateway": (probe.Probe(gw_port), probe.build_request(gw_port, bench_run.chat_body("bench50"), bench.key)),
    }
    pid = bench.procs["gateway"].pid
    for p, request in paths.values():  # warm-up, not kept
        for _ in range(20):
            p.call(request)
    sampler = ThreadSampler(pid)
    if attribute:
        sampler.start()
    spy = None
    if profile:  # py-spy samples the gateway's Python stacks during the phase (all threads, idle ones left out)
        cmd = ["py-spy", "record", "--pid", str(pid), "--format", "raw", "--threads", "-r", "500", "-o", profile]
        spy = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log: list[Call] = []
    cpu0, wall0 = bench_run.cpu_seconds(pid), time.monotonic()
    done = 0
    while done < calls:
        step = min(50, calls - done)
        for name, (p, request) in paths.items():
            if name == "gateway" and spills:
                drop_spill(bench, spills, done)
            for _ in range(step):
                t = time.monotonic()
                _, total = p.call(request)
                log.append(Call(name, t, total * 1000))
        done += step
    cpu, wall = bench_run.cpu_seconds(pid) - cpu0, time.monotonic() - wall0
    sampler.stop()
    if spy is not None:
        spy.send_signal(signal.SIGINT)
        spy.wait(timeout=30)
    for p, _ in paths.values():
        bench.direct_calls["up50"] += p.calls if p is paths["direct"][0] else 0
        bench.gateway_calls += p.calls if p is paths["gateway"][0] else 0
        p.close()
    return {"log": log, "cpu_s": cpu, "wall_s": wall, "sampler": sampler if attribute else None}


def writer(bench: bench_run.Bench) -> str:
    """The trace writer's figures from /readyz."""
    conn = http.client.HTTPConnection("127.0.0.1", bench.ports["gateway"], timeout=10)
    conn.request("GET", "/readyz")
    ready = json.loads(conn.getresponse().read())
    keys = ("trace_queue", "traces_written", "traces_spilled", "traces_dropped")
    return ", ".join(f"{k} {ready.get(k)}" for k in keys)


def read_events(path: Path) -> list[tuple[str, float, float]]:
    """(what, monotonic start, seconds) of each gc and trace write the instrumented gateway logged."""
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        what, start, seconds = line.split()
        out.append((what, float(start), float(seconds)))
    return out


def overlapping(events: list[tuple[str, float, float]], t0: float, t1: float) -> str:
    hits = [f"{what} {seconds * 1000:.1f} ms" for what, start, seconds in events if start < t1 and start + seconds > t0]
    return ", ".join(hits) or "-"


def report(result: dict[str, Any], names: dict[int, str]) -> list[str]:
    log: list[Call] = result["log"]
    direct = [c.ms for c in log if c.path == "direct"]
    gateway = [c for c in log if c.path == "gateway"]
    gw = [c.ms for c in gateway]
    pct = probe.percentile
    lines = [f"{len(gw)} gateway calls, {len(direct)} direct calls, one connection, 50 ms upstream"]
    lines.append(f"{'':10}{'p50':>9}{'p90':>9}{'p99':>9}{'max':>9}")
    for label, values in (("direct", direct), ("gateway", gw)):
        lines.append(f"{label:10}" + "".join(f"{pct(values, p):9.2f}" for p in (50, 90, 99)) + f"{max(values):9.2f}")
    added = [pct(gw, p) - pct(direct, p) for p in (50, 90, 99)] + [max(gw) - max(direct)]
    lines.append(f"{'added':10}" + "".join(f"{a:+9.2f}" for a in added) + "   ms")
    per_call = result["cpu_s"] * 1000 / len(gw)
    lines.append(
        f"gateway CPU: {result['cpu_s']:.2f} s over {result['wall_s']:.1f} s "
        f"({100 * result['cpu_s'] / result['wall_s']:.0f}% of a core) = {per_call:.2f} ms per gateway call"
    )
    sampler: ThreadSampler | None = result["sampler"]
    if sampler is None:
        return lines
    base = pct(direct, 50)
    whole = sampler.between(sampler.samples[0][0], sampler.samples[-1][0]) if sampler.samples else {}
    lines.append("CPU per thread over the phase (ms): " + _threads(whole, names))
    events = result["events"]
    for kind in ("gc0", "gc1", "gc2", "write", "exact", "renew"):
        mine = [e for e in events if e[0].startswith(kind)]
        if mine:
            ms = sorted(e[2] * 1000 for e in mine)
            lines.append(f"{kind}: {len(mine)} in the run, p50 {pct(ms, 50):.2f} ms, max {ms[-1]:.2f} ms")
            if kind in ("gc1", "gc2"):
                at = ", ".join(f"{start - log[0].start:.1f} s ({seconds * 1000:.1f} ms)" for _, start, seconds in mine)
                lines.append(f"  at {at}")
    lines.append(
        "each slow call: CPU ms per thread while it was in flight | ms its threads waited for a CPU | gc and writes"
    )
    slow = sorted((c for c in gateway if c.ms - base > SLOW_MS), key=lambda c: -c.ms)
    lines.append(f"{len(slow)} gateway calls more than {SLOW_MS} ms over the direct p50 ({base:.2f} ms):")
    for c in slow[:25]:
        t0, t1 = c.start, c.start + c.ms / 1000
        lines.append(f"  +{c.ms - base:6.2f} ms at {c.start - log[0].start:7.3f} s: " + _threads(
            sampler.between(t0, t1), names) + " | " + _threads(sampler.between(t0, t1, 1), names)
            + " | " + overlapping(events, t0, t1))  # fmt: skip
    return lines


def _threads(cpu: dict[int, float], names: dict[int, str]) -> str:
    parts = sorted(cpu.items(), key=lambda kv: -kv[1])
    return ", ".join(f"{names.get(tid, tid)} {ms:.1f}" for tid, ms in parts if ms >= 0.05) or "(nothing)"


def main() -> int:
    parser = argparse.ArgumentParser(description="the added latency tail at one connection, 50 ms upstream")
    parser.add_argument("--calls", type=int, default=600, help="gateway calls measured (as many direct ones)")
    parser.add_argument("--preload", type=float, default=0, help="seconds of wrk load at 50 connections first")
    parser.add_argument("--attribute", action="store_true", help="which gateway thread ran during each slow call")
    parser.add_argument(
        "--spills", type=int, default=0, help="drop a spill file of this many records before each gateway block"
    )
    parser.add_argument("--profile", help="write py-spy's raw (collapsed) stacks of the phase to this file")
    parser.add_argument("--extra", default="", help="more top-level YAML for keel.yaml")
    parser.add_argument(
        "--limits", choices=["none", "memory", "redis"], default="none", help="the limits stage, as bench/run.py's"
    )
    args = parser.parse_args()
    pinned = shutil.which("taskset") is not None and (os.cpu_count() or 1) >= 2
    with tempfile.TemporaryDirectory(prefix="keel-tail-") as tmp:
        bench = bench_run.Bench(Path(tmp), pinned, args.limits, extra=args.extra)
        events = Path(tmp) / "events.txt"
        if args.attribute:
            os.environ["KEEL_TAIL_EVENTS"] = str(events)
            bench.command = [sys.executable, "-c", INSTRUMENTED]
        with bench_run.running(bench):
            if args.preload:
                if shutil.which("wrk") is None:
                    raise SystemExit("tail: --preload needs wrk (apt-get install -y wrk)")
                w = bench_run.run_wrk(bench, max(1, round(args.preload)))
                print(f"preload: {w['requests']} calls at 50 connections ({w['rps']:.0f}/s); writer: {writer(bench)}")
            try:
                result = measure(bench, args.calls, args.attribute, args.profile, args.spills)
            except Exception:
                log = (Path(tmp) / "gateway.log").read_text().splitlines()[-30:]
                print("tail: gateway log tail:\n" + "\n".join(log), file=sys.stderr)
                raise
            names = thread_names(bench.procs["gateway"].pid) if args.attribute else {}
            print(f"after the phase, writer: {writer(bench)}")
            if not args.attribute:  # now: a gateway with a backlog of spills may be slow to stop
                print("\n".join(report(result | {"events": []}, names)), flush=True)
            db = bench.db.stat().st_size / 2**20
            wal = Path(f"{bench.db}-wal")
            walsize = wal.stat().st_size / 2**20 if wal.exists() else 0.0
        if args.attribute:
            result["events"] = read_events(events)
            print("\n".join(report(result, names)))
        print(f"SQLite: {db:.1f} MB, WAL {walsize:.1f} MB at the end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
