"""An eval run through `keel serve`, start to finish: the issue 16 target.

    python bench/evals.py                  # 1,000 items × 3 deterministic assertions; target >= 200 items/s
    python bench/evals.py --items 300      # a quicker run

Starts `keel serve` (SQLite in a temp dir, its embedded job workers, the simulated provider with no
latency), creates a run of a suite of `--items` tests, each with three deterministic assertions
(contains, not-icontains, regex), over the admin API with the bootstrap key, and polls it every 50 ms
until it is finished. Reports the time from creation to finished, items/s, and the run's results.
Noisy on a shared machine: read it as indicative. Exit code 0 when the run met the target.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from served import free_port, serve

TARGET = 200.0  # items/s


def start(tmp: Path, port: int) -> tuple[subprocess.Popen[bytes], str]:
    return serve(tmp, port)


def suite(items: int) -> dict[str, object]:
    return {
        "description": "bench",
        "prompts": ["Answer question {{n}} in one sentence."],
        "providers": [{"id": "demo", "config": {"max_tokens": 32}}],
        "defaultTest": {
            "assert": [
                {"type": "contains", "value": " "},
                {"type": "not-icontains", "value": "as an ai language model"},
                {"type": "regex", "value": r"\w+"},
            ]
        },
        "tests": [{"vars": {"n": i}} for i in range(items)],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=1000)
    ap.add_argument("--concurrency", type=int, default=32)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="keel-bench-evals-") as name:
        tmp = Path(name)
        port = free_port()
        proc, key = start(tmp, port)
        url, headers = f"http://127.0.0.1:{port}", {"authorization": f"Bearer {key}"}
        try:
            with httpx.Client(base_url=url, headers=headers, timeout=60) as c:
                t0 = time.perf_counter()
                body = {"suite": suite(args.items), "concurrency": args.concurrency}
                run = c.post("/api/evals/runs", json=body).raise_for_status().json()
                while run["status"] not in ("finished", "failed", "cancelled"):
                    time.sleep(0.05)
                    run = c.get(f"/api/evals/runs/{run['id']}").raise_for_status().json()
                took = time.perf_counter() - t0
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
    summary = run.get("summary") or {}
    rate = args.items / took
    ok = run["status"] == "finished" and summary.get("results") == args.items and rate >= TARGET
    print(
        f"eval run of {args.items} items × 3 deterministic assertions (simulated provider, SQLite, concurrency {args.concurrency})"
    )
    print(f"  create -> {run['status']}: {took:.2f} s ({rate:,.0f} items/s); target >= {TARGET:g} items/s")
    print(f"  results {summary.get('results')}, passed {summary.get('passed')}, errors {summary.get('errors')}")
    print("OK" if ok else "MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
