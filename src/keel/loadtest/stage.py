"""The Keel under test: the operator's keel.yaml with every provider replaced by a simulated stand-in.

Routing, limits, caches, backpressure (`max_concurrency`), retries and the trace writer stay as
configured; what changes is only what must not be touched by a load test: providers become `simulated`
(with the latency, time to first token, speed, error rate and rate limit the profile gives them), the
database is a fresh SQLite file in a temporary directory, Redis is kept only on a loopback address, and
anything that would send data elsewhere (alerts, OpenTelemetry) is left out. The server listens on
127.0.0.1 only, runs as a child process (`keel serve`) and is stopped with SIGTERM, then SIGKILL.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from keel import config as keel_config
from keel.errors import ConfigError, ConfigIssue
from keel.loadtest.profile import Profile, Upstream

LOOPBACK = ("127.0.0.1", "::1", "localhost")
DROPPED = ("alerts", "otel")  # sections that send data off the machine
KEY = re.compile(r"sk-keel-[A-Za-z0-9_-]+")
START_TIMEOUT_S = 60.0


@dataclass(frozen=True, slots=True)
class Staged:
    url: str  # http://127.0.0.1:PORT
    key: str
    pid: int
    config: dict[str, Any]  # the keel.yaml it runs
    notes: tuple[str, ...]  # what was changed, for the report


def is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    return host in LOOPBACK or host.startswith("127.")


def staged_config(
    raw: Mapping[str, Any], profile: Profile, workdir: Path, port: int
) -> tuple[dict[str, Any], list[str]]:
    """The config the Keel under test runs, and a line per change made to the operator's."""
    cfg = {k: v for k, v in raw.items() if k not in DROPPED}
    notes = [f"left out {k} (it sends data off this machine)" for k in DROPPED if k in raw]
    cfg["server"] = {**(raw.get("server") or {}), "host": "127.0.0.1", "port": port}
    cfg["storage"] = {"url": f"sqlite:///{workdir / 'keel.db'}"}
    cfg.pop("admin_token", None)
    traces = dict(raw.get("traces") or {})
    traces["spill_dir"] = str(workdir / "spill")
    traces.pop("blobs_url", None)
    traces.pop("s3", None)
    cfg["traces"] = traces
    redis = (raw.get("redis") or {}).get("url")
    if redis and not is_loopback(str(redis)):
        cfg.pop("redis", None)
        notes.append("left out redis: not on a loopback address (counters are per process)")
    providers = {}
    for name in raw.get("providers") or {}:
        stand_in = profile.providers.get(name, Upstream())
        providers[name] = _simulated(stand_in)
        notes.append(f"provider {name}: simulated ({_describe(stand_in)})")
    cfg["providers"] = providers
    return cfg, notes


def _simulated(up: Upstream) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "simulated", "latency_ms": up.ttft_ms}
    if up.tokens_per_second:
        out["tokens_per_second"] = up.tokens_per_second
    if up.error_rate:
        out["faults"] = _fault_cycle(up.error_rate, up.error)
    if up.rpm:
        out["rpm"] = up.rpm
    return out


def _fault_cycle(rate: float, kind: str, length: int = 1000) -> list[str]:
    """`length` outcomes with round(rate × length) failures spread evenly through them."""
    failures = round(rate * length)
    return [kind if (i + 1) * failures // length > i * failures // length else "ok" for i in range(length)]


def _describe(up: Upstream) -> str:
    parts = [f"{up.ttft_ms:g} ms to first token"]
    if up.tokens_per_second:
        parts.append(f"{up.tokens_per_second:g} tokens/s")
    if up.error_rate:
        parts.append(f"{up.error_rate:.1%} {up.error}")
    if up.rpm:
        parts.append(f"{up.rpm} rpm")
    return ", ".join(parts)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def staged(config_path: Path, profile: Profile, *, workers: int = 1) -> Iterator[Staged]:
    """Start the Keel under test and yield where it listens; stop it on the way out."""
    raw = yaml.safe_load(config_path.read_text()) if config_path.exists() else None
    if raw is None:
        issue = ConfigIssue("(file)", "no keel.yaml to load-test", "pass -c keel.yaml (or run `keel init`)")
        raise ConfigError([issue], str(config_path))
    with tempfile.TemporaryDirectory(prefix="keel-loadtest-") as tmp:
        workdir = Path(tmp)
        port = free_port()
        cfg, notes = staged_config(raw, profile, workdir, port)
        keel_config.parse(cfg, dict(os.environ), source=str(config_path))  # refuse a bad config before starting
        path = workdir / "keel.yaml"
        path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        log = (workdir / "serve.log").open("w+")
        cmd = [sys.executable, "-m", "keel.cli.main", "-c", str(path), "serve", "--log-level", "warning"]
        if workers > 1:
            cmd += ["--workers", str(workers)]
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=workdir, start_new_session=True)
        try:
            url = f"http://127.0.0.1:{port}"
            key = _wait_ready(proc, url, log)
            yield Staged(url, key, proc.pid, cfg, tuple(notes))
        finally:
            _stop(proc)
            log.close()


def _wait_ready(proc: subprocess.Popen[bytes], url: str, log: Any) -> str:
    deadline = time.monotonic() + START_TIMEOUT_S
    key = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log.seek(0)
            raise RuntimeError(f"the Keel under test exited with {proc.returncode}:\n{log.read()[-2000:]}")
        if key is None:
            log.seek(0)
            found = KEY.search(log.read())
            key = found.group(0) if found else None
        if key is not None:
            with contextlib.suppress(OSError), urllib.request.urlopen(f"{url}/readyz", timeout=1) as r:
                if r.status == 200:
                    return key
        time.sleep(0.1)
    raise RuntimeError(f"the Keel under test was not ready within {START_TIMEOUT_S:g} s")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
