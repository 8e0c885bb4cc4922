"""Keel's benchmark in one command: `python bench/run.py [--duration 10] [--quick]`.

Starts two fake upstreams (0 ms and 50 ms, bench/upstream.py) and `keel serve` with its features on
(auth, tracing to SQLite, cost), then prints, from this one run on this one machine: requests/s at 50
connections (wrk), gateway CPU ms per request, added latency p50/p99 at 1 connection against a direct
call to the same upstream, added time to the first streamed content chunk, and trace parity. The report
also goes to bench/results/latest.json.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import platform
import resource
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import probe

HERE = Path(__file__).resolve().parent
MESSAGES = [{"role": "user", "content": "Say hello to the benchmark."}]
# The gateway gets a core to itself; wrk, the upstreams and the 1-connection probe share the other, as a
# client and an upstream on other machines would. So the gateway path crosses cores and the direct path
# does not: on a VM, waking an idle vCPU can cost a millisecond, which is part of what an extra hop costs.
GATEWAY_CPU, SIDE_CPU = 1, 0


def chat_body(model: str, stream: bool = False) -> bytes:
    return json.dumps({"model": model, "messages": MESSAGES, "max_tokens": 16, "stream": stream}).encode()


@dataclass
class Sizes:
    duration: int
    calls_0ms: int
    calls_50ms: int
    calls_stream: int

    @classmethod
    def pick(cls, duration: int, quick: bool) -> Sizes:
        if quick:
            return cls(min(duration, 3), 500, 60, 500)
        return cls(duration, 2000, 300, 2000)


@dataclass
class Bench:
    tmp: Path
    pinned: bool
    limits: str = "none"  # none | memory | redis: the limits stage's counters
    extra: str = ""  # more top-level YAML for keel.yaml (other benches' settings)
    workers: int = 1  # keel serve --workers
    command: list[str] = field(default_factory=list)  # how to run `keel` (default: the keel script)
    ports: dict[str, int] = field(default_factory=dict)
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    key: str = ""
    direct_calls: dict[str, int] = field(default_factory=lambda: {"up0": 0, "up50": 0})
    gateway_calls: int = 0

    def pin(self, cpu: int) -> list[str]:
        return ["taskset", "-c", str(cpu)] if self.pinned else []

    @property
    def db(self) -> Path:
        return self.tmp / "keel.db"


# ---- processes ------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(port: int, path: str, proc: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"bench: process {proc.args} exited with {proc.returncode}")
        with contextlib.suppress(OSError):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            conn.request("GET", path)
            if conn.getresponse().status == 200:
                return
        time.sleep(0.05)
    raise SystemExit(f"bench: nothing answered on port {port}{path} within {timeout:.0f}s")


def start_upstream(bench: Bench, name: str, delay_ms: int) -> None:
    port = bench.ports[name] = free_port()
    cmd = [
        *bench.pin(SIDE_CPU),
        sys.executable,
        str(HERE / "upstream.py"),
        "--port",
        str(port),
        "--delay-ms",
        str(delay_ms),
    ]
    bench.procs[name] = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
    wait_http(port, "/stats", bench.procs[name])


LIMITS = """\
limits:
  defaults:
    - {scope: [tenant], rpm: 100000000, tpm: 10000000000, usd_day: 1000000}
    - {scope: [key], concurrency: 100000}
"""


def write_config(bench: Bench) -> Path:
    up0, up50 = bench.ports["up0"], bench.ports["up50"]
    text = f"""\
server: {{host: 127.0.0.1, port: {bench.ports["gateway"]}}}
admin_token: bench-admin-token
storage: {{url: "sqlite:///{bench.db}"}}
traces: {{spill_dir: "{bench.tmp / "spill"}"}}
providers:
  up: {{type: openai, base_url: "http://127.0.0.1:{up0}/v1", api_key: sk-bench}}
  up50: {{type: openai, base_url: "http://127.0.0.1:{up50}/v1", api_key: sk-bench}}
models:
  bench: {{targets: [{{provider: up, model: gpt-4o-mini}}]}}
  bench50: {{targets: [{{provider: up50, model: gpt-4o-mini}}]}}
