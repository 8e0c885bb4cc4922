"""Deletion you can prove, on SQLite and on the real PostgreSQL: seed a tenant, and users within another
tenant, with data in every capability over the real gateway and its APIs; purge the tenant (admin API) and
one user (`keel users purge`, a separate process); then scan every table of every database Keel writes
(enumerated from sqlite_master / information_schema: a store added later without a purger fails here),
every text column, and every blob file, for the subjects' markers (the tenant name, the user ids, unique
strings planted in the content). Nothing may be found but the audit entries recording the deletions; the
other tenant's and the other user's data is untouched; the receipt's counts equal what the stores held;
the audit chain still verifies.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import httpx
import pytest

from keel.audit.log import AuditLog
from keel.store.open import open_store
from keel.store.protocols import JobQuery
from keel.store.sql.erase import TENANT_SCOPE
from keel.tenancy.deletion import PURGERS, Receipt, Stores, Subject, _Run, purge
from keel.testing import FakeUpstream
from keel.testing.fake_upstream import Script
from tests.agents.test_runs import completion
from tests.agents.tool_service import ToolService, tool_service
from tests.conftest import Gateway, base_config, until
from tests.e2e.test_cache_e2e import settle
from tests.e2e.test_cli import keel

GONE, KEEP = "zorgcorp", "keepcorp"  # the tenant purged whole; the tenant one user of is purged
ANN, ULY, VERA = "annika9", "ulysses7", "vera5x"  # users: of GONE; of KEEP (purged); of KEEP (kept)
MARK = {GONE: "MARKzorg", ANN: "MARKannika", ULY: "MARKulysses", VERA: "MARKvera", KEEP: "MARKkeep"}
MASTER = "22" * 32


@pytest.fixture
def service() -> Iterator[ToolService]:
    with tool_service() as svc:
        yield svc


def config(up: FakeUpstream, storage_url: str, tmp: Path) -> dict[str, Any]:
    raw = base_config(up, storage_url, tmp)
    raw["cache"] = {
        "enabled": True,
        "ttl_s": 600,
        "url": f"sqlite:///{tmp}/cache.db",
        "semantic": {"enabled": True, "threshold": 0.95, "vectors_url": f"sqlite:///{tmp}/vectors.db"},
    }
    raw["traces"] |= {"blob_threshold_bytes": 2048, "blobs_url": f"file://{tmp}/blobs"}
    raw["online_evals"] = {"flush_ms": 20}
    return raw


class Seeder:
    """Drives the gateway's HTTP APIs as clients and admins do."""

    def __init__(self, gw: Gateway, up: FakeUpstream, svc: ToolService, tmp: Path) -> None:
        self.gw, self.up, self.svc, self.tmp = gw, up, svc, tmp
        self.admin = httpx.Client(base_url=gw.url, headers={"authorization": f"Bearer {gw.admin}"}, timeout=60)

    def keyed(self, key: str) -> httpx.Client:
        return httpx.Client(base_url=self.gw.url, headers={"authorization": f"Bearer {key}"}, timeout=60)

    def ok(self, r: httpx.Response, *codes: int) -> Any:
        assert r.status_code in (codes or (200, 201)), r.text
        return r.json()

    def tenant(self, name: str) -> None:
        self.ok(self.admin.post("/api/tenants", json={"name": name}))
        self.ok(self.admin.put(f"/api/limits/tenant/{name}", json={"limits": {"rpm": 10_000}}))

    def key(self, tenant: str, user: str) -> tuple[str, str]:
        body = self.ok(self.admin.post("/api/keys", json={"tenant": tenant, "name": f"k-{user}", "user": user}))
        self.ok(self.admin.put(f"/api/limits/key/{body['id']}", json={"limits": {"rpm": 10_000}}))
        return body["key"], body["id"]

    def user_data(self, tenant: str, user: str) -> None:
        """What one user makes: chat calls (traces, a payload blob, cache entries, a hit), feedback on one,
        a stored response, an async call (a job), a batch (files, results, a job), an eval run."""
        mark = MARK[user]
        key, key_id = self.key(tenant, user)
        with self.keyed(key) as c:
            ids = []
            for q in (f"When does {mark} ship?", f"{mark} long " * 300, f"When does {mark} ship?"):
                session = {"x-keel-session": f"s-{mark}"} if "long" in q else {}  # a session's calls skip the cache
                r = c.post("/v1/chat/completions", json={"model": "gpt-4o-mini", "user": user, "temperature": 0,
                           "messages": [{"role": "user", "content": q}]}, headers=session)  # fmt: skip
                self.ok(r)
                ids.append(r.headers["x-keel-trace-id"])
                settle(self.gw)
            assert r.headers["x-keel-cache"] == "hit"
            self.ok(
                c.post("/api/feedback", json={"trace_id": ids[0], "score": 1, "comment": f"{mark} good", "user": user})
            )
            self.ok(c.post("/v1/responses", json={"model": "gpt-4o-mini", "input": f"{mark} remember", "user": user}))
            job = self.ok(c.post("/v1/chat/completions", json={"model": "gpt-4o-mini", "user": user, "messages": [
                {"role": "user", "content": f"{mark} later"}]}, headers={"prefer": "respond-async"}), 202)  # fmt: skip
            assert until(lambda: c.get(f"/v1/jobs/{job['id']}").json()["status"] == "completed")
            line = {"custom_id": "a", "method": "POST", "url": "/v1/chat/completions",
                    "body": {"model": "gpt-4o-mini", "user": user, "messages": [{"role": "user", "content": f"{mark} batch"}]}}  # fmt: skip
            f = self.ok(
                c.post("/v1/files", files={"file": ("in.jsonl", json.dumps(line).encode())}, data={"purpose": "batch"})
            )
            b = self.ok(c.post("/v1/batches", json={"input_file_id": f["id"], "endpoint": "/v1/chat/completions",
                                                    "completion_window": "24h"}))  # fmt: skip
            assert until(lambda: c.get(f"/v1/batches/{b['id']}").json()["status"] == "completed", 60)
            suite = {"prompts": ["{{q}}"], "providers": ["gpt-4o-mini"],
                     "tests": [{"vars": {"q": f"{mark} eval"}, "assert": [{"type": "contains", "value": mark}]}]}  # fmt: skip
            run = self.ok(c.post("/api/evals/runs", json={"suite": suite}), 201)
            assert until(lambda: c.get(f"/api/evals/runs/{run['id']}").json()["status"] == "finished", 60)
        assert key_id

    def tenant_data(self, tenant: str) -> None:
        """What a tenant owns: a prompt used in a call, a dataset, an online score, a RAG collection with a
        document, an agent tool and secret, an agent run waiting on an approval."""
        mark = MARK[tenant]
        key, _ = self.key(tenant, f"svc-{mark}")
        prompt = {"tenant": tenant, "name": f"p-{mark}", "alias": "gpt-4o-mini", "label": "production",
                  "messages": [{"role": "user", "content": mark + " {{x}}"}]}  # fmt: skip
        self.ok(self.admin.post("/api/prompts", json=prompt), 201)
        feature = f"feat-{len(tenant)}{tenant[0]}"  # online rules are global: no subject's name in them
        rule = {"name": f"rule-{feature}", "rate": 1.0, "feature": feature, "delay_s": 0,
                "scorers": [{"type": "icontains", "value": "echo", "metric": "m"}]}  # fmt: skip
        self.ok(self.admin.post("/api/evals/online-rules", json=rule))
        with self.keyed(key) as c:
            r = c.post("/v1/chat/completions", json={"model": "prompt", "messages": [],
                       "prompt": {"id": f"p-{mark}", "variables": {"x": "hi"}}}, headers={"x-keel-feature": feature})  # fmt: skip
            self.ok(r)
        assert until(
            lambda: self.admin.get("/api/evals/online-scores", params={"since": "1h", "tenant": tenant}).json()["data"]
        )
        items = self.tmp / f"{tenant}.jsonl"
        items.write_text(json.dumps({"input": {"vars": {"q": f"{mark} item"}}}) + "\n")
        keel(
            self.tmp,
            "-c",
            str(self.tmp / "keel.yaml"),
            "datasets",
            "import",
            f"d-{mark}",
            str(items),
            "--tenant",
            tenant,
        )
        self.ok(
            self.admin.post("/api/rag/collections", json={"tenant": tenant, "name": f"c-{mark}", "model": "hash:64"}),
            201,
        )
        put = {"tenant": tenant, "text": f"# {mark}\n\n{mark} handbook text", "title": f"t-{mark}"}
        self.ok(self.admin.put(f"/api/rag/collections/c-{mark}/documents/doc-{mark}", json=put), 200, 201, 202)
        docs = f"/api/rag/collections/c-{mark}/documents"
        assert until(
            lambda: [d["status"] for d in self.admin.get(docs, params={"tenant": tenant}).json()["data"]] == ["indexed"]
        )
        self.ok(
            self.admin.put(f"/api/agents/secrets/s-{mark}", json={"tenant": tenant, "value": f"{mark}-secret"}), 201
        )
        tool = {"tenant": tenant, "name": f"pay_{mark}", "kind": "http", "description": f"{mark} pay",
                "parameters": {"type": "object", "properties": {"amount": {"type": "number"}}, "required": ["amount"]},
                "http": {"method": "POST", "url": self.svc.url + "/pay"},
                "policy": {"default": "allow", "rules": [{"when": "amount > 100", "action": "approve"}]}}  # fmt: skip
        self.ok(self.admin.post("/api/agents/tools", json=tool), 201)
        self.up.script(Script(body_override=completion((f"call_{mark}", f"pay_{mark}", {"amount": 250}))))
        with self.keyed(key) as c:
            run = self.ok(c.post("/api/agents/runs", json={"model": "gpt-4o-mini", "input": f"{mark} pay",
                                                           "tools": [f"pay_{mark}"]}))  # fmt: skip
        assert run["state"] == "waiting", run

    def shared_docs(self, tenant: str) -> None:
        """Documents of the tenant shared with users by name: one with two users, one with one alone."""
        mark = MARK[tenant]
        docs = f"/api/rag/collections/c-{mark}/documents"
        for name, users in (("pair", [ULY, VERA]), ("solo", [ULY])):
            put = {"tenant": tenant, "text": f"{mark} {name} notes", "title": name, "users": users}
            self.ok(self.admin.put(f"{docs}/{name}-{mark}", json=put), 200, 201, 202)
        assert until(
            lambda: {d["status"] for d in self.admin.get(docs, params={"tenant": tenant}).json()["data"]} == {"indexed"}
        )

    def access_lists(self, tenant: str) -> dict[str, list[str]]:
        docs = self.admin.get(f"/api/rag/collections/c-{MARK[tenant]}/documents", params={"tenant": tenant})
        return {d["id"]: d["users"] for d in self.ok(docs)["data"]}


