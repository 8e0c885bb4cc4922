"""One SIEM shipper per deployment: `keel serve --workers 2` with the audit stream on, a real receiver on
127.0.0.1. One worker holds the lease and ships (`/readyz` says `active`, the other `standby`; the metric
keel_audit_siem_active says the same); `kill -9` of the holder once it has shipped what there was; more
changes are made; the other worker takes the lease over and ships them. The receiver counts every seq:
each arrived exactly once, none is missing. On SQLite and PostgreSQL."""

from __future__ import annotations

import os
import signal
import subprocess
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import orjson
import pytest
import yaml

from keel.store.open import open_store
from tests.e2e.test_audit_siem import Receiver
from tests.e2e.test_serve_process import KEEL, free_port, wait_healthy
from tests.e2e.test_workers import config, pid_alive, wait_for

ADMIN = "admin-siem-lease-token"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver(0, [])
    try:
        yield r
    finally:
        r.close()


def seqs(r: Receiver) -> Counter[int]:
    return Counter(e["seq"] for _, body in list(r.requests) for e in orjson.loads(body)["entries"])


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgres":
        return str(request.getfixturevalue("pg_schema_url"))
    return f"sqlite:///{tmp_path / 'k.db'}"


def roles(url: str) -> dict[str, str]:
    """worker pid -> role, from /readyz answers (the shared socket hands each connection to either worker)."""
    out: dict[str, str] = {}
    for _ in range(40):
        r = httpx.get(url + "/readyz", timeout=10)  # a new connection each time
        out[r.headers["x-keel-worker"]] = r.json()["audit_siem"]["role"]
        if len(out) == 2:
            break
    return out


def create(url: str, name: str) -> bool:
    """One admin change on a new connection (a killed worker's is reset: then again; 409 if it went in)."""
    try:
        r = httpx.post(url + "/api/tenants", json={"name": name}, headers={"authorization": f"Bearer {ADMIN}"})
    except httpx.TransportError:
        return False
    assert r.status_code in (200, 201, 409), r.text
    return True


def test_one_worker_ships_and_another_takes_over_after_kill_9_with_nothing_twice_or_lost(
    tmp_path: Path, receiver: Receiver, storage: str
) -> None:
    port = free_port()
    siem = {"url": f"http://127.0.0.1:{receiver.port}/intake", "secret": "s" * 16, "batch": 4,
            "interval_s": 0.1, "timeout_s": 1, "lease_s": 2}  # fmt: skip
    raw = config(tmp_path, port, storage, admin_token=ADMIN, audit={"siem": siem})
    (tmp_path / "keel.yaml").write_text(yaml.safe_dump(raw))
    log = tmp_path / "serve.log"
    with log.open("wb") as err:
        proc = subprocess.Popen(
            [*KEEL, "serve", "--workers", "2"], cwd=tmp_path, stdin=subprocess.DEVNULL, stdout=err, stderr=err
        )
    url = f"http://127.0.0.1:{port}"
    stack = ExitStack()
    try:
        wait_healthy(proc, url, log, timeout=45)
        db = open_store(storage, migrate=False)  # migrated by `keel serve`
        stack.callback(db.close)

        def changes(prefix: str, n: int) -> int:
            for i in range(n):
                name = f"{prefix}{i}"
                wait_for(f"tenant {name} created", lambda name=name: create(url, name))
            return db.audit_head()[0]

        def shipped(head: int) -> bool:  # the receiver has every seq up to head and the cursor is there
            mark = db.audit_mark("siem")
            return set(seqs(receiver)) >= set(range(1, head + 1)) and mark is not None and int(mark) >= head

        head = changes("before", 9)
        wait_for("the first entries shipped", lambda: shipped(head), 45)
        held = wait_for("both workers answering /readyz", lambda: both if len(both := roles(url)) == 2 else None, 45)
        assert sorted(held.values()) == ["active", "standby"], held
        holder = int(next(pid for pid, role in held.items() if role == "active"))
        lease = db.get_lease("audit-siem")
        assert lease is not None and f":{holder}:" in lease.holder, (lease, held)
        metrics = httpx.get(url + "/metrics", headers={"authorization": f"Bearer {ADMIN}"}).text
        assert "keel_audit_siem_active" in metrics

        os.kill(holder, signal.SIGKILL)  # quiescent: everything so far is shipped and the cursor written
        wait_for("the holder gone", lambda: not pid_alive(holder))
        head = changes("after", 9)
        wait_for("the entries after the kill shipped by another worker", lambda: shipped(head), 60)
        taken = db.get_lease("audit-siem")
        assert taken is not None and f":{holder}:" not in taken.holder and taken.token > lease.token, (lease, taken)
        got = seqs(receiver)
        assert sorted(got) == list(range(1, max(got) + 1)), "a seq is missing"
        assert {s: n for s, n in got.items() if n > 1} == {}, "a seq was shipped twice"
    finally:
        stack.close()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
