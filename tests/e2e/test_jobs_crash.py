"""Job workers as real processes (`keel worker`), on SQLite and PostgreSQL: a worker killed with
`kill -9` after a job's effect but before its finish → the job runs again once its lease expires, and
its effect (an idempotent write keyed on the job id, tests/e2e/jobs_plugin.py) exists exactly once;
SIGTERM → quick jobs finish, slow ones are handed back at once, none is lost or left claimed."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml

from keel.store.open import open_store
from keel.store.protocols import Job, JobQuery, JobSpec, Store

KEEL = [sys.executable, "-m", "keel.cli.main"]
ROOT = Path(__file__).resolve().parents[2]
T = TypeVar("T")


def write_config(tmp: Path, storage_url: str) -> Path:
    config = {
        "storage": {"url": storage_url},
        "traces": {"spill_dir": str(tmp / "spill")},
        "providers": {"sim": {"type": "simulated", "ttft_ms": 0}},
        "models": {"demo": {"targets": [{"provider": "sim", "model": "simulated-1"}]}},
        "jobs": {
            "lease_s": 1.0,
            "poll_s": 0.1,
            "grace_s": 1.0,
            "workers": 6,
            "plugins": ["tests.e2e.jobs_plugin:build"],
        },
    }
    path = tmp / "keel.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@contextmanager
def worker(tmp: Path, name: str, *args: str, ready: str = "keel: worker running") -> Iterator[subprocess.Popen[bytes]]:
    """`keel worker` (or `keel serve`) beside the test, started before the body; killed at the end."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
    log = tmp / f"{name}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([*KEEL, *args], cwd=tmp, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
    try:
        until(lambda: ready in log.read_text() or proc.poll() is not None, 30)
        assert proc.poll() is None, log.read_text()
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def until(check: Callable[[], T], timeout_s: float) -> T:
    deadline = time.monotonic() + timeout_s
    while not (found := check()):
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        time.sleep(0.02)
    return found


def rows(db: Path, sql: str) -> list[tuple[Any, ...]]:
    if not db.exists():
        return []
    with closing(sqlite3.connect(db, timeout=30)) as conn:
        try:
            return conn.execute(sql).fetchall()
        except sqlite3.OperationalError:  # the table is not created yet
            return []


def finished(store: Store, job_id: str) -> Job | None:
    job = store.get_job(job_id)
    return job if job is not None and job.state in ("succeeded", "dead", "cancelled") else None


def test_a_job_whose_worker_is_killed_runs_again_and_its_effect_exists_once(storage_url: str, tmp_path: Path) -> None:
    write_config(tmp_path, storage_url)
    effects = tmp_path / "effects.db"
    store = open_store(storage_url)
    try:
        with worker(tmp_path, "first", "worker") as first:
            (job,) = store.enqueue_jobs(
                [JobSpec("test.effect", {"db": str(effects), "hang_after_effect": True})], time.time()
            )
            until(lambda: rows(effects, "SELECT job_id FROM effects"), 30)  # the effect is written; the job hangs
            os.kill(first.pid, signal.SIGKILL)
            first.wait()
        running = store.get_job(job.id)
        assert running is not None and running.state == "running" and running.attempts == 1

        with worker(tmp_path, "second", "worker"):
            done = until(lambda: finished(store, job.id), 30)
    finally:
        store.close()

    assert (done.state, done.attempts, done.expiries) == ("succeeded", 2, 1)
    assert done.result == {"pid": rows(effects, "SELECT pid FROM attempts WHERE attempt = 2")[0][0]}
    assert rows(effects, "SELECT job_id FROM effects") == [(job.id,)]  # exactly once
    assert [a for (a,) in rows(effects, "SELECT attempt FROM attempts ORDER BY attempt")] == [1, 2]


@pytest.mark.parametrize("command", ["worker", "serve"])
def test_sigterm_finishes_quick_jobs_and_hands_back_slow_ones(storage_url: str, tmp_path: Path, command: str) -> None:
    """`keel worker` and `keel serve` (its embedded pool) drain the same way."""
    write_config(tmp_path, storage_url)
    effects = tmp_path / "effects.db"
    store = open_store(storage_url)
    args = ["worker", "--concurrency", "6"] if command == "worker" else ["serve", "--port", str(free_port())]
    ready = "keel: worker running" if command == "worker" else "keel: serving on"
    try:
        with worker(tmp_path, "first", *args, ready=ready) as first:
            sleep = {"db": str(effects)}
            quick = store.enqueue_jobs(
                [JobSpec("test.sleep", {**sleep, "seconds": 0.3}) for _ in range(3)], time.time()
            )
            slow = store.enqueue_jobs([JobSpec("test.sleep", {**sleep, "seconds": 60}) for _ in range(3)], time.time())
            until(lambda: len(rows(effects, "SELECT DISTINCT job_id FROM attempts")) == 6, 30)  # all six started
            first.send_signal(signal.SIGTERM)
            assert first.wait(30) == 0
        for j in quick:
            got = store.get_job(j.id)
            assert got is not None and got.state == "succeeded", got
        for j in slow:
            got = store.get_job(j.id)
            assert got is not None and (got.state, got.attempts, got.claim) == ("queued", 0, None), got  # handed back
            assert got.run_at <= time.time()  # at once, not after a lease
        assert store.list_jobs(JobQuery(state="running")) == []  # none left claimed
        assert len(rows(effects, "SELECT job_id FROM effects")) == 3
    finally:
        store.close()


def free_port() -> int:
    with closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