# ---- the scan -------------------------------------------------------------------------------------------


def sqlite_rows(path: Path, markers: list[str]) -> list[tuple[str, str, str]]:
    """(table, column, marker) for every text cell of every table of the SQLite file holding a marker."""
    found = []
    with closing(sqlite3.connect(path)) as db:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        for table in tables:
            cols = [r[1] for r in db.execute(f"PRAGMA table_info('{table}')")]
            for col in cols:
                for m in markers:
                    sql = f'SELECT count(*) FROM "{table}" WHERE CAST("{col}" AS TEXT) LIKE ?'
                    if db.execute(sql, (f"%{m}%",)).fetchone()[0]:
                        found.append((table, col, m))
    return found


def postgres_rows(url: str, markers: list[str]) -> list[tuple[str, str, str]]:
    import psycopg

    found = []
    with psycopg.connect(url) as pg:
        cols = pg.execute(
            "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = current_schema()"
        ).fetchall()
        for table, col in cols:
            for m in markers:
                sql = f'SELECT count(*) FROM "{table}" WHERE CAST("{col}" AS TEXT) LIKE %s'
                if pg.execute(sql.encode(), (f"%{m}%",)).fetchone()[0]:  # type: ignore[index]
                    found.append((table, col, m))
    return found


def scan(storage_url: str, tmp: Path, markers: list[str]) -> set[tuple[str, str, str]]:
    """Every place a marker is found: database cells (the store's, the caches' and any other SQLite file
    under tmp) and files (blobs, spill)."""
    found: set[tuple[str, str, str]] = set()
    if not storage_url.startswith("sqlite"):
        found |= set(postgres_rows(storage_url, markers))
    for db in tmp.rglob("*.db"):
        found |= {(f"{db.name}:{t}", c, m) for t, c, m in sqlite_rows(db, markers)}
    for path in tmp.rglob("*"):
        if path.is_file() and path.suffix not in (".db", ".db-wal", ".db-shm", ".yaml", ".jsonl"):
            data = path.read_bytes()
            found |= {(str(path.relative_to(tmp)), "file", m) for m in markers if m.encode() in data}
    return found


