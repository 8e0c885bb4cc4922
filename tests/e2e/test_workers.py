"""`keel serve --workers N` as a real process tree: one socket, several pids, a killed worker started
again, SIGTERM drains every worker (all traces of answered calls in SQLite, exit code 0), and the
per-process state that would make limits wrong is refused."""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.e2e.test_serve_process import KEEL, Server, bootstrap_key, free_port, wait_healthy

STARTED = re.compile(r"worker (\d+) started \(pid (\d+)\)")


def pid_alive(pid: int) -> bool:
    """Running, not a zombie; a process reaped between the two looks is gone (its /proc entry vanishes:
    reading it raises ProcessLookupError)."""
    try:
        os.kill(pid, 0)
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (ProcessLookupError, FileNotFoundError):
        return False
    return state != "Z"


def wait_for(what: str, check: Any, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := check():
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def config(tmp_path: Path, port: int, storage: str | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "server": {"port": port},
        "storage": {"url": storage or f"sqlite:///{tmp_path / 'k.db'}"},
        "traces": {"spill_dir": str(tmp_path / "spill")},
        "providers": {"sim": {"type": "simulated", "ttft_ms": 0}},
        "models": {"demo": {"targets": [{"provider": "sim", "model": "simulated-1"}]}},
        **extra,
    }


@pytest.fixture(params=["sqlite", "postgres"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgres":
        return str(request.getfixturevalue("pg_schema_url"))
    return f"sqlite:///{tmp_path / 'k.db'}"


@pytest.fixture
def workers(tmp_path: Path, storage: str) -> Iterator[Server]:
    port = free_port()
    (tmp_path / "keel.yaml").write_text(yaml.safe_dump(config(tmp_path, port, storage)))
    log = tmp_path / "serve.log"
    with log.open("wb") as err:
        proc = subprocess.Popen(
            [*KEEL, "serve", "--workers", "2"], cwd=tmp_path, stdin=subprocess.DEVNULL, stdout=err, stderr=err
        )
    try:
        url = f"http://127.0.0.1:{port}"
        key = bootstrap_key(proc, log, timeout=45)  # N processes start on a loaded machine
        wait_healthy(proc, url, log, timeout=45)
        yield Server(proc, tmp_path, url, key, tmp_path / "k.db", tmp_path / "spill", log)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        for _, pid in STARTED.findall(log.read_text()):  # no worker outlives the test
            if pid_alive(int(pid)):
                os.kill(int(pid), signal.SIGKILL)


def call(server: Server, i: int) -> tuple[int, str]:
    """One chat call on a new connection: (pid of the worker that answered, trace id)."""
    body = {"model": "demo", "messages": [{"role": "user", "content": f"call {i}"}], "stream": i % 2 == 1}
    auth = {"authorization": f"Bearer {server.key}"}
    with httpx.Client(base_url=server.url, headers=auth, timeout=10) as h:
        r = h.post("/v1/chat/completions", json=body)
    assert r.status_code == 200, r.text
    return int(r.headers["x-keel-worker"]), r.headers["x-keel-trace-id"]


def stored(url: str) -> set[str]:
    """Every trace id in the store at `url`, read on a connection of its own."""
    if url.startswith("sqlite:///"):
        with closing(sqlite3.connect(url.removeprefix("sqlite:///"))) as conn:
            return {tid for (tid,) in conn.execute("SELECT id FROM traces")}
    import psycopg

    with psycopg.connect(url) as pg:
        return {tid for (tid,) in pg.execute("SELECT id FROM traces")}


def started_pids(server: Server) -> list[int]:
    return [int(pid) for _, pid in STARTED.findall(server.log.read_text())]


@pytest.mark.timeout(150)
def test_two_workers_answer_a_killed_one_is_replaced_and_sigterm_drains_both(workers: Server, storage: str) -> None:
    server = workers
    first = started_pids(server)
    assert len(first) == 2 and all(pid_alive(p) for p in first), server.log.read_text()
    answered: dict[str, int] = {}

    def until_both(pids: set[int], start: int) -> None:
        seen: set[int] = set()
        for i in range(start, start + 400):  # new connections land on either worker
            pid, trace = call(server, i)
            answered[trace] = pid
            seen.add(pid)
            if seen == pids:
                return
        raise AssertionError(f"only {seen} of {pids} answered 400 calls")

    until_both(set(first), 0)
    assert set(answered.values()) <= set(first)

    # traces are written before the kill (a SIGKILL loses the last flush interval: README)
    wait_for("the traces of the calls so far", lambda: set(answered) <= stored(storage))
    victim, survivor = first
    os.kill(victim, signal.SIGKILL)
    replacement = wait_for("a new worker", lambda: next((p for p in started_pids(server) if p not in first), None))
    assert "was killed by SIGKILL" in server.log.read_text()
    assert pid_alive(replacement) and pid_alive(survivor) and not pid_alive(victim)

    until_both({survivor, replacement}, 1000)
    with ThreadPoolExecutor(4) as pool:
        for pid, trace in pool.map(lambda i: call(server, i), range(2000, 2200)):
            answered[trace] = pid
    server.proc.send_signal(signal.SIGTERM)  # right after the last answer
    code = server.proc.wait(timeout=90)

    assert code == 0, f"`keel serve --workers 2` exited {code} after SIGTERM:\n{server.log.read_text()[-3000:]}"
    assert not set(answered) - stored(storage), "an answered call has no trace row"
    assert not list(server.spill.glob("traces-*")), "records left in the spill dir instead of the database"
    assert not any(pid_alive(p) for p in (survivor, replacement)), "a worker outlived the supervisor"


def test_workers_refuse_limits_counted_in_memory(tmp_path: Path) -> None:
    limits = {"defaults": [{"scope": ["tenant"], "rpm": 100}]}
    (tmp_path / "keel.yaml").write_text(yaml.safe_dump(config(tmp_path, free_port(), limits=limits)))

    serve = subprocess.run([*KEEL, "serve", "--workers", "2"], cwd=tmp_path, capture_output=True, text=True, timeout=30)
    assert serve.returncode == 1, serve.stderr
    assert "redis.url" in serve.stderr and "2x every rpm" in serve.stderr, serve.stderr

    check = subprocess.run(
        [*KEEL, "config", "check", "--workers", "2"], cwd=tmp_path, capture_output=True, text=True, timeout=30
    )
    assert check.returncode == 1 and "redis.url" in check.stderr, check.stderr
    one = subprocess.run([*KEEL, "config", "check"], cwd=tmp_path, capture_output=True, text=True, timeout=30)
    assert one.returncode == 0, one.stderr


def test_config_check_warns_about_per_worker_breakers(tmp_path: Path) -> None:
    (tmp_path / "keel.yaml").write_text(yaml.safe_dump(config(tmp_path, free_port())))
    check = subprocess.run(
        [*KEEL, "config", "check", "--workers", "3"], cwd=tmp_path, capture_output=True, text=True, timeout=30
    )
    assert check.returncode == 0, check.stderr
    assert "circuit breakers are per worker" in check.stderr