"""
    if bench.limits != "none":  # four counters per call, as a typical tenant has; far from refusing
        text += LIMITS
    if bench.limits == "redis":
        text += 'redis: {url: "redis://127.0.0.1:6379/0"}\n'
    text += bench.extra
    path = bench.tmp / "keel.yaml"
    path.write_text(text)
    return path


def start_gateway(bench: Bench) -> None:
    bench.ports["gateway"] = free_port()
    config = write_config(bench)
    keel = bench.command or [shutil.which("keel") or str(Path(sys.executable).parent / "keel")]
    cmd = [*bench.pin(GATEWAY_CPU), *keel, "--config", str(config), "serve", "--log-level", "warning"]
    if bench.workers > 1:
        cmd += ["--workers", str(bench.workers)]
    log = (bench.tmp / "gateway.log").open("wb")
    bench.procs["gateway"] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=bench.tmp)
    wait_http(bench.ports["gateway"], "/healthz", bench.procs["gateway"])
    bench.key = bootstrap_key(bench.tmp / "gateway.log")


def bootstrap_key(log: Path) -> str:
    for word in log.read_text().split():
        if word.startswith("sk-keel-"):
            return word
    raise SystemExit(f"bench: no bootstrap key in the gateway's stderr ({log})")


def stop_gateway(bench: Bench) -> float:
    """SIGTERM, then wait for the drain; returns how long shutdown took."""
    proc = bench.procs.pop("gateway")
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise SystemExit("bench: the gateway did not exit within 60 s of SIGTERM") from None
    return time.monotonic() - t0


@contextlib.contextmanager
def running(bench: Bench) -> Iterator[Bench]:
    try:
        start_upstream(bench, "up0", 0)
        start_upstream(bench, "up50", 50)
        start_gateway(bench)
        if bench.pinned:
            os.sched_setaffinity(0, {SIDE_CPU})
        yield bench
    finally:
        for proc in bench.procs.values():
            proc.terminate()
        for proc in bench.procs.values():
            proc.wait(timeout=10)


# ---- measurements ---------------------------------------------------------------------------------

WRK_LUA = """\
wrk.method = "POST"
wrk.body = [[{body}]]
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer {key}"
done = function(s, latency, requests)
  local e = s.errors
  io.write(string.format('BENCH {{"requests":%d,"duration_us":%d,"non2xx":%d,"connect":%d,"read":%d,' ..
    '"write":%d,"timeout":%d,"p50_us":%d,"p99_us":%d}}\\n', s.requests, s.duration, e.status, e.connect,
    e.read, e.write, e.timeout, latency:percentile(50), latency:percentile(99)))
end
"""


def run_wrk(bench: Bench, seconds: int, connections: int = 50, body: bytes | None = None) -> dict[str, Any]:
    script = bench.tmp / "chat.lua"
    script.write_text(WRK_LUA.format(body=(body or chat_body("bench")).decode(), key=bench.key))
    url = f"http://127.0.0.1:{bench.ports['gateway']}/v1/chat/completions"
    cmd = [*bench.pin(SIDE_CPU), "wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script), url]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    line = next((ln for ln in out.splitlines() if ln.startswith("BENCH ")), None)
    if line is None:
        raise SystemExit(f"bench: unexpected wrk output:\n{out}")
    result: dict[str, Any] = json.loads(line[6:])
    result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
    result["socket_errors"] = sum(result[k] for k in ("connect", "read", "write", "timeout"))
    return result


def cpu_seconds(pid: int) -> float:
    """utime + stime of every thread of `pid` and of its running child processes (workers), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    own = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    with contextlib.suppress(OSError):
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        return own + sum(cpu_seconds(int(c)) for c in children)
    return own