def audit_cells(gw: Gateway, markers: list[str]) -> set[tuple[int, str]]:
    out = set()
    for e in AuditLog(gw.runtime.store).entries():
        text = json.dumps([e.tenant, e.actor, e.target, e.detail, e.source_ip])
        out |= {(e.seq, m) for m in markers if m in text}
    return out


TABLES = {  # receipt kind -> the tables its rows live in, and how a tenant's rows are found
    "traces": ["traces"],
    "responses": ["responses"],
    "jobs": ["jobs"],
    "files": ["files"],
    "prompts": ["prompt_versions", "prompt_labels", "prompt_label_history", "prompt_rollouts", "prompts"],
    "agent_tools": ["agent_tools"],
    "agent_secrets": ["agent_secrets"],
    "agent_runs": ["agent_runs", "agent_calls"],
    "eval_scores": ["eval_scores"],
    "prompt_feedback": ["prompt_feedback"],
    "keys": ["api_keys"],
}


def held(gw: Gateway, tenant: str) -> dict[str, int]:
    """Rows of `tenant` per receipt kind, counted in the store before the purge."""
    from keel.store.sql.dialect import Database

    db: Database = gw.runtime.store._db  # type: ignore[attr-defined]
    m = db.dialect.mark
    out: dict[str, int] = {}
    with db.session() as s:

        def count(sql: str) -> int:
            row = s.fetchone(sql.replace("?", m), (tenant,))
            return int(row[0]) if row else 0

        for kind, tables in TABLES.items():
            out[kind] = sum(count(f"SELECT count(*) FROM {t} WHERE tenant = ?") for t in tables)
        out["spans"] = count("SELECT count(*) FROM spans WHERE trace_id IN (SELECT id FROM traces WHERE tenant = ?)")
        out["eval_runs"] = count("SELECT count(*) FROM eval_runs WHERE tenant = ?") + count(
            "SELECT count(*) FROM eval_results WHERE run_id IN (SELECT id FROM eval_runs WHERE tenant = ?)"
        )
        out["batches"] = count("SELECT count(*) FROM batches WHERE tenant = ?") + count(
            "SELECT count(*) FROM batch_results WHERE batch_id IN (SELECT id FROM batches WHERE tenant = ?)"
        )
        out["dataset_items"] = count("SELECT count(*) FROM datasets WHERE tenant = ?") + count(
            "SELECT count(*) FROM dataset_items WHERE tenant = ?"
        )
    return out


