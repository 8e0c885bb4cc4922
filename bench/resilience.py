"""Resilience bench: `python bench/resilience.py [--calls 2000]`.

The claim under test: with one of two providers hard down, 100% of calls succeed and p99 latency
stays within 2× of normal once its breaker is open. Starts bench/upstream.py twice (a live one, and
a sick one answering 503 to everything) and `keel serve` with three aliases:

    normal → [live]                 the baseline
    sick   → [sick (503), live]     the first target is down but answers
    gone   → [a closed port, live]  the first target is down and refuses connections

After a warm-up that opens both dead targets' breakers (read back from GET /api/targets), it makes
`--calls` sequential calls per alias on one keep-alive connection each, interleaved in blocks of 50
so drift hits all three alike, and prints p50/p99/max, the p99 ratio against normal, the success
rate and how many calls paid for a half-open probe. The breaker cooldown is 1 s (not the 30 s
default), so probes of the dead targets happen during the measurement and are part of the figures.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import probe
from run import bootstrap_key, free_port, wait_http

HERE = Path(__file__).resolve().parent
ADMIN = "bench-admin-token"
ALIASES = {"normal": "(none)", "sick": "answers 503", "gone": "closed port"}
COOLDOWN_S = 1.0
TARGET_RATIO = 2.0


def chat_body(alias: str) -> bytes:
    messages = [{"role": "user", "content": "Say hello to the benchmark."}]
    return json.dumps({"model": alias, "messages": messages, "max_tokens": 16}).encode()


@dataclass
class Phase:
    ok: list[float] = field(default_factory=list)  # ms of each successful call
    failed: int = 0

    @property
    def calls(self) -> int:
        return len(self.ok) + self.failed


@dataclass
class Setup:
    tmp: Path
    ports: dict[str, int] = field(default_factory=dict)
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    key: str = ""

    def config(self) -> Path:
        live, sick, gone = self.ports["live"], self.ports["sick"], self.ports["gone"]
        text = f"""\
server: {{host: 127.0.0.1, port: {self.ports["gateway"]}}}
admin_token: {ADMIN}
storage: {{url: "sqlite:///{self.tmp / "keel.db"}"}}
traces: {{spill_dir: "{self.tmp / "spill"}"}}
resilience: {{breaker: {{cooldown_s: {COOLDOWN_S}}}}}
providers:
  live: {{type: openai, base_url: "http://127.0.0.1:{live}/v1", api_key: sk-bench}}
  sick: {{type: openai, base_url: "http://127.0.0.1:{sick}/v1", api_key: sk-bench}}
  gone: {{type: openai, base_url: "http://127.0.0.1:{gone}/v1", api_key: sk-bench}}
models:
  normal: {{targets: [{{provider: live, model: gpt-4o-mini}}]}}
  sick: {{targets: [{{provider: sick, model: gpt-4o-mini}}, {{provider: live, model: gpt-4o-mini}}]}}
  gone: {{targets: [{{provider: gone, model: gpt-4o-mini}}, {{provider: live, model: gpt-4o-mini}}]}}
