"""What the Keel under test shows while it is loaded: sampled from /metrics and /proc twice a second.

- CPU: the utime + stime of the server's process tree (`keel serve --workers N` forks), in cores.
- Queues: calls waiting for a capped target's slot (`keel_queue_depth{target}`), refused by it
  (`keel_queue_rejected_total{target}`), and trace records waiting for the writer (`keel_trace_queue_depth`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import time
from collections import defaultdict
from dataclasses import dataclass, field

import aiohttp

INTERVAL_S = 0.5
SAMPLE = re.compile(
    r'^(keel_queue_depth|keel_queue_rejected_total|keel_trace_queue_depth)(?:\{target="([^"]*)"\})? (\S+)$'
)
TICK = os.sysconf("SC_CLK_TCK")


@dataclass(slots=True)
class Sample:
    at: float  # seconds since the phase began
    cpu_cores: float  # since the previous sample
    trace_queue: float
    queued: dict[str, float]  # per capped target
    rejected: dict[str, float]  # cumulative, per capped target


@dataclass(slots=True)
class Observer:
    url: str
    pid: int
    samples: list[Sample] = field(default_factory=list)
    processes: int = 1  # gateway processes seen (serve --workers N forks)

    async def watch(self, stop: asyncio.Event) -> None:
        t0 = time.perf_counter()
        last_cpu, last_t = cpu_seconds(tree(self.pid)), t0
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
            while not stop.is_set():
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stop.wait(), INTERVAL_S)
                pids = tree(self.pid)
                now, cpu = time.perf_counter(), cpu_seconds(pids)
                metrics = await _metrics(session, self.url)
                self.processes = max(self.processes, len(pids) - 1 if len(pids) > 1 else 1)  # a supervisor + N
                queued: dict[str, float] = defaultdict(float)
                rejected: dict[str, float] = defaultdict(float)
                trace_queue = 0.0
                for name, target, value in metrics:
                    if name == "keel_queue_depth":
                        queued[target] += value
                    elif name == "keel_queue_rejected_total":
                        rejected[target] += value
                    else:
                        trace_queue = max(trace_queue, value)
                cores = (cpu - last_cpu) / (now - last_t) if now > last_t else 0.0
                self.samples.append(Sample(now - t0, cores, trace_queue, dict(queued), dict(rejected)))
                last_cpu, last_t = cpu, now


async def _metrics(session: aiohttp.ClientSession, url: str) -> list[tuple[str, str, float]]:
    try:
        async with session.get(f"{url}/metrics") as resp:
            text = await resp.text()
    except (TimeoutError, aiohttp.ClientError):
        return []
    out = []
    for line in text.splitlines():
        m = SAMPLE.match(line)
        if m:
            out.append((m.group(1), m.group(2) or "", float(m.group(3))))
    return out


def tree(pid: int) -> list[int]:
    """`pid` and its descendants (Linux /proc)."""
    children: dict[int, list[int]] = defaultdict(list)
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                with open(f"/proc/{entry}/stat", "rb") as f:
                    fields = f.read().rsplit(b")", 1)[1].split()
                children[int(fields[1])].append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, ()))
    return out


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of these processes so far."""
    total = 0
    for p in pids:
        with contextlib.suppress(OSError, IndexError, ValueError):
            with open(f"/proc/{p}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return total / TICK
