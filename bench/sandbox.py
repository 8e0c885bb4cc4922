"""Sandbox start + a trivial Python code tool, end to end (bubblewrap, seccomp, rlimits, the bootstrap).

    PYTHONPATH=src python bench/sandbox.py [--runs 50]

Prints p50/p90/max of `Sandbox.run_python("print(args['x'] + 1)", {"x": 1})` from call to result, beside
the same interpreter started bare (`python3 -I -S -c ...`, no sandbox), alternating, in one run. Target:
sandboxed p50 <= 150 ms. Exit 0 when met.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

from keel.agents.sandbox import Sandbox

TARGET_MS = 150.0


async def bare(python: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        python, "-I", "-S", "-c", "print(1 + 1)", stdout=asyncio.subprocess.PIPE
    )
    await proc.communicate()


async def main(runs: int) -> int:
    box = Sandbox()
    await box.check()
    sandboxed: list[float] = []
    direct: list[float] = []
    for _ in range(runs):
        t = time.perf_counter()
        out = await box.run_python("print(args['x'] + 1)", {"x": 1})
        sandboxed.append((time.perf_counter() - t) * 1000)
        assert out.stdout.strip() == "2", out
        t = time.perf_counter()
        await bare(box.python)
        direct.append((time.perf_counter() - t) * 1000)

    def show(name: str, xs: list[float]) -> None:
        q = statistics.quantiles(xs, n=10)
        print(f"{name:<34} p50 {statistics.median(xs):6.1f} ms  p90 {q[8]:6.1f} ms  max {max(xs):6.1f} ms")

    show("sandboxed code tool (run_python)", sandboxed)
    show("bare interpreter, no sandbox", direct)
    p50 = statistics.median(sandboxed)
    print(
        f"target p50 <= {TARGET_MS:.0f} ms: {'met' if p50 <= TARGET_MS else 'MISSED'} ({runs} runs each, alternating)"
    )
    return 0 if p50 <= TARGET_MS else 1


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--runs", type=int, default=50)
    raise SystemExit(asyncio.run(main(p.parse_args().runs)))
