"""What an exact cache hit costs: `python bench/cache.py [--backend sqlite|memory|redis] [--calls 2000]`.

Starts bench/upstream.py (0 ms) and `keel serve` with the exact cache on (`--backend`: the SQLite
file beside the database by default, memory://, or the Redis at 127.0.0.1:6379), the gateway alone
on cpu1 as in bench/run.py. One keep-alive connection per path, sequential calls, alternating blocks
of 50 on three paths: `direct` (the upstream itself), `gateway` (through Keel with
`x-keel-cache-control: skip`: the gateway's own path, cache stage included, upstream called) and
`hit` (through Keel, the same temperature-0 question every time: answered from the cache; the
first, a miss, is in the warm-up). The gateway's own overhead is gateway − direct; what a hit adds
over it is hit − gateway (negative: a hit costs less than forwarding). Target (the Caches issue):
an exact hit adds ≤ 1 ms p50 over the gateway's own overhead.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import probe
import run

TARGET_MS = 1.0
BODY = json.dumps(
    {"model": "bench", "messages": run.MESSAGES, "max_tokens": 16, "temperature": 0, "stream": False}
).encode()
URLS = {"sqlite": None, "memory": "memory://", "redis": "redis://127.0.0.1:6379/0"}


def measure(bench: run.Bench, calls: int) -> dict[str, probe.Samples]:
    up, gw = bench.ports["up0"], bench.ports["gateway"]
    paths = {
        "direct": (probe.Probe(up), probe.build_request(up, BODY)),
        "gateway": (probe.Probe(gw), probe.build_request(gw, BODY, bench.key, "x-keel-cache-control: skip\r\n")),
        "hit": (probe.Probe(gw), probe.build_request(gw, BODY, bench.key)),
    }
    try:
        return probe.alternate(paths, calls, block=50, warmup=100)
    finally:
        for p, _ in paths.values():
            p.close()


def main() -> int:
    parser = argparse.ArgumentParser(description="the cost of an exact cache hit")
    parser.add_argument("--backend", choices=list(URLS), default="sqlite")
    parser.add_argument("--calls", type=int, default=2000)
    args = parser.parse_args()
    url = URLS[args.backend]
    extra = "cache: {enabled: true" + (f', url: "{url}"' if url else "") + "}\n"
    pinned = shutil.which("taskset") is not None and (os.cpu_count() or 1) >= 2
    with (
        tempfile.TemporaryDirectory(prefix="keel-bench-cache-") as tmp,
        run.running(run.Bench(Path(tmp), pinned, extra=extra)) as bench,
    ):
        samples = measure(bench, args.calls)
    p50 = {name: probe.percentile(s.total, 50) for name, s in samples.items()}
    p99 = {name: probe.percentile(s.total, 99) for name, s in samples.items()}
    overhead, added = p50["gateway"] - p50["direct"], p50["hit"] - p50["gateway"]
    print(f"exact cache, backend {args.backend}: {args.calls} calls per path, one keep-alive connection each")
    print(f"{'path':<10}{'p50 ms':>10}{'p99 ms':>10}")
    for name in samples:
        print(f"{name:<10}{p50[name]:>10.3f}{p99[name]:>10.3f}")
    print(
        f"gateway's own overhead p50: {overhead:+.3f} ms; a hit's latency p50 minus the forwarded call's: {added:+.3f} ms"
    )
    print(
        f"a hit adds {max(0.0, p50['hit'] - p50['direct'] - overhead):.3f} ms over the gateway's own overhead "
        f"(target <= {TARGET_MS} ms): {'PASS' if p50['hit'] - p50['direct'] - overhead <= TARGET_MS else 'MISS'}"
    )
    return 0 if p50["hit"] - p50["direct"] - overhead <= TARGET_MS else 1


if __name__ == "__main__":
    sys.exit(main())
