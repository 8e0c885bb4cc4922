"""The purge test: a deleted user's (or tenant's) traces, payload blobs and cache entries are gone,
everyone else's intact. On SQLite and on the real PostgreSQL.

A real gateway over HTTP, with the exact cache and the semantic cache (the local all-MiniLM-L6-v2
model, vectors in SQLite) and a low blob threshold, so long questions keep their payloads in the
blob store. Two tenants, two users each. Every kind is counted per (tenant, user) before and after,
from where it really lives: trace rows in the store, blob files, cache rows in the cache files, and
the usage rollups. One user is purged with the `keel` CLI (a separate process opening the same
stores from keel.yaml), one whole tenant through the admin API.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import time
from contextlib import closing
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from keel.keys.auth import issue_key
from keel.store.protocols import TraceQuery, UsageQuery
from keel.testing import FakeUpstream
from keel.traces.spans import child_span
from tests.conftest import Gateway, base_config, until
from tests.e2e.test_cache_e2e import ask, settle
from tests.e2e.test_cli import keel

USERS = {"t1": ("alice", "bob"), "t2": ("carol", "dave")}
THRESHOLD = 2048


def purge_config(up: FakeUpstream, storage_url: str, tmp: Path) -> dict[str, Any]:
    raw = base_config(up, storage_url, tmp)
    raw["cache"] = {
        "enabled": True,
        "ttl_s": 600,
        "url": f"sqlite:///{tmp}/cache.db",
        "semantic": {"enabled": True, "threshold": 0.95, "vectors_url": f"sqlite:///{tmp}/vectors.db"},
    }
    raw["traces"] |= {"blob_threshold_bytes": THRESHOLD, "blobs_url": f"file://{tmp}/blobs"}
    return raw


def populate(gw: Gateway) -> dict[str, str]:
    """Each user asks two short questions and one long one (its payload goes to a blob), then repeats
    one (a cache hit, traced too). Returns each tenant's key."""
    gw.runtime.store.create_tenant("t2")
    keys = {"t1": gw.key, "t2": issue_key(gw.runtime.store, "t2", name="t2").key}
    for tenant, users in USERS.items():
        for user in users:
            for question in (f"When does {user} ship?", f"Where does {user} live?", f"{user} long " * 300):
                _, h = ask(gw, question, key=keys[tenant], user=user)
                assert h["x-keel-cache"] == "miss"
            settle(gw)
            _, h = ask(gw, f"When does {user} ship?", key=keys[tenant], user=user)
            assert h["x-keel-cache"] == "hit"
    settle(gw)
    gw.traces()  # waits for the trace writer
    return keys


def snapshot(gw: Gateway, tmp: Path) -> dict[tuple[str, str], dict[str, int]]:
    """Per (tenant, user): trace rows, blobs present, cache entries, vectors, rollup calls."""
    store, blobs = gw.runtime.store, gw.runtime.blobs
    assert blobs is not None
    now = time.time()
    out: dict[tuple[str, str], dict[str, int]] = {}
    with closing(sqlite3.connect(tmp / "cache.db")) as c, closing(sqlite3.connect(tmp / "vectors.db")) as v:
        entries = dict(
            ((t, u), n) for t, u, n in c.execute("SELECT tenant, user, count(*) FROM cache_entries GROUP BY 1, 2")
        )
        vectors = dict(((t, u), n) for t, u, n in v.execute("SELECT tenant, user, count(*) FROM cache_vectors GROUP BY 1, 2"))  # fmt: skip
    for tenant, users in USERS.items():
        usage = {
            r.group: r.calls
            for r in store.usage(UsageQuery(since=now - 3600, until=now + 60, by="user", tenant=tenant))
        }
        for user in users:
            rows = store.list_traces(TraceQuery(since=0, until=now + 60, tenant=tenant, user=user, limit=1000))
            refs = [r.payload_blob for r in rows if r.payload_blob]
            out[(tenant, user)] = {
                "traces": len(rows),
                "blobs": sum(1 for ref in refs if blobs.get(ref) is not None),
                "cache_entries": entries.get((tenant, user), 0),
                "vectors": vectors.get((tenant, user), 0),
                "rollup_calls": usage.get(user, 0),
            }
    return out


def emit_spans(gw: Gateway) -> dict[tuple[str, str], list[str]]:
    """One child span under every trace, as a capability emits it; the trace ids per (tenant, user)."""
    store, now = gw.runtime.store, time.time()
    owned: dict[tuple[str, str], list[str]] = {}
    for r in store.list_traces(TraceQuery(since=0, until=now + 60, limit=1000)):
        gw.runtime.put_span(child_span(r, "retrieval", "docs", r.started_at, span_id="r"))
        owned.setdefault((r.tenant or "", r.user or ""), []).append(r.id)
    assert until(lambda: all(store.trace_spans(i) for ids in owned.values() for i in ids))
    return owned


