"""One load test: each multiple in turn (open-loop traffic + sampling), a cool-down between them, a verdict."""

from __future__ import annotations

import asyncio
import time
import urllib.request
from collections.abc import Callable

from keel.loadtest.drive import run_phase
from keel.loadtest.observe import Observer
from keel.loadtest.profile import Profile
from keel.loadtest.verdict import Summary, Verdict, judge, summarize

COOL_DOWN_S = 30.0  # at most, between phases: until no call waits for a target and the trace queue is empty


async def run(
    url: str,
    key: str,
    pid: int | None,
    profile: Profile,
    *,
    trace_queue_size: int,
    seed: int = 7,
    progress: Callable[[str], None] = lambda _: None,
) -> Verdict:
    summaries: list[Summary] = []
    for i, multiple in enumerate(profile.multiples):
        progress(f"{multiple:g}x: {profile.rate_rps * multiple:.1f} calls/s for {profile.duration_s:g} s")
        observer = Observer(url, pid) if pid is not None else None
        stop = asyncio.Event()
        watching = asyncio.create_task(observer.watch(stop)) if observer else None
        phase = await run_phase(url, key, profile, multiple, seed + i)
        stop.set()
        if watching:
            await watching
        samples = observer.samples if observer else []
        summaries.append(summarize(phase, samples, observer.processes if observer else 1))
        await _cool_down(url)
    return judge(summaries, profile.thresholds, trace_queue_size)


async def _cool_down(url: str) -> None:
    deadline = time.monotonic() + COOL_DOWN_S
    while time.monotonic() < deadline:
        text = await asyncio.to_thread(_read, f"{url}/metrics")
        busy = [
            line
            for line in text.splitlines()
            if line.startswith(("keel_queue_depth", "keel_queue_in_flight", "keel_trace_queue_depth"))
            and not line.endswith(" 0")
            and not line.endswith(" 0.0")
        ]
        if not busy:
            return
        await asyncio.sleep(0.2)


def _read(url: str) -> str:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return str(r.read().decode())
    except OSError:
        return ""
