"""Operators see the job queue: `GET /api/jobs` (filters, one job, cancel, retry) behind the admin token,
depths, oldest ages and stuck jobs in /metrics, `keel jobs list|show|cancel|retry` on the same store; and
the gateway's embedded worker pool runs a job enqueued in it. Over SQLite and PostgreSQL."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from keel.gateway.capability import Pipeline
from keel.store.protocols import JobSpec
from keel.testing import FakeUpstream

from ..conftest import ADMIN, Gateway, base_config

KEEL = [sys.executable, "-m", "keel.cli.main"]
AUTH = {"Authorization": f"Bearer {ADMIN}"}


@pytest.fixture
def gw(make_gateway: Any, up: FakeUpstream, storage_url: str, tmp_path: Path) -> Gateway:
    raw = base_config(up, storage_url, tmp_path)
    raw["jobs"] = {"lease_s": 1.0, "poll_s": 0.05, "stuck_after": 2, "plugins": ["tests.e2e.jobs_plugin:build"]}
    return make_gateway(raw)  # type: ignore[no-any-return]


def job_metrics(gw: Gateway) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(gw.url + "/metrics").text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name.startswith("keel_jobs")
    }


def make_stuck(gw: Gateway) -> str:
    """A job whose lease expired twice with no progress (its worker claims it, then vanishes)."""
    store = gw.runtime.store
    (job,) = store.enqueue_jobs([JobSpec("orphan", tenant="t1", priority=100)], time.time())
    now = time.time()
    for i in range(2):
        store.claim_jobs(worker="gone", queues=["default"], kinds=["orphan"], limit=1, lease_s=0.5, now=now + i)
        store.recover_jobs(now + i + 0.9)
    return job.id


def keel(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*KEEL, *args], cwd=tmp, capture_output=True, text=True, timeout=60)


def keel_side_by_side(tmp: Path, *commands: tuple[str, ...]) -> list[subprocess.CompletedProcess[str]]:
    """Commands that change nothing, run at once (each is a fresh interpreter: a second or more of imports)."""
    pipe = subprocess.PIPE
    procs = [subprocess.Popen([*KEEL, *args], cwd=tmp, stdout=pipe, stderr=pipe, text=True) for args in commands]
    done = []
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        done.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    return done


def test_admin_api_lists_shows_cancels_and_retries_jobs(gw: Gateway) -> None:
    store = gw.runtime.store
    a, b = store.enqueue_jobs([JobSpec("orphan", {"n": 1}, tenant="t1"), JobSpec("other", tenant="t2")], time.time())
    stuck = make_stuck(gw)
    with httpx.Client(base_url=gw.url, headers=AUTH) as c:
        assert httpx.get(gw.url + "/api/jobs").status_code == 401
        listed = c.get("/api/jobs", params={"tenant": "t1"}).json()["data"]
        assert [j["id"] for j in listed] == [stuck, a.id]
        assert listed[0]["state"] == "stuck" and listed[0]["lease_expiries"] == 2
        assert [j["id"] for j in c.get("/api/jobs", params={"state": "stuck"}).json()["data"]] == [stuck]
        assert [j["id"] for j in c.get("/api/jobs", params={"kind": "other"}).json()["data"]] == [b.id]
        bad = c.get("/api/jobs", params={"state": "lost"})
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "state"

        shown = c.get(f"/api/jobs/{a.id}").json()
        assert (shown["state"], shown["payload"], shown["kind"]) == ("queued", {"n": 1}, "orphan")
        assert c.get("/api/jobs/job_nope").status_code == 404
        assert c.post(f"/api/jobs/{a.id}/retry").status_code == 400  # queued: nothing to retry
        assert c.post(f"/api/jobs/{a.id}/cancel").json()["state"] == "cancelled"
        again = c.post(f"/api/jobs/{a.id}/retry").json()
        assert (again["state"], again["attempts"]) == ("queued", 0)


def test_metrics_show_depth_oldest_age_and_stuck_jobs(gw: Gateway) -> None:
    store = gw.runtime.store
    store.enqueue_jobs([JobSpec("orphan", run_at=time.time() - 30), JobSpec("orphan", queue="bulk")], time.time())
    make_stuck(gw)

    m = job_metrics(gw)

    default_queued = (("queue", "default"), ("state", "queued"))
    assert m["keel_jobs", default_queued] == 2
    assert m["keel_jobs", (("queue", "bulk"), ("state", "queued"))] == 1
    assert m["keel_jobs_oldest_age_seconds", default_queued] >= 30
    assert m["keel_jobs_stuck", default_queued] == 1
    assert m["keel_jobs_store_up", ()] == 1


def test_the_gateways_embedded_pool_runs_jobs(gw: Gateway, tmp_path: Path) -> None:
    effects = tmp_path / "effects.db"
    queue = gw.runtime.jobs
    assert queue is not None
    (job,) = gw.runtime.store.enqueue_jobs([JobSpec("test.effect", {"db": str(effects)})], time.time())

    done = wait_finished(gw, job.id)

    assert (done["state"], done["attempts"]) == ("succeeded", 1)
    assert gw.runtime.get(Pipeline).handler is gw.runtime.pipeline  # what a handler calls the gateway through
    m = job_metrics(gw)
    assert m["keel_jobs_attempts_total", (("outcome", "succeeded"),)] == 1


def wait_finished(gw: Gateway, job_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        view: dict[str, Any] = httpx.get(f"{gw.url}/api/jobs/{job_id}", headers=AUTH).json()
        if view["state"] in ("succeeded", "dead", "cancelled"):
            return view
        time.sleep(0.02)
    raise TimeoutError(f"job {job_id} did not finish")


def test_cli_lists_shows_cancels_and_retries_jobs(gw: Gateway, tmp_path: Path) -> None:
    store = gw.runtime.store
    (a,) = store.enqueue_jobs([JobSpec("orphan", {"n": 1}, tenant="t1")], time.time())
    stuck = make_stuck(gw)

    listed, stuck_only, table, shown, missing = keel_side_by_side(
        tmp_path,
        ("jobs", "list", "--json"),
        ("jobs", "list", "--state", "stuck", "--json"),
        ("jobs", "list", "--tenant", "t1"),
        ("jobs", "show", a.id),
        ("jobs", "show", "job_nope"),
    )
    assert listed.returncode == 0, listed.stderr
    assert [(j["id"], j["state"]) for j in json.loads(listed.stdout)] == [(stuck, "stuck"), (a.id, "queued")]
    assert [j["id"] for j in json.loads(stuck_only.stdout)] == [stuck]
    assert "STATE" in table.stdout and "stuck" in table.stdout
    assert shown.returncode == 0 and "orphan" in shown.stdout
    assert missing.returncode == 1 and "no job job_nope" in missing.stderr

    assert json.loads(keel(tmp_path, "jobs", "cancel", a.id, "--json").stdout)["state"] == "cancelled"
    assert json.loads(keel(tmp_path, "jobs", "retry", a.id, "--json").stdout)["state"] == "queued"
    refused = keel(tmp_path, "jobs", "retry", a.id)
    assert refused.returncode == 1 and "only dead or cancelled" in refused.stderr


def test_dashboard_jobs_page_shows_depths_and_stuck_jobs_escaped(gw: Gateway) -> None:
    store = gw.runtime.store
    (hostile,) = store.enqueue_jobs([JobSpec("<script>x</script>", tenant="t1")], time.time())
    stuck = make_stuck(gw)
    with httpx.Client(base_url=gw.url) as c:
        assert c.get("/ui/jobs").status_code == 303  # a session first
        assert c.post("/ui/login", data={"token": gw.admin, "next": "/ui/jobs"}).status_code == 303
        page = c.get("/ui/jobs").text
        only_stuck = c.get("/ui/jobs", params={"state": "stuck"}).text
        bad = c.get("/ui/jobs", params={"state": "lost"})

    assert 'data-queue="default" data-state="queued"' in page and "1 stuck" in page
    assert f'data-job="{hostile.id}"' in page and "<script>x" not in page and "&lt;script&gt;x" in page
    assert f'data-job="{stuck}"' in only_stuck and hostile.id not in only_stuck
    assert '<td class="status-error">stuck</td>' in only_stuck
    assert bad.status_code == 400 and "state must be one of" in bad.text