def span_counts(gw: Gateway, owned: dict[tuple[str, str], list[str]]) -> dict[tuple[str, str], int]:
    return {who: sum(len(gw.runtime.store.trace_spans(i)) for i in ids) for who, ids in owned.items()}


def blob_files(tmp: Path) -> set[str]:
    return {p.relative_to(tmp / "blobs").as_posix() for p in (tmp / "blobs").rglob("*.json")}


def test_purging_a_user_then_a_tenant_deletes_theirs_and_nothing_else(
    make_gateway: Any, up: FakeUpstream, storage_url: str, tmp_path: Path
) -> None:
    gw = make_gateway(purge_config(up, storage_url, tmp_path))
    keys = populate(gw)
    before = snapshot(gw, tmp_path)
    for who, counts in before.items():  # every kind is there for everyone, so "gone" means something
        assert counts == {"traces": 4, "blobs": 1, "cache_entries": 3, "vectors": 3, "rollup_calls": 4}, who
    files = blob_files(tmp_path)
    assert len(files) == 4
    t1_total = _tenant_calls(gw, "t1")
    owned = emit_spans(gw)
    assert span_counts(gw, owned) == dict.fromkeys(before, 4)

    # one user, with the CLI: a separate process opening the stores named in keel.yaml
    receipt = json.loads(keel(tmp_path, "-c", str(tmp_path / "keel.yaml"), "tenants", "purge", "t1", "--user", "alice", "--yes", "--json").stdout)  # fmt: skip
    report = receipt["counts"]
    assert receipt["subject"] == {"tenant": "t1", "user": "alice"} and len(receipt["digest"]) == 64
    assert {k: report[k] for k in ("traces", "trace_blobs", "cache_entries", "cache_vectors")} == {
        "traces": 4, "trace_blobs": 1, "cache_entries": 3, "cache_vectors": 3,
    }  # fmt: skip
    assert report["rollups"] > 0
    assert report["spans"] == 4 and span_counts(gw, owned) == {**dict.fromkeys(before, 4), ("t1", "alice"): 0}
    after = snapshot(gw, tmp_path)
    assert after[("t1", "alice")] == dict.fromkeys(before[("t1", "alice")], 0)
    assert {w: c for w, c in after.items() if w != ("t1", "alice")} == {
        w: c for w, c in before.items() if w != ("t1", "alice")
    }
    assert len(blob_files(tmp_path)) == 3
    assert _tenant_calls(gw, "t1") == t1_total  # the tenant's totals are not personal data: kept
    # served from what is left: bob's answer still cached, alice's gone
    assert ask(gw, "When does bob ship?", key=keys["t1"], user="bob")[1]["x-keel-cache"] == "hit"
    assert ask(gw, "When does alice ship?", key=keys["t1"], user="erin")[1]["x-keel-cache"] == "miss"

    # a whole tenant, through the admin API (the gateway's own cache objects)
    settle(gw)
    gw.traces()
    before = snapshot(gw, tmp_path)
    r = httpx.post(f"{gw.url}/api/tenants/t2/purge", json={}, headers={"authorization": f"Bearer {gw.admin}"}, timeout=30)  # fmt: skip
    assert r.status_code == 200, r.text
    body = r.json()["counts"]
    assert {k: body[k] for k in ("traces", "trace_blobs", "cache_entries", "cache_vectors")} == {
        "traces": 8, "trace_blobs": 2, "cache_entries": 6, "cache_vectors": 6,
    }  # fmt: skip
    assert body["spans"] == 8 and span_counts(gw, owned) == {**dict.fromkeys(owned, 0), ("t1", "bob"): 4}
    after = snapshot(gw, tmp_path)
    for user in USERS["t2"]:
        assert after[("t2", user)] == dict.fromkeys(before[("t2", user)], 0)
    assert {w: c for w, c in after.items() if w[0] == "t1"} == {w: c for w, c in before.items() if w[0] == "t1"}
    assert _tenant_calls(gw, "t2") == 0  # a whole tenant's rollups go with it
    assert len(blob_files(tmp_path)) == 1  # bob's
    # the tenant and its keys went with it
    with pytest.raises(openai.AuthenticationError):
        ask(gw, "hello again", key=keys["t2"], user="carol")


def _tenant_calls(gw: Gateway, tenant: str) -> int:
    now = time.time()
    rows = gw.runtime.store.usage(UsageQuery(since=now - 3600, until=now + 60, by="tenant"))
    return sum(r.calls for r in rows if r.group == tenant)


