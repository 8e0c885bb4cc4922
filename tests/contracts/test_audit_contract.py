"""The audit chain over every SQL backend (SQLite and PostgreSQL): appends from several processes keep one
chain; `verify` passes an untouched log and names the first bad entry after an edit, a deletion (inside
the chain or at its end) or a reorder made directly in the database; redaction happens before hashing;
`keel audit verify|export` as a real process."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import sqlite3
import subprocess
import sys
import threading
import time
from contextlib import closing
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

import orjson
import pytest

from keel.audit.group import GroupCommit
from keel.audit.log import REDACTED, AuditLog, Checkpoint, _draft
from keel.store.open import open_store
from keel.store.protocols import GENESIS, CallRow, Store, entry_hash
from keel.store.protocols.agents import CallClaim, CallOutcome
from keel.store.protocols.audit import AuditEntry
from keel.store.sql.dialect import NO_FLUSH


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


def test_concurrent_records_commit_in_groups_as_one_chain(store: Store) -> None:
    """40 callers at once through the group-commit writer, between plain appends: every caller gets its own
    committed entry, numbered without gaps, and the chain verifies."""
    log = AuditLog(store)
    fill(log, 2)

    async def many() -> list[Any]:
        return await asyncio.gather(
            *(log.record("key:k", "tool.run", f"t{i}", tenant="t1", arguments={"i": i}) for i in range(40))
        )

    try:
        got = asyncio.run(many())
        fill(log, 1)
        assert sorted(e.seq for e in got) == list(range(3, 43))
        stored = {e.seq: e for e in log.entries()}
        assert all(stored[e.seq] == e for e in got)  # what each caller was told is what was committed
        assert {e.target for e in got} == {f"t{i}" for i in range(40)}
        assert log.verify().ok and log.verify().checked == 43
        several = store.append_audits([])
        assert several == []
    finally:
        log.close()


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


def test_verify_new_walks_only_the_entries_after_a_checkpoint_and_still_catches_their_edits(
    store: Store, storage_url: str
) -> None:
    log = AuditLog(store)
    fill(log, 4)
    verdict, at = log.verify_new(None)
    assert verdict.ok and verdict.checked == 4 and at.seq == 4 and at.hash == store.audit_head()[1]
    assert log.verify_new(at) == (verdict, at)  # nothing new: nothing walked, same head
    fill(log, 3)
    verdict, later = log.verify_new(at)
    assert verdict.ok and verdict.checked == 7 and later.seq == 7
    fill(log, 2)
    tamper(storage_url, "UPDATE audit_log SET actor = 'someone else' WHERE seq = 8")
    verdict, kept = log.verify_new(later)
    assert (verdict.ok, verdict.bad_seq, verdict.checked, kept) == (False, 8, 7, later), verdict
    tamper(storage_url, "UPDATE audit_log SET hash = 'x' WHERE seq = 7")  # the checkpoint's own entry
    verdict, _ = log.verify_new(later)
    assert (verdict.ok, verdict.bad_seq) == (False, 7) and "since it was verified" in (verdict.reason or "")
    # an edit before the checkpoint is not walked again incrementally; the whole chain finds it
    tamper(storage_url, "UPDATE audit_log SET actor = 'someone else' WHERE seq = 2")
    assert log.verify_new(Checkpoint(9, store.list_audit(after_seq=8, limit=1)[0].hash))[0].ok
    assert log.verify().bad_seq == 2


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


def test_erasing_a_subject_keeps_the_chain_verifiable_and_still_catches_edits(store: Store, storage_url: str) -> None:
    log = AuditLog(store)
    log.append("user:alice", "tool.run", "pay", tenant="acme", arguments={"who": "alice", "n": 1}, source_ip="10.0.0.9")
    log.append("admin", "key.create", "alice", tenant="acme", after={"user": "alice"})
    log.append("user:bob", "tool.run", "pay", tenant="acme", arguments={"who": "bob"})
    log.append("admin", "tenant.create", "globex", after={"name": "globex"})
    erased = log.erase("acme", "alice")
    assert (erased.entries, erased.v1) == (2, [])
    entries = {e.seq: e for e in log.entries()}
    assert (entries[1].actor, entries[1].target, entries[1].detail, entries[1].source_ip) == (
        "[erased]", None, '{"erased":true}', None,
    )  # fmt: skip
    assert entries[1].tenant == "acme" and entries[1].action == "tool.run"  # the tenant stays: a user was erased
    assert "alice" not in str(entries[2]) and "alice" not in (entries[1].salts or "")
    assert entries[3].actor == "user:bob" and log.verify().ok
    assert log.erase("acme", "alice").entries == 0  # idempotent
    assert log.erase("acme").entries == 3 and log.verify().ok  # the whole tenant: bob's entry and the tenant field
    assert all(e.tenant is None for e in log.entries() if e.seq <= 3)
    assert next(e for e in log.entries() if e.seq == 4).target == "globex"
    for sql in (
        "UPDATE audit_log SET action = 'tool.denied' WHERE seq = 1",  # a field that was never erased
        "UPDATE audit_log SET actor = 'mallory' WHERE seq = 2",  # an erased field given a value
        'UPDATE audit_log SET digests = \'{"actor":"00"}\' WHERE seq = 3',  # a digest replaced
    ):
        seq = int(sql.rsplit(" ", 1)[1])
        before = next(e for e in log.entries() if e.seq == seq)
        tamper(storage_url, sql)
        verdict = log.verify()
        assert (verdict.ok, verdict.bad_seq) == (False, seq), sql
        _restore(storage_url, before)
        assert log.verify().ok


def _restore(url: str, e: Any) -> None:
    """Put an entry back as it was (the test's own repair of its tampering)."""
    cols = {"action": e.action, "actor": e.actor, "digests": e.digests}
    sets = ", ".join(f"{c} = '{v}'" for c, v in cols.items())
    tamper(url, f"UPDATE audit_log SET {sets} WHERE seq = {e.seq}")


def test_entries_hashed_the_old_way_still_verify_and_erase_only_with_the_purge_entry_listing_them(
    store: Store, storage_url: str
) -> None:
    import hashlib

    prev = GENESIS
    for seq, actor in ((1, "user:alice"), (2, "admin")):  # as appended before scheme 2: every field hashed
        body = [seq, 1000.0 + seq, "acme", actor, "tool.run", "alice", '{"who":"alice"}', None, prev]
        digest = hashlib.sha256(orjson.dumps(body)).hexdigest()
        tamper(storage_url, f"INSERT INTO audit_log (seq, at, tenant, actor, action, target, detail, source_ip, prev_hash, hash)"
               f" VALUES ({seq}, {1000.0 + seq}, 'acme', '{actor}', 'tool.run', 'alice', '{{\"who\":\"alice\"}}', NULL, '{prev}', '{digest}');"
               f" UPDATE audit_head SET seq = {seq}, hash = '{digest}' WHERE chain = 'main'")  # fmt: skip
        prev = digest
    log = AuditLog(store)
    assert log.verify().ok and log.verify().checked == 2
    erased = log.erase("acme", "alice")
    assert erased.v1 == [1, 2]
    unlisted = log.verify()
    assert (unlisted.ok, unlisted.bad_seq) == (False, 1) and "no purge entry lists it" in (unlisted.reason or "")
    log.append("admin", "user.purge", "alice", tenant="acme", result={"erased_v1": erased.v1})
    assert log.verify().ok and log.verify().checked == 3


def running_call(store: Store, call_id: str) -> None:
    now = time.time()
    store.add_call(CallRow(call_id, "run-1", "t1", "pay", {"amount": 1}, "running", None, "policy", now + 60, now, now))


def test_a_tool_result_and_its_call_outcome_commit_in_one_transaction(store: Store, storage_url: str) -> None:
    """`tool.result` carries the call's move from running: both land, and a call no longer running (an earlier
    outcome) is left as it is. Another appender moving the chain's head in between (a second process: this
    store's remembered head is stale) changes nothing: the entries still chain, the outcome still lands."""
    log = AuditLog(store)
    for call_id in ("c1", "c2", "c3"):
        running_call(store, call_id)
    try:
        fill(log, 1)

        async def settle(call_id: str, state: Literal["done", "failed"], durable: bool) -> None:
            await log.record("key:k", "tool.result", "pay", tenant="t1", result={"call": call_id}, durable=durable,
                             outcome=CallOutcome(call_id, state, f"{state} {call_id}", time.time()))  # fmt: skip

        asyncio.run(settle("c1", "done", True))
        other = open_store(storage_url)
        try:
            fill(AuditLog(other), 2)
        finally:
            other.close()
        asyncio.run(settle("c2", "failed", False))
        asyncio.run(settle("c1", "failed", True))  # c1 is done already: not moved again
        store.move_call("c3", ("running",), "done", now=time.time(), result="by hand")
        asyncio.run(settle("c3", "failed", False))
    finally:
        log.close()
    calls = {c.id: (c.state, c.result) for c in store.list_calls(tenant="t1")}
    assert calls == {"c1": ("done", "done c1"), "c2": ("failed", "failed c2"), "c3": ("done", "by hand")}
    actions = [e.action for e in log.entries()]
    assert actions == ["tool.run", "tool.result", "tool.run", "tool.run", "tool.result", "tool.result", "tool.result"]
    assert log.verify().ok and log.verify().checked == 7


def test_a_claimed_entry_is_written_only_if_its_call_moves_to_running(store: Store, storage_url: str) -> None:
    """`tool.run` with its claim: the entry goes in only with the call's move to running. In one batch a call
    claimed twice is moved once (one entry), a call not in the claim's source state is not moved (no entry),
    and the batch's other entries still chain; two callers claiming one call: one wins; another appender
    moving the head in between (a second process) changes nothing of that."""
    log = AuditLog(store)
    now = time.time()
    for call_id in ("a", "b"):
        store.add_call(CallRow(call_id, "run-1", "t1", "pay", {}, "allowed", None, "policy", now + 60, now, now))

    def draft(action: str) -> Any:
        return _draft("key:k", action, "pay", "t1", None, None, None, {"call": action}, None, (), None)

    try:
        fill(log, 1)  # the store now knows the head (PostgreSQL: the one-statement path is tried first)
        claims = [CallClaim("a", ("allowed",), now), CallClaim("a", ("allowed",), now),
                  CallClaim("b", ("approved",), now), None]  # fmt: skip
        got = store.append_audits([draft("run a"), draft("run a again"), draft("run b"), draft("note")], claims=claims)
        assert [(e.seq, orjson.loads(e.detail)["result"]["call"]) if e else None for e in got] == [
            (2, "run a"), None, None, (3, "note")
        ]  # fmt: skip
        assert {c.id: c.state for c in store.list_calls(tenant="t1")} == {"a": "running", "b": "allowed"}
        other = open_store(storage_url)
        try:
            fill(AuditLog(other), 1)
        finally:
            other.close()

        async def race() -> list[Any]:
            claim = CallClaim("b", ("allowed",), time.time())
            return list(await asyncio.gather(*(log.claim(claim, "key:k", "tool.run", "pay", tenant="t1",
                                                         result={"call": "b", "by": i}) for i in range(2))))  # fmt: skip

        won = [e for e in asyncio.run(race()) if e is not None]
        assert len(won) == 1 and won[0].seq == 5
        assert log.append("admin", "note").seq == 6
        # a call that needed no approval is stored by its claim (as running); a second claim of it is lost,
        # as is a stored row's claim from `allowed` once it runs
        new = CallRow("c", "run-1", "t1", "pay", {"amount": 2}, "allowed", None, "policy", now + 60, now, now)
        got = store.append_audits([draft("run c"), draft("run c again")],
                                  claims=[CallClaim("c", ("allowed",), now, new)] * 2)  # fmt: skip
        assert [e.seq if e else None for e in got] == [7, None]
        stored = store.get_call("c")
        assert stored is not None and (stored.state, stored.arguments) == ("running", {"amount": 2})
        store.add_call(replace(new, id="d"))  # stored as allowed (an approval-free call of an older process)
        got = store.append_audits([draft("run d")], claims=[CallClaim("d", ("allowed",), now, replace(new, id="d"))])
        assert [e.seq if e else None for e in got] == [8]
    finally:
        log.close()
    states = {c.id: c.state for c in store.list_calls(tenant="t1")}
    assert states == {"a": "running", "b": "running", "c": "running", "d": "running"}
    actions = [e.action for e in log.entries()]
    assert actions == ["tool.run", "run a", "note", "tool.run", "tool.run", "note", "run c", "run d"]
    assert log.verify().ok and log.verify().checked == 8


class Watched:
    """The real store, noting each group commit's `durable`; its first commit waits until released."""

    def __init__(self, store: Store) -> None:
        self.store, self.durable = store, list[bool]()
        self.entered, self.release = threading.Event(), threading.Event()

    def append_audits(
        self, drafts: Any, *, durable: bool = True, outcomes: Any = (), claims: Any = ()
    ) -> list[AuditEntry | None]:
        if not self.entered.is_set():
            self.entered.set()
            assert self.release.wait(30)
        self.durable.append(durable)
        return self.store.append_audits(drafts, durable=durable, outcomes=outcomes, claims=claims)


def test_a_group_skips_the_flush_wait_only_when_no_entry_in_it_asked_for_the_flush(store: Store) -> None:
    """`durable=False` entries may share a commit that does not wait for the flush; one durable entry in a
    batch makes the whole commit wait (its caller is told only about what is on disk)."""
    watched = Watched(store)
    group = GroupCommit(watched)  # type: ignore[arg-type]

    def draft(action: str) -> Any:
        return _draft("key:k", action, None, "t1", None, None, None, None, None, (), None)

    try:
        first = group.submit(draft("a"), durable=False)
        assert watched.entered.wait(30)  # the writer holds `a` alone, in the store
        queued = [group.submit(draft("b"), durable=False), group.submit(draft("c"))]
        watched.release.set()
        for f in (first, *queued):
            f.result(30)
        group.submit(draft("d"), durable=False).result(30)
    finally:
        group.close()
    assert watched.durable == [False, True, False]
    assert [e.action for e in AuditLog(store).entries()] == ["a", "b", "c", "d"]
    assert AuditLog(store).verify().ok


@pytest.mark.postgres
def test_without_the_flush_wait_means_for_that_transaction_only(pg_schema_url: str) -> None:
    """PostgreSQL: `durable=False` turns synchronous_commit off for its own transaction (SET LOCAL) or its own
    autocommitted statement (NO_FLUSH); the pooled connection is back to the server's setting after."""
    store = open_store(pg_schema_url)
    db = store._db  # type: ignore[attr-defined]
    setting = "SELECT current_setting('synchronous_commit')"
    try:
        with db.transaction(durable=False) as s:
            assert s.fetchone(setting) == ("off",)
        with db.transaction() as s:
            assert s.fetchone(setting) == ("on",)
        with db.session() as s:
            assert s.fetchone(f"{setting} FROM {NO_FLUSH}") == ("off",)
            assert s.fetchone(setting) == ("on",)
    finally:
        store.close()
