"""An eval run survives its worker's death: `keel serve` is killed with SIGKILL mid-run; a second
`keel serve` on the same database takes the job back once its lease expires and scores only the items
that have no recorded result. The fake upstream counts the calls per item: none recorded before the kill
is called again."""

from __future__ import annotations

import collections
import signal
import sqlite3
import subprocess
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from keel.evals.runner import FLUSH_RESULTS
from keel.testing import FakeUpstream, Script
from tests.conftest import until
from tests.e2e.test_serve_process import KEEL, bootstrap_key, free_port, wait_healthy

ITEMS = 200
pytestmark = pytest.mark.timeout(180)  # keel processes started per test: slow on a loaded machine


def config(tmp_path: Path, port: int, up: FakeUpstream) -> dict[str, Any]:
    return {
        "server": {"port": port},
        "storage": {"url": f"sqlite:///{tmp_path / 'k.db'}"},
        "traces": {"spill_dir": str(tmp_path / "spill")},
        "providers": {"oai": {"type": "openai", "base_url": up.url + "/v1", "api_key": "sk-upstream"}},
        "models": {"gpt-4o-mini": {"targets": [{"provider": "oai", "model": "gpt-4o-mini"}]}},
        "jobs": {"lease_s": 2.0, "poll_s": 0.2},
    }


@contextmanager
def serve(tmp_path: Path, name: str, up: FakeUpstream) -> Iterator[tuple[subprocess.Popen[bytes], str, Path]]:
    port = free_port()
    (tmp_path / "keel.yaml").write_text(yaml.safe_dump(config(tmp_path, port, up)))
    log = tmp_path / f"{name}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([*KEEL, "serve"], cwd=tmp_path, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
    try:
        yield proc, f"http://127.0.0.1:{port}", log
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def recorded(tmp_path: Path, run_id: str) -> set[str]:
    with closing(sqlite3.connect(tmp_path / "k.db")) as db:
        return {r[0] for r in db.execute("SELECT item FROM eval_results WHERE run_id = ?", (run_id,))}


def test_a_run_resumes_after_kill_9_without_rerunning_finished_items(tmp_path: Path, up: FakeUpstream) -> None:
    up.script(*[Script(delay=0.03) for _ in range(ITEMS)])
    suite = {
        "prompts": ["item {{n}}"],
        "providers": ["gpt-4o-mini"],
        "tests": [
            {"vars": {"n": i}, "assert": [{"type": "contains", "value": "item {{n}}"}]} for i in range(1, ITEMS + 1)
        ],
    }
    with serve(tmp_path, "first", up) as (proc, url, log):
        key = bootstrap_key(proc, log)
        wait_healthy(proc, url, log, timeout=90)
        headers = {"authorization": f"Bearer {key}"}
        r = httpx.post(url + "/api/evals/runs", json={"suite": suite, "concurrency": 4}, headers=headers)
        assert r.status_code == 201, r.text
        run_id = r.json()["id"]
        assert until(lambda: len(recorded(tmp_path, run_id)) >= 40, 60), log.read_text()
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    at_kill = recorded(tmp_path, run_id)
    assert 40 <= len(at_kill) < ITEMS, "the worker died mid-run"

    with serve(tmp_path, "second", up) as (proc, url, log):
        wait_healthy(proc, url, log, timeout=90)

        def status() -> str:
            return str(httpx.get(url + f"/api/evals/runs/{run_id}", headers=headers).json()["status"])

        assert until(lambda: status() == "finished", 90), log.read_text()
        run = httpx.get(url + f"/api/evals/runs/{run_id}?results=1", headers=headers).json()

    assert len(run["results"]) == ITEMS and all(r["passed"] for r in run["results"])
    assert run["summary"]["pass_rate"] == 1.0
    calls = collections.Counter(r["json"]["messages"][-1]["content"] for r in up.requests)
    assert all(calls[f"item {key[1:]}"] == 1 for key in at_kill)  # finished before the kill: never run again
    assert set(calls) == {f"item {i}" for i in range(1, ITEMS + 1)}
    again = {c for c, n in calls.items() if n > 1}  # answered but not yet recorded, or in flight, at the kill
    assert len(again) <= 2 * FLUSH_RESULTS + 4  # a chunk being written, a chunk gathering, the calls in flight
    with closing(sqlite3.connect(tmp_path / "k.db")) as db:
        [(attempts,)] = db.execute("SELECT attempts FROM jobs WHERE kind = 'eval.run'").fetchall()
    assert attempts >= 2  # the killed attempt, then the one that finished (a loaded machine may lose a lease too)