@pytest.mark.parametrize("storage_url", ["sqlite"], indirect=True)
def test_delete_tenant_revokes_its_keys_everywhere_then_deletes_keys_and_tenant(
    make_gateway: Any, up: FakeUpstream, storage_url: str, tmp_path: Path
) -> None:
    gw = make_gateway(purge_config(up, storage_url, tmp_path))
    keys = populate(gw)
    admin = {"authorization": f"Bearer {gw.admin}"}
    httpx.put(f"{gw.url}/api/limits/tenant/t2", json={"limits": {"rpm": 100}}, headers=admin).raise_for_status()
    r = httpx.post(f"{gw.url}/api/tenants/t2/purge", json={"delete_tenant": True}, headers=admin, timeout=30)
    assert r.status_code == 200, r.text
    body = r.json()["counts"]
    assert (body["keys_revoked"], body["keys"], body["limit_overrides"], body["tenant"]) == (1, 1, 1, 1)
    assert body["traces"] == 8
    with pytest.raises(openai.AuthenticationError):
        ask(gw, "anyone there?", key=keys["t2"])
    assert "t2" not in [t["name"] for t in httpx.get(f"{gw.url}/api/tenants", headers=admin).json()["data"]]
    assert ask(gw, "When does bob ship?", key=keys["t1"], user="bob")[1]["x-keel-cache"] == "hit"
    bad = httpx.post(f"{gw.url}/api/tenants/t1/purge", json={"user": "bob", "delete_tenant": True}, headers=admin)
    assert bad.status_code == 400 and "whole tenant" in bad.json()["error"]["message"]


@pytest.mark.parametrize("storage_url", ["sqlite"], indirect=True)
def test_a_blob_payload_reads_back_through_the_api_and_the_admin_sweep_deletes_old_traces(
    make_gateway: Any, up: FakeUpstream, storage_url: str, tmp_path: Path
) -> None:
    raw = purge_config(up, storage_url, tmp_path)
    raw["retention"] = {"traces_days": 1, "batch_size": 2}
    gw = make_gateway(raw)
    long = "a long question " * 300
    _, h = ask(gw, long, user="ann")
    rows = {t.id: t for t in gw.traces()}
    row = rows[h["x-keel-trace-id"]]
    assert row.payload_blob is not None and row.request is None  # the row holds the key only
    admin = {"authorization": f"Bearer {gw.admin}"}
    shown = httpx.get(f"{gw.url}/api/traces/{row.id}", headers=admin).json()
    assert shown["request"]["messages"][-1]["content"] == long and "echo: " + long in json.dumps(shown["response"])
    cli = json.loads(keel(tmp_path, "-c", str(tmp_path / "keel.yaml"), "traces", "show", row.id, "--json").stdout)
    assert cli["request"] == shown["request"]

    old = [
        dataclasses.replace(row, id=f"old{i}", started_at=time.time() - 3 * 86400, payload_blob=None) for i in range(5)
    ]
    gw.runtime.store.append_traces(old)
    r = httpx.post(f"{gw.url}/api/retention/sweep", headers=admin, timeout=30)
    assert r.status_code == 200, r.text
    assert (r.json()["traces"], r.json()["by_tenant"]) == (5, {"*": 5})
    assert gw.runtime.store.get_trace("old0") is None
    assert httpx.get(f"{gw.url}/api/traces/{row.id}", headers=admin).json()["request"] == shown["request"]


@pytest.mark.parametrize("storage_url", ["sqlite"], indirect=True)
def test_the_gateway_sweeps_on_its_own_clock(
    make_gateway: Any, up: FakeUpstream, storage_url: str, tmp_path: Path
) -> None:
    raw = purge_config(up, storage_url, tmp_path)
    raw["retention"] = {"traces_days": 1, "tenants": {"t2": {"traces_days": 5}}, "sweep_every_s": 0.2}
    gw = make_gateway(raw)
    ask(gw, "fresh", user="ann")
    [fresh] = gw.traces()
    old = [dataclasses.replace(fresh, id=f"old{i}", started_at=time.time() - 3 * 86400) for i in range(3)]
    kept = dataclasses.replace(fresh, id="t2-old", tenant="t2", started_at=time.time() - 3 * 86400)
    gw.runtime.store.append_traces([*old, kept])
    deadline = time.monotonic() + 10
    while gw.runtime.store.get_trace("old2") is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [r.id for r in gw.runtime.store.list_traces(TraceQuery(since=0, until=time.time() + 1))] == [
        fresh.id,
        "t2-old",
    ]
