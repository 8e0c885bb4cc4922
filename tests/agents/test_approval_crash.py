"""Approval durability with `keel serve` as a real process: the gateway is killed (kill -9) while a run waits
for approval, the call is approved twice through `keel approvals approve` while no gateway runs, and a new
gateway resumes the run: the tool's side effect (a counter in a test HTTP service) happens once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import yaml

from keel.keys.auth import issue_key
from keel.store.open import open_store
from keel.store.protocols import Store
from keel.testing import FakeUpstream
from keel.testing.fake_upstream import Script

from .test_runs import MASTER, completion, until
from .tool_service import tool_service

KEEL = [sys.executable, "-m", "keel.cli.main"]
ROOT = Path(__file__).resolve().parents[2]
ADMIN = "admin-crash-test"


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def env() -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if k != "KEEL_CONFIG"}
    return {**base, "KEEL_MASTER_KEY": MASTER, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}


def healthy(url: str) -> bool:
    try:
        return httpx.get(url + "/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@contextmanager
def serve(tmp: Path, name: str, url: str) -> Iterator[subprocess.Popen[bytes]]:
    log = tmp / f"{name}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([*KEEL, "serve"], cwd=tmp, env=env(), stdin=subprocess.DEVNULL, stdout=out, stderr=out)
    try:
        until(lambda: healthy(url) or proc.poll() is not None, 30)
        assert proc.poll() is None, log.read_text()
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def configured(up: FakeUpstream, storage_url: str, tmp: Path) -> tuple[Store, str, str]:
    """keel.yaml in `tmp` for a `keel serve` on a free port; the store, a key of tenant t1, and the URL."""
    port = free_port()
    config = {
        "admin_token": ADMIN,
        "server": {"host": "127.0.0.1", "port": port},
        "storage": {"url": storage_url},
        "traces": {"spill_dir": str(tmp / "spill")},
        "providers": {"oai": {"type": "openai", "base_url": up.url + "/v1", "api_key": "sk-up"}},
        "models": {"gpt-4o-mini": {"targets": [{"provider": "oai", "model": "gpt-4o-mini"}]}},
    }
    (tmp / "keel.yaml").write_text(yaml.safe_dump(config))
    store = open_store(storage_url)
    store.create_tenant("t1")
    return store, issue_key(store, "t1", name="crash").key, f"http://127.0.0.1:{port}"


def test_kill_9_between_approval_and_execution_and_a_double_approval_pay_once(
    up: FakeUpstream, storage_url: str, tmp_path: Path
) -> None:
    store, key, url = configured(up, storage_url, tmp_path)
    with tool_service() as svc:
        up.script(Script(body_override=completion(("call_p", "pay", {"amount": 500}))), Script(text="Paid once."))
        with serve(tmp_path, "first", url) as first:
            spec = {
                "tenant": "t1", "name": "pay", "kind": "http", "http": {"method": "POST", "url": svc.url + "/pay"},
                "parameters": {"type": "object", "properties": {"amount": {"type": "number"}}},
                "policy": {"default": "approve"},
            }  # fmt: skip
            r = httpx.post(url + "/api/agents/tools", json=spec, headers={"authorization": f"Bearer {ADMIN}"})
            assert r.status_code == 201, r.text
            r = httpx.post(url + "/api/agents/runs", json={"model": "gpt-4o-mini", "input": "pay", "tools": ["pay"]},
                           headers={"authorization": f"Bearer {key}"}, timeout=30)  # fmt: skip
            run = r.json()
            assert run["state"] == "waiting", run
            (call_id,) = run["pending"]
            os.kill(first.pid, signal.SIGKILL)
            first.wait()

        approvals = [
            subprocess.run(
                [*KEEL, "approvals", "approve", call_id, "--by", who],
                cwd=tmp_path,
                env=env(),
                capture_output=True,
                text=True,
                timeout=60,
            )
            for who in ("alice", "bob")
        ]
        print(f"\n  first approval:  {approvals[0].stdout.strip()}\n  second approval: {approvals[1].stdout.strip()}")
        assert [a.returncode for a in approvals] == [0, 0], [a.stderr for a in approvals]
        assert approvals[0].stdout.startswith("approved")
        assert approvals[1].stdout.startswith("unchanged") and "cli:alice" in approvals[1].stdout
        assert svc.payments == []  # no gateway ran it yet

        with serve(tmp_path, "second", url):
            done = until(
                lambda: (r := store.get_run(run["id"])) is not None and r.state in ("done", "failed") and r, 30
            )
        store.close()
        assert done.state == "done", done.data.get("error")
        assert done.data["answer"] == "Paid once."
        assert len(svc.payments) == 1, svc.payments
        assert svc.payments[0]["key"] == call_id