def test_a_purged_tenant_and_user_leave_nothing_but_the_audit_entries_of_their_deletion(
    make_gateway: Any,
    up: FakeUpstream,
    storage_url: str,
    tmp_path: Path,
    service: ToolService,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KEEL_MASTER_KEY", MASTER)
    gw = make_gateway(config(up, storage_url, tmp_path))
    seed = Seeder(gw, up, service, tmp_path)
    with closing(seed.admin):
        purge_and_scan(gw, seed, storage_url, tmp_path)


def purge_and_scan(gw: Gateway, seed: Seeder, storage_url: str, tmp_path: Path) -> None:
    for tenant in (GONE, KEEP):
        seed.tenant(tenant)
        seed.tenant_data(tenant)
    seed.user_data(GONE, ANN)
    seed.user_data(KEEP, ULY)
    seed.user_data(KEEP, VERA)
    seed.shared_docs(KEEP)
    gw.traces()
    gone = [GONE, ANN, MARK[GONE], MARK[ANN]]
    uly = [ULY, MARK[ULY]]
    kept = [KEEP, VERA, MARK[KEEP], MARK[VERA]]
    before = scan(storage_url, tmp_path, gone + uly + kept)
    for m in gone + uly + kept:  # every marker is somewhere first, so "gone" means something
        assert any(f[2] == m for f in before), m
    assert {(t, c) for t, c, m in before if m == MARK[GONE] and "blobs" in t}, "a payload blob holds the content"
    expected = held(gw, GONE)
    assert all(expected[k] > 0 for k in expected), expected

    r = seed.admin.post(f"/api/tenants/{GONE}/purge", json={})
    receipt = seed.ok(r)
    took = receipt["finished_at"] - receipt["started_at"]
    print(f"\n  receipt ({took * 1000:.0f} ms):", json.dumps(receipt["counts"], sort_keys=True))
    counts = receipt["counts"]
    for kind, n in expected.items():
        assert counts[kind] == n, (kind, counts[kind], n)
    assert counts["tenant"] == 1 and counts["cache_entries"] > 0 and counts["rag_chunks"] > 0
    assert counts["trace_blobs"] >= 1 and counts["audit_erased"] > 0

    again = seed.ok(seed.admin.post(f"/api/tenants/{GONE}/purge", json={}))  # idempotent: nothing left to delete
    assert set(again["counts"].values()) == {0} and again["audit_seq"] > receipt["audit_seq"]

    # the user's purge "crashes" after its first purgers (the rows found through the user's traces are
    # gone, the traces not yet); `keel users purge`, a separate process, finishes it
    crashed = asyncio.run(_part_of_a_purge(gw, KEEP, ULY, [name for name, _ in PURGERS].index("traces")))
    assert crashed["prompt_feedback"] == 1 and crashed["traces"] == 0
    out = keel(tmp_path, "-c", str(tmp_path / "keel.yaml"), "users", "purge", KEEP, ULY, "--yes", "--json")
    user_receipt = json.loads(out.stdout)
    assert user_receipt["subject"] == {"tenant": KEEP, "user": ULY}
    # three chat calls, the stored response's, the async call's, the batch line's, the eval item's
    assert user_receipt["counts"]["traces"] == 7 and user_receipt["counts"]["keys"] == 1
    assert user_receipt["counts"]["prompt_feedback"] == 0  # the crashed run's part is not done twice
    # the user's id out of the RAG access lists (documents and index); the list they were alone on is closed
    assert (user_receipt["counts"]["rag_acls"], user_receipt["counts"]["rag_acl_index"]) == (2, 2)
    lists = seed.access_lists(KEEP)
    assert (lists[f"pair-{MARK[KEEP]}"], lists[f"solo-{MARK[KEEP]}"]) == ([VERA], [""]), lists
    nobody = seed.ok(seed.admin.delete(f"/api/tenants/{KEEP}/users/nobody-at-all"))
    assert nobody["subject"] == {"tenant": KEEP, "user": "nobody-at-all"} and set(nobody["counts"].values()) == {0}

    after = scan(storage_url, tmp_path, gone + uly + kept)
    residue = {f for f in after if f[2] in gone + uly}
    purges = {e.seq for e in AuditLog(gw.runtime.store).entries() if e.action in ("tenant.purge", "user.purge")}
    allowed = {(s, m) for s, m in audit_cells(gw, gone + uly) if s in purges}
    assert {f for f in residue if f[0] not in ("audit_log", "keel.db:audit_log")} == set(), residue
    assert audit_cells(gw, gone + uly) == allowed
    assert {f for f in after if f[2] in kept} == {f for f in before if f[2] in kept}  # the others: untouched
    verdict = AuditLog(gw.runtime.store).verify()
    assert verdict.ok, verdict.reason


async def _part_of_a_purge(gw: Gateway, tenant: str, user: str, n: int) -> dict[str, int]:
    """The first `n` purgers of the cascade, as a purge that died after them would have run them."""
    stores = Stores(gw.runtime.store, gw.runtime.blobs)
    run = _Run(stores, Subject(tenant, user), Receipt(Subject(tenant, user), 0.0))
    counts = dict.fromkeys((name for name, _ in PURGERS), 0)
    for name, purger in PURGERS[:n]:
        counts[name] = await purger(run)
    return counts


def test_every_table_naming_a_tenant_has_a_purger(tmp_path: Path) -> None:
    """A store added later with a tenant (or user) column and no purger fails here at once, before any
    seeding: its table must be erased by a kind of keel.store.sql.erase or named by a purger of its own."""
    store = open_store(f"sqlite:///{tmp_path}/k.db")
    try:
        with closing(sqlite3.connect(tmp_path / "k.db")) as db:
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            naming = {
                t for t in tables if {r[1] for r in db.execute(f"PRAGMA table_info('{t}')")} & {"tenant", "user_id"}
            }
    finally:
        store.close()
    erased = {step.table for steps in TENANT_SCOPE.values() for step in steps}
    own = {"traces", "spans", "responses", "usage_minute", "usage_hour", "usage_day", "usage_sessions"}  # purgers
    rag = {t for t in naming if t.startswith("rag_")}  # RAG's own purge (Ingestor.purge_tenant)
    audit = {"audit_log"}  # erased, not deleted
    assert naming - erased - own - rag - audit == set()


def test_the_subjects_queued_jobs_are_cancelled_before_anything_is_deleted(tmp_path: Path) -> None:
    from keel.store.protocols import JobSpec

    store = open_store(f"sqlite:///{tmp_path}/k.db")
    try:
        for tenant in ("acme", "globex"):
            store.create_tenant(tenant)
        later = time.time() + 3600
        specs = [JobSpec("x", {"n": i}, tenant=t, max_attempts=1, timeout_s=5, run_at=later) for i, t in enumerate(("acme", "acme", "globex"))]  # fmt: skip
        store.enqueue_jobs(specs, time.time())
        counts = asyncio.run(purge(Stores(store), "acme")).counts
        assert (counts["jobs_cancelled"], counts["jobs"], counts["tenant"]) == (2, 2, 1)
        left = store.list_jobs(JobQuery(limit=10))
        assert [(j.tenant, j.state) for j in left] == [("globex", "queued")]
    finally:
        store.close()
