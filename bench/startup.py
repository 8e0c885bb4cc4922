"""Start-up times of the `keel` command: median wall time of N fresh processes each.

    PYTHONPATH=src python3 bench/startup.py [--runs 10]

Prints, each as the median (and min–max) of N runs:
- the interpreter alone (`python -c pass`): the floor every command pays, site-packages' .pth files included;
- `keel --help`;
- `keel config check` on `keel init`'s starter file;
- `keel serve` start to ready: spawned on a free port in an empty temporary directory (the embedded demo
  config, a fresh SQLite file, so migrations and the bootstrap key run each time), until GET /readyz
  answers 200; then SIGTERM and wait for its exit.

Targets (issue 11): --help under 150 ms, serve ready under 1 s on the 2-core dev machine.
"""

from __future__ import annotations

import argparse
import http.client
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_SCRIPT = shutil.which("keel", path=str(Path(sys.executable).parent))  # the installed console script
KEEL = [_SCRIPT] if _SCRIPT else [sys.executable, "-m", "keel.cli.main"]
# Bytecode caching on, as in an installed keel: with PYTHONDONTWRITEBYTECODE every run would compile keel anew.
ENV = {k: v for k, v in os.environ.items() if k not in ("KEEL_CONFIG", "PYTHONDONTWRITEBYTECODE")}


def timed(cmd: list[str], cwd: str) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - start


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def ready(port: int) -> bool:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
    try:
        conn.request("GET", "/readyz")
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


def serve_ready() -> float:
    """Seconds from spawning `keel serve` to its first 200 on /readyz."""
    with tempfile.TemporaryDirectory() as cwd:
        port = free_port()
        start = time.perf_counter()
        proc = subprocess.Popen(
            [*KEEL, "serve", "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
            cwd=cwd,
            env=ENV,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            while not ready(port):
                if proc.poll() is not None:
                    raise SystemExit(f"keel serve exited with {proc.returncode} before it was ready")
                if time.perf_counter() - start > 30:
                    raise SystemExit("keel serve was not ready within 30 s")
                time.sleep(0.002)
            return time.perf_counter() - start
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)


def line(name: str, samples: list[float], target_ms: float | None = None) -> str:
    ms = sorted(1000 * s for s in samples)
    med = statistics.median(ms)
    verdict = "" if target_ms is None else f"  (target < {target_ms:g} ms: {'met' if med < target_ms else 'MISSED'})"
    return f"{name:<26} median {med:7.1f} ms   min {ms[0]:7.1f}   max {ms[-1]:7.1f}   n={len(ms)}{verdict}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=10)
    runs = ap.parse_args().runs
    import keel  # the package only: which source tree the commands run

    where = Path(keel.__file__).parent
    print(f"keel: {' '.join(KEEL)} ({where}); python {sys.version.split()[0]}; {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory() as cwd:
        subprocess.run([*KEEL, "init"], cwd=cwd, env=ENV, stdout=subprocess.DEVNULL, check=True)
        timed([*KEEL, "config", "check"], cwd)  # warm the OS file cache and the bytecode once
        serve_ready()
        print(line("python -c pass", [timed([sys.executable, "-c", "pass"], cwd) for _ in range(runs)]))
        print(line("keel --help", [timed([*KEEL, "--help"], cwd) for _ in range(runs)], 150))
        print(line("keel config check", [timed([*KEEL, "config", "check"], cwd) for _ in range(runs)]))
    print(line("keel serve → /readyz 200", [serve_ready() for _ in range(runs)], 1000))


if __name__ == "__main__":
    main()