def side_cpu_seconds(bench: Bench) -> float:
    """CPU of the load generator's side: the 0 ms upstream plus finished children (wrk)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return cpu_seconds(bench.procs["up0"].pid) + children.ru_utime + children.ru_stime


def throughput(bench: Bench, seconds: int) -> dict[str, Any]:
    pid = bench.procs["gateway"].pid
    warm = run_wrk(bench, 1)
    time.sleep(0.3)  # let the trace writer finish the warm-up batch
    cpu0, side0 = cpu_seconds(pid), side_cpu_seconds(bench)
    result = run_wrk(bench, seconds)
    time.sleep(0.3)  # the trace writer's last flush belongs to this run
    cpu, wall = cpu_seconds(pid) - cpu0, result["duration_us"] / 1e6 + 0.3
    result["warmup_requests"] = warm["requests"]
    result["cpu_s"] = cpu
    result["cpu_ms_per_request"] = cpu * 1000 / max(1, result["requests"])
    result["gateway_core_busy"] = cpu / wall
    result["side_core_busy"] = (side_cpu_seconds(bench) - side0) / wall
    return result


def compare(samples: dict[str, probe.Samples], attr: str) -> dict[str, float]:
    direct, gateway = getattr(samples["direct"], attr), getattr(samples["gateway"], attr)
    out = {"n": len(direct)}
    for p in (50, 99):
        out[f"direct_p{p}"] = probe.percentile(direct, p)
        out[f"gateway_p{p}"] = probe.percentile(gateway, p)
        out[f"added_p{p}"] = out[f"gateway_p{p}"] - out[f"direct_p{p}"]
    return out


def one_connection(bench: Bench, upstream: str, alias: str, n: int, stream: bool = False) -> dict[str, probe.Samples]:
    up_port, gw_port = bench.ports[upstream], bench.ports["gateway"]
    direct, gateway = probe.Probe(up_port), probe.Probe(gw_port)
    paths = {
        "direct": (direct, probe.build_request(up_port, chat_body("gpt-4o-mini", stream))),
        "gateway": (gateway, probe.build_request(gw_port, chat_body(alias, stream), bench.key)),
    }
    warmup = min(100, max(10, n // 10))
    try:
        return probe.alternate(paths, n, block=min(50, n), warmup=warmup)
    finally:
        bench.direct_calls[upstream] += direct.calls
        bench.gateway_calls += gateway.calls
        direct.close()
        gateway.close()


def upstream_answered(bench: Bench, name: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", bench.ports[name], timeout=5)
    conn.request("GET", "/stats")
    return int(json.loads(conn.getresponse().read())["answered"])


def parity(bench: Bench, wrk: dict[str, Any]) -> dict[str, Any]:
    """After SIGTERM: every request the gateway answered should have exactly one trace row."""
    answered = wrk["requests"] + wrk["warmup_requests"] + bench.gateway_calls
    forwarded = sum(upstream_answered(bench, n) - bench.direct_calls[n] for n in ("up0", "up50"))
    shutdown_s = stop_gateway(bench)
    with contextlib.closing(sqlite3.connect(bench.db)) as db:
        rows, ok, costed = db.execute(
            "SELECT count(*), coalesce(sum(status = 'ok'), 0), coalesce(sum(cost_usd > 0), 0) FROM traces"
        ).fetchone()
    spilled = sum(1 for _ in (bench.tmp / "spill").glob("*")) if (bench.tmp / "spill").exists() else 0
    return {
        "traces": rows, "traces_ok": ok, "traces_with_cost": costed, "answered": answered,
        "forwarded_upstream": forwarded, "in_flight_at_wrk_stop": forwarded - answered,
        "spill_files": spilled, "shutdown_s": shutdown_s,
    }  # fmt: skip


# ---- report ---------------------------------------------------------------------------------------


def machine(pinned: bool) -> dict[str, Any]:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], capture_output=True, text=True, cwd=HERE).stdout.strip()

    dirty = " (dirty)" if git("status", "--porcelain", "--", "src") else ""
    pinning = (
        f"taskset: gateway alone on cpu{GATEWAY_CPU}; wrk, upstreams and the 1-connection probe on cpu{SIDE_CPU}"
        if pinned
        else "not pinned (--no-pin, several workers, taskset missing or one core)"
    )
    return {
        "nproc": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
        "cpu": _cpu_model(), "commit": (git("rev-parse", "--short", "HEAD") or "unknown") + dirty, "pinning": pinning,
    }  # fmt: skip


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def figure(name: str, value: float, unit: str, target: float, higher_is_better: bool = False) -> dict[str, Any]:
    ok = value >= target if higher_is_better else value <= target
    return {"name": name, "value": round(value, 3), "unit": unit, "target": target,
            "direction": ">=" if higher_is_better else "<=", "pass": ok}  # fmt: skip


def figures(results: dict[str, Any]) -> list[dict[str, Any]]:
    wrk, lat0, lat50, ttfb = results["wrk"], results["latency_0ms"], results["latency_50ms"], results["ttfb_0ms"]
    return [
        figure("requests/s @ 50 connections", wrk["rps"], "req/s", 1500, higher_is_better=True),
        figure("gateway CPU per request", wrk["cpu_ms_per_request"], "ms", 0.6),
        figure("added latency p50 (0 ms upstream)", lat0["added_p50"], "ms", 1.5),
        figure("added latency p99 (0 ms upstream)", lat0["added_p99"], "ms", 4.0),
        figure("added latency p50 (50 ms upstream)", lat50["added_p50"], "ms", 1.5),
        figure("added latency p99 (50 ms upstream)", lat50["added_p99"], "ms", 4.0),
        figure("added time to first streamed byte p50", ttfb["added_p50"], "ms", 2.0),
    ]


def checks(results: dict[str, Any]) -> list[dict[str, Any]]:
    wrk, par = results["wrk"], results["parity"]
    traced = par["traces"] == par["forwarded_upstream"] >= par["answered"] and not par["spill_files"]
    return [
        figure("non-2xx responses under load", wrk["non2xx"], "", 0),
        figure("socket errors under load", wrk["socket_errors"], "", 0),
        {"name": "trace parity", "value": par["traces"], "unit": "rows", "target": par["forwarded_upstream"],
         "direction": "==", "pass": traced},
    ]  # fmt: skip


def details(results: dict[str, Any]) -> list[str]:
    wrk, par = results["wrk"], results["parity"]

    def row(label: str, r: dict[str, float]) -> str:
        return (f"  {label} (n={r['n']}): direct p50 {r['direct_p50']:.3f} p99 {r['direct_p99']:.3f} | "
                f"gateway p50 {r['gateway_p50']:.3f} p99 {r['gateway_p99']:.3f} | "
                f"added p50 {r['added_p50']:+.3f} p99 {r['added_p99']:+.3f} ms")  # fmt: skip

    return [
        f"  wrk -t1 -c50: {wrk['requests']} requests in {wrk['duration_us'] / 1e6:.1f} s, non-2xx {wrk['non2xx']}, "
        f"socket errors {wrk['socket_errors']}, latency p50 {wrk['p50_us'] / 1000:.2f} ms p99 {wrk['p99_us'] / 1000:.2f} ms",
        f"  gateway CPU {wrk['cpu_s']:.2f} s for {wrk['requests']} requests; it used "
        f"{100 * wrk['gateway_core_busy']:.0f}% of a core (wrk + upstream: {100 * wrk['side_core_busy']:.0f}% of a core)",
        row("1 connection, 0 ms upstream, full response", results["latency_0ms"]),
        row("1 connection, 50 ms upstream, full response", results["latency_50ms"]),
        row("1 connection, stream, first content chunk", results["ttfb_0ms"]),
        row("1 connection, stream, whole stream", results["stream_total_0ms"]),
        f"  traces: {par['traces_ok']} ok, {par['traces_with_cost']} with a cost; drained in {par['shutdown_s']:.2f} s "
        f"after SIGTERM",
    ]


def parity_line(par: dict[str, Any]) -> str:
    line = (f"traces written: {par['traces']} of {par['forwarded_upstream']} requests answered "
            f"({par['answered']} counted by wrk and the probe + {par['in_flight_at_wrk_stop']} in flight when wrk stopped)")  # fmt: skip
    if par["traces"] != par["forwarded_upstream"] or par["spill_files"]:
        bar = "!" * 100
        line = f"{bar}\n!!! TRACE MISMATCH: {line}; spill files left: {par['spill_files']}\n{bar}"
    return line


def render(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [
        f"Keel bench — {report['when']}",
        f"machine: {m['nproc']} cores ({m['cpu']}), Python {m['python']}, {m['platform']}, commit {m['commit']}",
        f"pinning: {m['pinning']}",
        "gateway: keel serve (uvicorn+uvloop+httptools), auth + tracing to SQLite + cost on; "
        f"limits: {report['limits']}; workers: {report.get('workers', 1)}; upstream: bench/upstream.py",
        "",
        f"{'figure':<44}{'measured':>18}   {'target':<12}",
    ]
    for f in report["figures"] + report["checks"]:
        value = f"{f['value']:,.3f} {f['unit']}".strip() if isinstance(f["value"], float) else f"{f['value']:,}"
        target = f"{f['direction']} {f['target']:,}"
        lines.append(f"{f['name']:<44}{value:>18}   {target:<12}{'PASS' if f['pass'] else 'MISS'}")
    lines += ["", "details (ms; added = gateway percentile − direct percentile):", *report["details"]]
    lines += ["", parity_line(report["results"]["parity"])]
    return "\n".join(lines)


# ---- calls by prompt against calls with messages (--prompt-ab) -----------------------------------

PROMPT = {"name": "bench", "messages": [{"role": "user", "content": "Say hello to {{who}}."}], "alias": "bench"}


def prompt_body() -> bytes:
    """The same call as chat_body("bench"), naming a prompt that renders MESSAGES."""
    ref = {"id": "bench", "version": 1, "variables": {"who": "the benchmark"}}
    return json.dumps({"model": "prompt", "messages": [], "max_tokens": 16, "prompt": ref}).encode()


def prompt_ab(bench: Bench, seconds: int, rounds: int) -> dict[str, Any]:
    """Gateway CPU per request under wrk, calls with messages and calls by prompt alternately, `rounds`
    times each (A B A B …), so a busy machine weighs on both alike; medians and their difference."""
    conn = http.client.HTTPConnection("127.0.0.1", bench.ports["gateway"], timeout=10)
    headers = {"authorization": f"Bearer {bench.key}", "content-type": "application/json"}
    conn.request("POST", "/api/prompts", json.dumps(PROMPT), headers)
    pushed = conn.getresponse()
    if pushed.status not in (200, 201):
        raise SystemExit(f"bench: pushing the prompt failed: {pushed.status} {pushed.read()[:300]!r}")
    conn.close()
    pid = bench.procs["gateway"].pid
    bodies = {"messages": chat_body("bench"), "prompt": prompt_body()}
    runs: dict[str, list[float]] = {kind: [] for kind in bodies}
    for body in bodies.values():
        run_wrk(bench, 1, body=body)  # warm both paths
    for _ in range(rounds):
        for kind, body in bodies.items():
            time.sleep(0.3)  # the trace writer's flush of the last run is not this one's
            cpu0 = cpu_seconds(pid)
            result = run_wrk(bench, seconds, body=body)
            if result["non2xx"]:
                raise SystemExit(f"bench: {kind} calls failed under load: {result}")
            if result["socket_errors"]:  # wrk's 2 s timeout on a busy machine: counted, the CPU figure stands
                print(f"bench: {kind}: {result['socket_errors']} socket errors (timeouts) in this run", file=sys.stderr)
            time.sleep(0.3)
            runs[kind].append((cpu_seconds(pid) - cpu0) * 1000 / max(1, result["requests"]))
    median = {kind: sorted(v)[len(v) // 2] for kind, v in runs.items()}
    return {"rounds": runs, "median_ms": median, "added_ms": median["prompt"] - median["messages"]}


def render_prompt_ab(ab: dict[str, Any], seconds: int) -> str:
    lines = [f"gateway CPU per request under wrk -c50, {seconds} s a run, alternating (ms):"]
    for kind, values in ab["rounds"].items():
        lines.append(f"  {kind:<9} " + "  ".join(f"{v:.4f}" for v in values) + f"   median {ab['median_ms'][kind]:.4f}")
    ok = ab["added_ms"] <= 0.05
    lines.append(
        f"calls by prompt add {ab['added_ms']:+.4f} ms CPU per call (target <= 0.05): {'PASS' if ok else 'MISS'}"
    )
    return "\n".join(lines)


# ---- main -----------------------------------------------------------------------------------------


def measure(bench: Bench, sizes: Sizes) -> dict[str, Any]:
    results: dict[str, Any] = {"wrk": throughput(bench, sizes.duration)}
    results["latency_0ms"] = compare(one_connection(bench, "up0", "bench", sizes.calls_0ms), "total")
    results["latency_50ms"] = compare(one_connection(bench, "up50", "bench50", sizes.calls_50ms), "total")
    stream = one_connection(bench, "up0", "bench", sizes.calls_stream, stream=True)
    results["ttfb_0ms"] = compare(stream, "first")
    results["stream_total_0ms"] = compare(stream, "total")
    results["parity"] = parity(bench, results["wrk"])
    return results


def run(sizes: Sizes, limits: str, workers: int = 1, pin: bool = True) -> dict[str, Any]:
    # several workers need the cores: nothing is pinned then, and wrk and the upstream share them
    pinned = pin and shutil.which("taskset") is not None and (os.cpu_count() or 1) >= 2 and workers == 1
    with tempfile.TemporaryDirectory(prefix="keel-bench-") as tmp:
        try:
            with running(Bench(Path(tmp), pinned, limits, workers=workers)) as bench:
                results = measure(bench, sizes)
        except BaseException:
            log = Path(tmp) / "gateway.log"
            if log.exists():
                print("bench: gateway log tail:\n" + "\n".join(log.read_text().splitlines()[-30:]), file=sys.stderr)
            raise
    report: dict[str, Any] = {"when": time.strftime("%Y-%m-%d %H:%M:%S %z"), "machine": machine(pinned)}
    report["limits"] = limits
    report["workers"] = workers
    report |= {"sizes": sizes.__dict__, "figures": figures(results), "checks": checks(results), "results": results}
    report["details"] = details(results)
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description="Keel's gateway benchmark: one run, one machine, one report")
    parser.add_argument("--duration", type=int, default=10, help="seconds of wrk load at 50 connections (default 10)")
    parser.add_argument("--quick", action="store_true", help="a short smoke run: 3 s of load, fewer latency samples")
    parser.add_argument(
        "--limits",
        choices=["none", "memory", "redis"],
        default="none",
        help="turn the limits stage on: rpm, tpm, usd_day per tenant and concurrency per key (never reached), "
        "counted in process (memory) or in the Redis at 127.0.0.1:6379 (redis)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="keel serve --workers N (N > 1: nothing is pinned; the gateway, wrk and the upstream share the cores)",
    )
    parser.add_argument("--no-pin", action="store_true", help="pin nothing (compare one worker with several)")
    parser.add_argument(
        "--prompt-ab",
        type=int,
        metavar="ROUNDS",
        help="only compare calls by prompt with the same calls sent with messages: gateway CPU per request, "
        "ROUNDS wrk runs of --duration seconds each, alternating",
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("bench: wrk not found; install it with `apt-get install -y wrk`")
    if args.prompt_ab:
        sizes = Sizes.pick(args.duration, args.quick)
        pinned = not args.no_pin and shutil.which("taskset") is not None and (os.cpu_count() or 1) >= 2
        with tempfile.TemporaryDirectory(prefix="keel-bench-") as tmp, running(Bench(Path(tmp), pinned)) as bench:
            ab = prompt_ab(bench, sizes.duration, args.prompt_ab)
        print(render_prompt_ab(ab, sizes.duration))
        return 0 if ab["added_ms"] <= 0.05 else 1
    report = run(Sizes.pick(args.duration, args.quick), args.limits, args.workers, not args.no_pin)
    print(render(report))
    out = HERE / "results" / "latest.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {out.relative_to(HERE.parent)}")
    return 0 if all(f["pass"] for f in report["figures"] + report["checks"]) else 1


if __name__ == "__main__":
    sys.exit(main())
