"""Instructions per request, which the machine's load does not change: `python bench/instructions.py`.

Starts bench/upstream.py (0 ms) and `keel serve` under `valgrind --tool=callgrind` with run.py's config
(`--limits none|memory|redis`, as `bench/run.py --limits`), sends `--warmup` calls, zeroes the counters
(`callgrind_control -z`), sends `--calls` more on `--connections` keep-alive connections (each
sequential; several connections let settlements and breaker reports share round trips, as under load),
dumps (`callgrind_control -d`) and prints the gateway's instructions per call, all threads (the trace
writer too). Wall time under valgrind is ~50x native and depends on the machine's load, and the
gateway's periodic work (pollers, the writer's 50 ms ticks) runs per second, not per call: so `--idle`
seconds with no traffic are counted first, and that rate times the counted seconds is subtracted.

    python bench/instructions.py --limits redis                  # ~2 min
    python bench/instructions.py --limits redis --connections 8  # concurrent callers
    python bench/instructions.py --limits memory --stream        # streamed calls
"""

from __future__ import annotations

import argparse
import contextlib
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import probe
from run import Bench, bootstrap_key, chat_body, free_port, start_upstream, wait_http, write_config


def start_gateway(bench: Bench, out: Path) -> subprocess.Popen[bytes]:
    bench.ports["gateway"] = free_port()
    config = write_config(bench)
    # the interpreter itself (`keel` may be a shell shim), so callgrind runs the gateway's process
    cmd = [
        "valgrind",
        "--tool=callgrind",
        f"--callgrind-out-file={out}",
        sys.executable,
        "-m",
        "keel.cli.main",
        "--config",
        str(config),
        "serve",
        "--log-level",
        "warning",
    ]
    log = (bench.tmp / "gateway.log").open("wb")
    proc = bench.procs["gateway"] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=bench.tmp)
    wait_http(bench.ports["gateway"], "/healthz", proc, timeout=900)  # start-up under callgrind on a busy machine
    bench.key = bootstrap_key(bench.tmp / "gateway.log")
    return proc


def send(port: int, request: bytes, n: int, connections: int) -> None:
    """`n` calls over `connections` keep-alive connections, each sequential."""

    def worker(count: int) -> None:
        p = probe.Probe(port)
        try:
            for _ in range(count):
                p.call(request)
        finally:
            p.close()

    shares = [n // connections + (i < n % connections) for i in range(connections)]
    threads = [threading.Thread(target=worker, args=(k,)) for k in shares]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


class Monitor:
    """Redis's MONITOR on a raw socket: (client address, command) of every command Redis runs meanwhile."""

    def __init__(self) -> None:
        self._sock = socket.create_connection(("127.0.0.1", 6379))
        self._sock.sendall(b"MONITOR\r\n")
        self.seen: list[tuple[str, str]] = []
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        buf = b""
        while data := self._sock.recv(65536):
            buf += data
            *lines, buf = buf.split(b"\r\n")
            for line in lines:  # +1733... [0 127.0.0.1:41114] "evalsha" "..."
                m = re.match(rb'\+[\d.]+ \[\d+ ([^\]]+)\] "([^"]+)"', line)
                if m:
                    self.seen.append((m.group(1).decode(), m.group(2).decode().upper()))

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()
        self._thread.join(5)


def redis_peers(pid: int) -> set[str]:
    """The local addresses of `pid`'s connections to the Redis at 127.0.0.1:6379."""
    out = subprocess.run(["ss", "-tnpH", "dst", "127.0.0.1:6379"], capture_output=True, text=True).stdout
    return {line.split()[3] for line in out.splitlines() if f"pid={pid}," in line}


def zero(pid: int) -> float:
    subprocess.run(["callgrind_control", "-z", str(pid)], check=True, capture_output=True)
    return time.monotonic()


def dump(pid: int, where: Path) -> int:
    """Instructions since the last zeroing (callgrind writes one file per dump)."""
    subprocess.run(["callgrind_control", "-d", str(pid)], check=True, capture_output=True)
    dumps = sorted(where.glob(f"callgrind.out.{pid}.*"), key=lambda p: p.stat().st_mtime)
    if not dumps:
        raise SystemExit(f"bench: no callgrind dump in {where}")
    return totals(dumps[-1])


def totals(path: Path) -> int:
    for line in path.read_text().splitlines():
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    raise SystemExit(f"bench: no totals in {path}")


def main() -> int:
    parser = argparse.ArgumentParser(description="Gateway instructions per call under callgrind")
    parser.add_argument("--limits", choices=["none", "memory", "redis"], default="none")
    parser.add_argument("--calls", type=int, default=1000, help="calls counted (default 1000)")
    parser.add_argument("--warmup", type=int, default=300, help="calls before counting (default 300)")
    parser.add_argument("--connections", type=int, default=1, help="keep-alive connections (default 1)")
    parser.add_argument("--stream", action="store_true", help="streamed calls")
    parser.add_argument(
        "--idle",
        type=float,
        default=10.0,
        help="seconds of no traffic measured first, subtracted pro rata (default 10)",
    )
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        raise SystemExit("bench: valgrind not found; install it with `apt-get install -y valgrind`")
    with tempfile.TemporaryDirectory(prefix="keel-instr-") as tmp:
        bench = Bench(Path(tmp), False, args.limits)
        commands: Counter[str] = Counter()
        try:
            start_upstream(bench, "up0", 0)
            start_upstream(bench, "up50", 50)
            gateway = start_gateway(bench, Path(tmp) / "callgrind.out.%p")
            port = bench.ports["gateway"]
            request = probe.build_request(port, chat_body("bench", args.stream), bench.key)
            send(port, request, args.warmup, args.connections)
            pid = gateway.pid
            time.sleep(1.0)  # the warm-up's trace batch and settlements finish before counting
            peers = redis_peers(pid)
            idle_rate = 0.0
            if args.idle > 0:  # what the pollers and the writer's ticks cost per second with no traffic
                zeroed = zero(pid)
                time.sleep(args.idle)
                idle_rate = dump(pid, Path(tmp)) / (time.monotonic() - zeroed)
            monitor = Monitor() if args.limits == "redis" else None
            t0 = zero(pid)
            send(port, request, args.calls, args.connections)
            time.sleep(1.0)  # the counted calls' trace batch (50 ms flushes) and settlements land
            counted_s = time.monotonic() - t0
            if monitor is not None:
                monitor.stop()
                peers |= redis_peers(pid)
                commands = Counter(cmd for peer, cmd in monitor.seen if peer in peers)
            total = dump(pid, Path(tmp))
        finally:
            for proc in bench.procs.values():
                proc.terminate()
            for proc in bench.procs.values():
                proc.wait(timeout=60)
    kind = "streamed" if args.stream else "non-streamed"
    net = total - idle_rate * counted_s
    print(
        f"instructions: limits={args.limits}, {args.calls:,} {kind} calls on {args.connections} connection(s) "
        f"after {args.warmup} warm-up calls: {net / args.calls / 1e6:.3f} M per call net of idle work "
        f"({total / args.calls / 1e6:.3f} M counted in {counted_s:.0f} s under callgrind, "
        f"idle {idle_rate / 1e6:.2f} M/s)"
    )
    if commands:
        per_call = ", ".join(f"{cmd} {n / args.calls:.2f}" for cmd, n in commands.most_common())
        print(f"Redis commands per call (MONITOR): {sum(commands.values()) / args.calls:.2f} ({per_call})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