"""
        path = self.tmp / "keel.yaml"
        path.write_text(text)
        return path


def start_upstream(setup: Setup, name: str, status: int) -> None:
    port = setup.ports[name] = free_port()
    cmd = [sys.executable, str(HERE / "upstream.py"), "--port", str(port), "--status", str(status)]
    setup.procs[name] = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
    wait_http(port, "/stats", setup.procs[name])


@contextlib.contextmanager
def running(tmp: Path) -> Iterator[Setup]:
    setup = Setup(tmp)
    try:
        start_upstream(setup, "live", 200)
        start_upstream(setup, "sick", 503)
        setup.ports["gone"] = free_port()  # nothing listens there
        setup.ports["gateway"] = free_port()
        keel = shutil.which("keel") or str(Path(sys.executable).parent / "keel")
        cmd = [keel, "--config", str(setup.config()), "serve", "--log-level", "warning"]
        log = (tmp / "gateway.log").open("wb")
        setup.procs["gateway"] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=tmp)
        wait_http(setup.ports["gateway"], "/healthz", setup.procs["gateway"])
        setup.key = bootstrap_key(tmp / "gateway.log")
        yield setup
    finally:
        for proc in setup.procs.values():
            proc.terminate()
        for proc in setup.procs.values():
            proc.wait(timeout=30)


def get_json(port: int, path: str, token: str | None = None) -> dict[str, object]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    conn.request("GET", path, headers={"authorization": f"Bearer {token}"} if token else {})
    body: dict[str, object] = json.loads(conn.getresponse().read())
    return body


def breakers(setup: Setup) -> dict[str, str]:
    rows = get_json(setup.ports["gateway"], "/api/targets", ADMIN)["data"]
    assert isinstance(rows, list)
    return {row["target"]: row["breaker"] for row in rows}


class Caller:
    """One keep-alive connection per alias; a failed call reconnects (its response was not read)."""

    def __init__(self, setup: Setup) -> None:
        self._port = setup.ports["gateway"]
        self._requests = {a: probe.build_request(self._port, chat_body(a), setup.key) for a in ALIASES}
        self._probes = {a: probe.Probe(self._port) for a in ALIASES}

    def call(self, alias: str, into: Phase) -> None:
        try:
            _, total = self._probes[alias].call(self._requests[alias])
        except (probe.BadResponse, OSError):
            into.failed += 1
            self._probes[alias].close()
            self._probes[alias] = probe.Probe(self._port)
            return
        into.ok.append(total * 1000)

    def close(self) -> None:
        for p in self._probes.values():
            p.close()


def measure(setup: Setup, calls: int, block: int = 50) -> tuple[dict[str, Phase], dict[str, str], float]:
    caller = Caller(setup)
    try:
        warm = Phase()
        for _ in range(100):
            for alias in ALIASES:
                caller.call(alias, warm)
        states = breakers(setup)
        started = time.time()
        phases = {alias: Phase() for alias in ALIASES}
        done = 0
        while done < calls:
            step = min(block, calls - done)
            for alias, phase in phases.items():
                for _ in range(step):
                    caller.call(alias, phase)
            done += step
    finally:
        caller.close()
    return phases, states, started


def probes_paid(db: Path, since: float) -> dict[str, int]:
    """Measured calls that tried the dead target first (a half-open probe), from the traces."""
    with contextlib.closing(sqlite3.connect(db)) as conn:
        rows = conn.execute(
            "SELECT alias, count(*) FROM traces WHERE started_at >= ? AND attempts > 1 GROUP BY alias", (since,)
        ).fetchall()
    return {alias: n for alias, n in rows}


def report(phases: dict[str, Phase], states: dict[str, str], probes: dict[str, int], calls: int) -> bool:
    base = probe.percentile(phases["normal"].ok, 99)
    print(f"Keel resilience bench — {time.strftime('%Y-%m-%d %H:%M:%S %z')}, {os.cpu_count()} cores")
    print(f"{calls} sequential calls per alias, one keep-alive connection each, interleaved in blocks of 50;")
    print(f"breaker: 5 consecutive failures open it, half-open probe after {COOLDOWN_S:g} s; retries_per_target 1")
    print("breakers after the warm-up: " + ", ".join(f"{t} {s}" for t, s in sorted(states.items())))
    print()
    print(f"{'alias':<8}{'dead target':<14}{'succeeded':>14}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}"
          f"{'p99/normal':>12}{'probes':>8}")  # fmt: skip
    good = True
    for alias, phase in phases.items():
        p50, p99 = probe.percentile(phase.ok, 50), probe.percentile(phase.ok, 99)
        ratio = p99 / base
        if alias != "normal":
            good = good and phase.failed == 0 and ratio <= TARGET_RATIO
        print(f"{alias:<8}{ALIASES[alias]:<14}{f'{len(phase.ok)}/{phase.calls}':>14}{p50:>9.3f}{p99:>9.3f}"
              f"{max(phase.ok):>9.3f}{ratio:>12.2f}{probes.get(alias, 0):>8}")  # fmt: skip
    print()
    verdict = "PASS" if good else "MISS"
    print(f"target: one provider hard down, breaker open → 100% succeed and p99 ≤ {TARGET_RATIO:g}× normal: {verdict}")
    return good


def main() -> int:
    parser = argparse.ArgumentParser(description="Keel's resilience bench: one provider hard down")
    parser.add_argument("--calls", type=int, default=2000, help="sequential calls per alias (default 2000)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="keel-resilience-") as tmp:
        try:
            with running(Path(tmp)) as setup:
                phases, states, since = measure(setup, args.calls)
            probes = probes_paid(Path(tmp) / "keel.db", since)  # the gateway drained its traces on exit
        except BaseException:
            log = Path(tmp) / "gateway.log"
            if log.exists():
                print("bench: gateway log tail:\n" + "\n".join(log.read_text().splitlines()[-30:]), file=sys.stderr)
            raise
    return 0 if report(phases, states, probes, args.calls) else 1


if __name__ == "__main__":
    sys.exit(main())
