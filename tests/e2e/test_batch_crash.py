"""Deferred work survives its worker's death: `keel serve` (embedded job workers) is killed with
SIGKILL mid-batch, or mid async call; a second `keel serve` on the same database takes the job back
once its lease expires. The batch resumes from the recorded lines and completes with every output
line exactly once; the async call runs again and its webhook lands once."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import httpx
import openai
import yaml

from tests.conftest import until
from tests.e2e.test_async_calls import SECRET, Receiver
from tests.e2e.test_serve_process import KEEL, bootstrap_key, free_port, wait_healthy

LINES = 400


def config(tmp_path: Path, port: int) -> dict[str, Any]:
    return {
        "server": {"port": port},
        "storage": {"url": f"sqlite:///{tmp_path / 'k.db'}"},
        "traces": {"spill_dir": str(tmp_path / "spill")},
        "providers": {
            "sim": {"type": "simulated", "latency_ms": 40},
            "slow": {"type": "simulated", "latency_ms": 4000},
        },
        "models": {
            "demo": {"targets": [{"provider": "sim", "model": "simulated-1"}]},
            "slow": {"targets": [{"provider": "slow", "model": "simulated-1"}]},
        },
        "jobs": {"lease_s": 2.0, "poll_s": 0.2},
        "batches": {"concurrency": 8},
        "async_calls": {"webhook_secret": SECRET, "allow_private_webhooks": True},
    }


@contextmanager
def serve(tmp_path: Path, name: str) -> Iterator[tuple[subprocess.Popen[bytes], str, Path]]:
    port = free_port()
    (tmp_path / "keel.yaml").write_text(yaml.safe_dump(config(tmp_path, port)))
    log = tmp_path / f"{name}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([*KEEL, "serve"], cwd=tmp_path, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
    try:
        url = f"http://127.0.0.1:{port}"
        yield proc, url, log
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def test_a_batch_resumes_after_kill_9_and_writes_each_line_once(tmp_path: Path) -> None:
    lines = [
        {"custom_id": f"c{i}", "method": "POST", "url": "/v1/chat/completions",
         "body": {"model": "demo", "messages": [{"role": "user", "content": f"line {i}"}]}}
        for i in range(LINES)
    ]  # fmt: skip
    data = "".join(json.dumps(x) + "\n" for x in lines).encode()

    with serve(tmp_path, "first") as (proc, url, log):
        key = bootstrap_key(proc, log)
        wait_healthy(proc, url, log)
        c = openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0, timeout=10)
        f = c.files.create(file=("in.jsonl", data), purpose="batch")
        batch = c.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h")
        assert until(lambda: c.batches.retrieve(batch.id).request_counts.completed >= 40, 60), log.read_text()
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    at_kill = recorded(tmp_path, batch.id)
    assert 40 <= at_kill < LINES, "the worker died mid-batch"

    with serve(tmp_path, "second") as (proc, url, log):
        wait_healthy(proc, url, log)
        c = openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0, timeout=10)
        assert until(lambda: c.batches.retrieve(batch.id).status == "completed", 90), log.read_text()
        b = c.batches.retrieve(batch.id)
        out = [json.loads(x) for x in c.files.content(b.output_file_id).text.splitlines()]

    ids = [x["custom_id"] for x in out]
    assert len(ids) == LINES and sorted(ids) == sorted(f"c{i}" for i in range(LINES))  # each line exactly once
    assert ids == [f"c{i}" for i in range(LINES)]  # in input order
    assert all(x["response"]["status_code"] == 200 for x in out)
    assert (b.request_counts.total, b.request_counts.completed, b.request_counts.failed) == (LINES, LINES, 0)
    assert recorded(tmp_path, batch.id) == LINES
    with closing(sqlite3.connect(tmp_path / "k.db")) as db:
        [(files,)] = db.execute("SELECT COUNT(*) FROM files WHERE purpose = 'batch_output'").fetchall()
        [(attempts,)] = db.execute("SELECT attempts FROM jobs WHERE id = ?", (b_job(db, batch.id),)).fetchall()
    assert files == 1  # one output file, written once
    assert attempts == 2  # the killed attempt, then the one that finished


def recorded(tmp_path: Path, batch_id: str) -> int:
    with closing(sqlite3.connect(tmp_path / "k.db")) as db:
        [(n,)] = db.execute("SELECT COUNT(*) FROM batch_results WHERE batch_id = ?", (batch_id,)).fetchall()
    return int(n)


def b_job(db: sqlite3.Connection, batch_id: str) -> str:
    [(job_id,)] = db.execute("SELECT job_id FROM batches WHERE id = ?", (batch_id,)).fetchall()
    return str(job_id)


def test_an_async_call_runs_again_after_kill_9_and_its_webhook_lands_once(tmp_path: Path) -> None:
    receiver = Receiver(fail_first=0)
    try:
        with serve(tmp_path, "first") as (proc, url, log):
            key = bootstrap_key(proc, log)
            wait_healthy(proc, url, log)
            body = {"model": "slow", "messages": [{"role": "user", "content": "later"}], "webhook_url": receiver.url}
            headers = {"authorization": f"Bearer {key}", "prefer": "respond-async"}
            job = httpx.post(url + "/v1/chat/completions", json=body, headers=headers).json()
            status = job["status_url"].removeprefix(url)
            assert until(lambda: httpx.get(url + status, headers=headers).json()["status"] == "in_progress", 30)
            proc.send_signal(signal.SIGKILL)  # mid-call: its 4 s answer never came
            proc.wait()
        assert receiver.attempts == []

        with serve(tmp_path, "second") as (proc, url, log):
            wait_healthy(proc, url, log)
            assert until(lambda: len(receiver.accepted) == 1, 60), log.read_text()
            assert until(lambda: httpx.get(url + status, headers=headers).json()["status"] == "completed", 30)
            done = httpx.get(url + status, headers=headers).json()
    finally:
        receiver.close()
    [event] = receiver.accepted.values()
    assert event["data"]["id"] == job["id"] and event["data"]["response"] == done["response"]
    assert len(receiver.attempts) == 1 and receiver.attempts[0]["valid"]
    assert done["attempts"] == 2
