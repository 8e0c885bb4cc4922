"""Redis round trips a call waits on, with limits and breakers in Redis: `python bench/redis_trips.py --calls 300`.

Starts bench/upstream.py (`--upstream-ms`, default 50) and `keel serve` with run.py's `--limits redis`
config (four counters per call, never reached; breakers in Redis too), in a child process that counts
the Redis commands Keel's client was asked for and waited on: every command except those sent
`later` (settlements, breaker reports, background breaker reads), which no call waits on. Sends
`--warmup` calls, then `--calls` sequential calls on one keep-alive connection, and prints the
commands waited on per counted call, by kind. Run it against two trees (PYTHONPATH=<tree>/src) to
compare: before admission blocks every call waited on its admission (EVALSHA), about one per call.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import probe
from run import Bench, bootstrap_key, chat_body, free_port, start_upstream, wait_http, write_config

COUNTS = "redis-trips.txt"  # the child writes its counts here on SIGUSR1


def child(out: Path, argv: list[str]) -> int:
    """`keel serve` with Keel's Redis client counting the commands its callers wait on."""
    from keel.cli.main import main
    from keel.store.redis import client

    waited: Counter[str] = Counter()
    execute, pipeline = client._Pool.execute, client._Pool.pipeline

    async def counted_execute(self: client._Pool, *args: Any, later: bool = False) -> Any:
        if not later:
            waited[str(args[0]).upper()] += 1
        return await execute(self, *args, later=later)

    async def counted_pipeline(self: client._Pool, commands: Any) -> list[Any]:
        waited["PIPELINE"] += 1
        return await pipeline(self, commands)

    client._Pool.execute = counted_execute  # type: ignore[method-assign]
    client._Pool.pipeline = counted_pipeline  # type: ignore[method-assign]

    def report(signum: int, frame: object) -> None:
        tmp = out.with_suffix(".tmp")
        tmp.write_text("\n".join(f"{k} {v}" for k, v in waited.items()) + "\n")
        tmp.replace(out)

    signal.signal(signal.SIGUSR1, report)
    return main(argv)


def counts(bench: Bench, pid: int) -> Counter[str]:
    out = bench.tmp / COUNTS
    out.unlink(missing_ok=True)
    os.kill(pid, signal.SIGUSR1)
    deadline = time.monotonic() + 10
    while not out.exists():
        if time.monotonic() > deadline:
            raise SystemExit("bench: the gateway wrote no counts")
        time.sleep(0.01)
    return Counter({k: int(v) for k, v in (line.split() for line in out.read_text().splitlines() if line)})


def main() -> int:
    parser = argparse.ArgumentParser(description="Redis round trips waited on per call (limits + breakers in Redis)")
    parser.add_argument("--calls", type=int, default=300, help="calls counted (default 300)")
    parser.add_argument("--warmup", type=int, default=50, help="calls before counting (default 50)")
    parser.add_argument("--upstream-ms", type=int, default=50, choices=[0, 50], help="upstream delay (default 50)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="keel-trips-") as tmp:
        bench = Bench(Path(tmp), False, "redis")
        try:
            start_upstream(bench, "up0", 0)
            start_upstream(bench, "up50", 50)
            bench.ports["gateway"] = free_port()
            config = write_config(bench)
            cmd = [sys.executable, __file__, "--child", str(bench.tmp / COUNTS), "--config", str(config), "serve"]
            log = (bench.tmp / "gateway.log").open("wb")
            proc = bench.procs["gateway"] = subprocess.Popen(
                [*cmd, "--log-level", "warning"], stdout=log, stderr=log, cwd=tmp
            )
            wait_http(bench.ports["gateway"], "/healthz", proc)
            bench.key = bootstrap_key(bench.tmp / "gateway.log")
            port = bench.ports["gateway"]
            request = probe.build_request(port, chat_body("bench50" if args.upstream_ms else "bench"), bench.key)
            p = probe.Probe(port)
            for _ in range(args.warmup):
                p.call(request)
            before = counts(bench, proc.pid)
            for _ in range(args.calls):
                p.call(request)
            after = counts(bench, proc.pid)
            p.close()
        finally:
            for proc in bench.procs.values():
                proc.terminate()
            for proc in bench.procs.values():
                proc.wait(timeout=60)
    waited = after - before
    kinds = ", ".join(f"{k} {n / args.calls:.3f}" for k, n in waited.most_common()) or "none"
    print(
        f"Redis round trips waited on per call: {sum(waited.values()) / args.calls:.3f} ({kinds}); "
        f"{args.calls} sequential calls, {args.upstream_ms} ms upstream, after {args.warmup} warm-up calls"
    )
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        sys.exit(child(Path(sys.argv[2]), sys.argv[3:]))
    sys.exit(main())
