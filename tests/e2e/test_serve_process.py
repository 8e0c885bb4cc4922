"""`keel serve` as a real process: trace and rollup parity across SIGTERM, and revocation by another process.

Each test starts its own server (a free port, SQLite in tmp_path, the simulated provider) and
kills it in teardown whatever happened. Clients are the `openai` SDK, as a user would run it.
"""

from __future__ import annotations

import itertools
import json
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml

KEEL = [sys.executable, "-m", "keel.cli.main"]  # `keel`, in the interpreter running the tests
BOOTSTRAP = re.compile(r"keel: created tenant 'default' and key (sk-keel-\S+) \(shown once")
REVOCATION_BOUND_S = 1.0 + 0.5  # the promise, plus slack for a loaded test machine


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    cwd: Path
    url: str
    key: str  # the bootstrap key of tenant 'default'
    db: Path
    spill: Path
    log: Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def bootstrap_key(proc: subprocess.Popen[bytes], log: Path, timeout: float = 15.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = BOOTSTRAP.search(log.read_text(errors="replace"))
        if found:
            return found.group(1)
        if proc.poll() is not None:
            break
        time.sleep(0.02)
    raise AssertionError(f"`keel serve` printed no bootstrap key (exit {proc.poll()}):\n{log.read_text()}")


def wait_healthy(proc: subprocess.Popen[bytes], url: str, log: Path, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:  # refused, reset, or a read timed out (TimeoutError: urllib does not wrap it) while it starts
            pass
        if proc.poll() is not None:
            break
        time.sleep(0.02)
    raise AssertionError(f"`keel serve` never became healthy (exit {proc.poll()}):\n{log.read_text()}")


@contextmanager
def serving(
    tmp_path: Path, server: dict[str, Any] | None = None, alias: str = "demo"
) -> Iterator[tuple[subprocess.Popen[bytes], str, str, Path]]:
    """`keel serve` in `tmp_path` on a fresh SQLite file and the simulated provider behind `alias`, with
    `server` settings on top of a free port: (process, URL, bootstrap key, log), killed at the end."""
    port = free_port()
    config = {
        "server": {"port": port, **(server or {})},
        "storage": {"url": f"sqlite:///{tmp_path / 'k.db'}"},
        "traces": {"spill_dir": str(tmp_path / "spill")},
        "providers": {"sim": {"type": "simulated", "ttft_ms": 0}},
        "models": {alias: {"targets": [{"provider": "sim", "model": "simulated-1"}]}},
    }
    (tmp_path / "keel.yaml").write_text(yaml.safe_dump(config))
    log = tmp_path / "serve.log"
    with log.open("wb") as err:
        proc = subprocess.Popen([*KEEL, "serve"], cwd=tmp_path, stdin=subprocess.DEVNULL, stdout=err, stderr=err)
    try:
        url = f"http://127.0.0.1:{port}"
        key = bootstrap_key(proc, log)
        wait_healthy(proc, url, log)
        yield proc, url, key, log
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    with serving(tmp_path) as (proc, url, key, log):
        yield Server(proc, tmp_path, url, key, tmp_path / "k.db", tmp_path / "spill", log)


def keel(server: Server, *args: str) -> str:
    """Run a `keel` command beside the server, on the same keel.yaml; return its stdout."""
    done = subprocess.run([*KEEL, *args], cwd=server.cwd, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, f"keel {' '.join(args)} failed ({done.returncode}):\n{done.stderr}"
    return done.stdout


def client(server: Server, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0, timeout=10)


def ask(c: openai.OpenAI, i: int) -> str:
    """One chat completion; odd calls stream. Returns the answer's text."""
    messages: list[openai.types.chat.ChatCompletionMessageParam] = [{"role": "user", "content": f"call {i}"}]
    if i % 2:
        with c.chat.completions.create(model="demo", messages=messages, stream=True) as stream:
            return "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    return c.chat.completions.create(model="demo", messages=messages).choices[0].message.content or ""


def counts(db: Path, column: str) -> dict[object, int]:
    with closing(sqlite3.connect(db)) as conn:
        return dict(conn.execute(f"SELECT {column}, count(*) FROM traces GROUP BY {column}").fetchall())


_SUMMED = (
    "count(*)",
    "sum(input_tokens)",
    "sum(output_tokens)",
    "round(sum(cost_usd), 9)",
    "round(sum(latency_ms), 6)",
)
_ROLLED = (
    "sum(calls)",
    "sum(input_tokens)",
    "sum(output_tokens)",
    "round(sum(cost_usd), 9)",
    "round(sum(latency_sum_ms), 6)",
)


def assert_rollups_equal_traces(db: Path) -> None:
    """Every grain and every dimension of the usage rollups adds up to the sums over the trace rows."""
    with closing(sqlite3.connect(db)) as conn:
        want = conn.execute(f"SELECT {', '.join(_SUMMED)} FROM traces").fetchone()
        for grain in ("minute", "hour", "day"):
            sql = f"SELECT dim, {', '.join(_ROLLED)} FROM usage_{grain} GROUP BY dim"
            per_dim = {dim: tuple(sums) for dim, *sums in conn.execute(sql)}
            assert len(per_dim) == 9, per_dim.keys()  # '*' and the eight attribution dimensions
            assert all(sums == want for sums in per_dim.values()), (grain, per_dim, want)


def test_n_successful_calls_leave_exactly_n_traces_after_sigterm(server: Server) -> None:
    n = 300
    with urllib.request.urlopen(server.url + "/readyz", timeout=5) as r:
        ready = json.load(r)
    assert ready["traces_dropped"] == 0 and "trace_queue" in ready  # drops are visible

    with client(server, server.key) as c, ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda i: ask(c, i), range(n)))
        server.proc.send_signal(signal.SIGTERM)  # right after the last response
    code = server.proc.wait(timeout=30)

    assert len(answers) == n and all(answers)
    assert counts(server.db, "status") == {"ok": n}
    assert counts(server.db, "stream") == {0: n // 2, 1: n // 2}
    assert not list(server.spill.glob("traces-*")), "records left in the spill dir instead of the database"
    assert_rollups_equal_traces(server.db)
    assert code == 0, f"`keel serve` exited {code} after SIGTERM:\n{server.log.read_text()[-2000:]}"


def test_sigterm_in_the_middle_of_a_load_run_loses_no_record_and_rollups_still_match(server: Server) -> None:
    answered: list[str] = []  # trace ids of the calls that got an answer

    def load(worker: int) -> None:
        auth = {"authorization": f"Bearer {server.key}"}
        with httpx.Client(base_url=server.url, headers=auth, timeout=10) as h:
            for i in itertools.count():
                body = {
                    "model": "demo",
                    "messages": [{"role": "user", "content": f"{worker}/{i}"}],
                    "stream": i % 2 == 1,
                }
                try:
                    r = h.post("/v1/chat/completions", json=body, headers={"x-keel-feature": f"f{worker % 3}"})
                except httpx.HTTPError:
                    return  # the server has gone
                if r.status_code != 200:
                    return
                answered.append(r.headers["x-keel-trace-id"])

    with ThreadPoolExecutor(6) as pool:
        running = [pool.submit(load, w) for w in range(6)]
        while len(answered) < 300 and not any(f.done() for f in running):
            time.sleep(0.01)
        server.proc.send_signal(signal.SIGTERM)  # calls are in flight
    code = server.proc.wait(timeout=30)

    with closing(sqlite3.connect(server.db)) as conn:
        stored = {tid for (tid,) in conn.execute("SELECT id FROM traces")}
    assert len(answered) >= 300 and not set(answered) - stored, "an answered call has no trace row"
    assert not list(server.spill.glob("traces-*")), "records left in the spill dir instead of the database"
    assert_rollups_equal_traces(server.db)
    assert code == 0, f"`keel serve` exited {code} after SIGTERM:\n{server.log.read_text()[-2000:]}"


def test_a_key_revoked_by_the_cli_is_refused_by_the_running_server_within_a_second(server: Server) -> None:
    created = json.loads(keel(server, "keys", "create", "--tenant", "default", "--name", "doomed", "--json"))
    with client(server, created["key"]) as c:
        assert ask(c, 0)  # accepted: the server now holds the key in its cache

        keel(server, "keys", "revoke", created["id"])
        revoked = time.monotonic()
        while True:
            try:
                ask(c, 0)
            except openai.AuthenticationError:
                break
            elapsed = time.monotonic() - revoked
            assert elapsed < REVOCATION_BOUND_S, f"revoked key still accepted {elapsed:.2f} s after `keel keys revoke`"
            time.sleep(0.05)
        elapsed = time.monotonic() - revoked

    assert elapsed < REVOCATION_BOUND_S
    with client(server, server.key) as other:
        assert ask(other, 1)  # the other key is unaffected
