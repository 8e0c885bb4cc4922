"""The audit chain over every SQL backend (SQLite and PostgreSQL): appends from several processes keep one
chain; `verify` passes an untouched log and names the first bad entry after an edit, a deletion (inside
the chain or at its end) or a reorder made directly in the database; redaction happens before hashing;
`keel audit verify|export` as a real process."""

from __future__ import annotations

import multiprocessing
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import orjson
import pytest

from keel.audit.log import REDACTED, AuditLog
from keel.store.open import open_store
from keel.store.protocols import GENESIS, Store, entry_hash


@pytest.fixture
def store(storage_url: str) -> Iterator[Store]:
    opened = open_store(storage_url)
    try:
        yield opened
    finally:
        opened.close()


def tamper(url: str, sql: str) -> None:
    """Raw SQL (`;`-separated statements) on its own connection, committed: what someone with database
    access could do."""
    statements = [x for x in sql.split(";") if x.strip()]
    if url.startswith("sqlite:///"):
        with closing(sqlite3.connect(url.removeprefix("sqlite:///"))) as conn:
            for x in statements:
                conn.execute(x)
            conn.commit()
        return
    import psycopg

    with psycopg.connect(url) as pg:
        for x in statements:
            pg.execute(x.encode())


def fill(log: AuditLog, n: int) -> None:
    for i in range(n):
        log.append("admin", "tool.run", f"tool-{i}", tenant="t1", arguments={"i": i}, result={"ok": True})


def test_a_chain_links_each_entry_to_the_one_before(store: Store) -> None:
    log = AuditLog(store)
    fill(log, 3)
    entries = list(log.entries())
    assert [e.seq for e in entries] == [1, 2, 3]
    assert entries[0].prev_hash == GENESIS
    assert [e.prev_hash for e in entries[1:]] == [e.hash for e in entries[:-1]]
    assert all(entry_hash(e.seq, e, e.prev_hash) == e.hash for e in entries)
    assert store.audit_head() == (3, entries[-1].hash)
    assert log.verify().ok and log.verify().checked == 3


def test_arguments_are_redacted_before_they_are_hashed(store: Store) -> None:
    log = AuditLog(store)
    e = log.append(
        "key:k1", "secret.use", "stripe", arguments={"api_key": "sk-1", "q": "pay with tok-XYZ", "n": 3},
        secrets=["tok-XYZ"], source_ip="10.0.0.1",
    )  # fmt: skip
    detail = orjson.loads(e.detail)
    assert detail == {"arguments": {"api_key": REDACTED, "q": f"pay with {REDACTED}", "n": 3}}
    assert "sk-1" not in e.detail and "tok-XYZ" not in e.detail
    assert e.source_ip == "10.0.0.1"
    assert log.verify().ok


@pytest.mark.parametrize(
    ("sql", "bad", "word"),
    [
        ('UPDATE audit_log SET detail = \'{"arguments":{"i":99}}\' WHERE seq = 3', 3, "edited"),
        ("UPDATE audit_log SET actor = 'someone else' WHERE seq = 2", 2, "edited"),
        ("DELETE FROM audit_log WHERE seq = 3", 3, "deleted"),
        ("DELETE FROM audit_log WHERE seq = 5", 5, "deleted"),  # the newest: the head still names it
        # a reorder: entries 2 and 4 swap places (their seq numbers)
        (
            "UPDATE audit_log SET seq = -2 WHERE seq = 2; UPDATE audit_log SET seq = 2 WHERE seq = 4;"
            " UPDATE audit_log SET seq = 4 WHERE seq = -2",
            2,
            "reordered",
        ),
    ],
    ids=["edit-detail", "edit-actor", "delete-middle", "delete-last", "reorder"],
)
def test_verify_names_the_first_bad_entry(store: Store, storage_url: str, sql: str, bad: int, word: str) -> None:
    log = AuditLog(store)
    fill(log, 5)
    assert log.verify().ok
    tamper(storage_url, sql)
    verdict = log.verify()
    print(f"\n  tamper: {sql}\n  verify: {verdict.reason}")
    assert not verdict.ok
    assert verdict.bad_seq == bad
    assert word in (verdict.reason or "")
    assert verdict.checked == bad - 1


def _append_many(url: str, who: str, n: int) -> None:
    s = open_store(url)
    try:
        log = AuditLog(s)
        for i in range(n):
            log.append(who, "tool.run", str(i))
    finally:
        s.close()


def test_appends_from_several_processes_keep_one_chain(store: Store, storage_url: str) -> None:
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_append_many, args=(storage_url, f"p{i}", 25)) for i in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    log = AuditLog(store)
    entries = list(log.entries())
    assert len(entries) == 75
    assert {e.actor for e in entries} == {"p0", "p1", "p2"}
    verdict = log.verify()
    assert verdict.ok and verdict.checked == 75


def test_export_is_jsonl_with_the_chain_and_a_time_window(store: Store) -> None:
    log = AuditLog(store)
    for i in range(4):
        log.append("admin", "policy.change", f"t{i}", now=1000.0 + i)
    lines = [orjson.loads(line) for line in log.export(since=1001.0, until=1003.0)]
    assert [x["seq"] for x in lines] == [2, 3]
    first = lines[0]
    assert set(first) >= {"seq", "at", "actor", "action", "target", "detail", "prev_hash", "hash", "detail_json"}
    assert lines[1]["prev_hash"] == first["hash"]


KEEL = [sys.executable, "-m", "keel.cli.main"]


def test_the_cli_verifies_and_exports(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/k.db"
    (tmp_path / "keel.yaml").write_text(
        f"storage: {{url: '{url}'}}\nproviders: {{sim: {{type: simulated}}}}\n"
        "models: {m: {targets: [{provider: sim, model: simulated-1}]}}\n"
    )
    s = open_store(url)
    try:
        fill(AuditLog(s), 4)
    finally:
        s.close()
    env = {k: v for k, v in os.environ.items() if k != "KEEL_CONFIG"}

    def keel(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*KEEL, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)

    ok = keel("audit", "verify")
    assert ok.returncode == 0, ok.stderr
    assert "ok: 4 entries" in ok.stdout
    out = keel("audit", "export", "--since", "1h")
    lines = [orjson.loads(x) for x in out.stdout.splitlines()]
    assert [x["seq"] for x in lines[:-1]] == [1, 2, 3, 4]
    assert lines[-1]["keel_audit_export"]["count"] == 4
    tamper(url, "UPDATE audit_log SET target = 'other' WHERE seq = 2")
    bad = keel("audit", "verify")
    print(f"\n  keel audit verify after an edit: {bad.stdout.strip()}")
    assert bad.returncode == 1
    assert "entry 2 does not match its hash (edited)" in bad.stdout
