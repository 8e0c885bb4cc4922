"""Sandbox start + a trivial Python code tool, end to end (bubblewrap, seccomp, rlimits, the bootstrap).

    PYTHONPATH=src python bench/sandbox.py [--runs 50]

Prints p50/p90/max of `Sandbox.run_python("print(args['x'] + 1)", {"x": 1})` from call to result, with
the run's cgroup (made, joined, read and removed per run, where the host allows) and without, beside the
same interpreter started bare (`python3 -I -S -c ...`, no sandbox), alternating, in one run. Target:
sandboxed p50 <= 150 ms, with and without the cgroup. Exit 0 when met.
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
    box, plain = Sandbox(), Sandbox(cgroup_root=None)
    await box.check()
    print(f"per-run cgroups: {box.cgroup_problem or 'on (memory, pids, cpu)'}")
    with_cg: list[float] = []
    without: list[float] = []
    direct: list[float] = []
    for _ in range(runs):
        for sandbox, into in ((box, with_cg), (plain, without)):
            t = time.perf_counter()
            out = await sandbox.run_python("print(args['x'] + 1)", {"x": 1})
            into.append((time.perf_counter() - t) * 1000)
            assert out.stdout.strip() == "2", out
        t = time.perf_counter()
        await bare(box.python)
        direct.append((time.perf_counter() - t) * 1000)

    def show(name: str, xs: list[float]) -> None:
        q = statistics.quantiles(xs, n=10)
        print(f"{name:<40} p50 {statistics.median(xs):6.1f} ms  p90 {q[8]:6.1f} ms  max {max(xs):6.1f} ms")

    show("sandboxed code tool, with its cgroup", with_cg)
    show("sandboxed code tool, rlimits only", without)
    show("bare interpreter, no sandbox", direct)
    p50 = max(statistics.median(with_cg), statistics.median(without))
    print(
        f"target p50 <= {TARGET_MS:.0f} ms: {'met' if p50 <= TARGET_MS else 'MISSED'} ({runs} runs each, alternating)"
    )
    return 0 if p50 <= TARGET_MS else 1


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--runs", type=int, default=50)
    raise SystemExit(asyncio.run(main(p.parse_args().runs)))
