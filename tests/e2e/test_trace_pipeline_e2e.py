"""No call can break the trace pipeline: a real gateway over HTTP on real SQLite and PostgreSQL.

Calls carry what the edge accepts but a store or serialiser would refuse (NUL in `user`, metadata
and messages; metadata nested deeper than orjson writes): each call's record is stored, sanitised.
A spilled record no store takes is quarantined with its reason while the spills around it load, and
/readyz and /metrics say whether the writer can write. Deep bodies may be refused at the edge (400)
once it limits nesting: either answer is accepted, a lost trace is not.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from keel.store.protocols import TraceQuery, UsageQuery
from keel.store.storable import TAG
from keel.testing import FakeUpstream
from tests.conftest import Gateway, base_config
from tests.unit.test_trace_writer import wait_until

KEEL = [sys.executable, "-m", "keel.cli.main"]
TOO_BIG = 2**63  # no signed 64-bit column holds it


def chat(gw: Gateway, **body: Any) -> httpx.Response:
    payload = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], **body}
    return httpx.post(
        gw.base_url + "/chat/completions", json=payload, headers={"authorization": f"Bearer {gw.key}"}, timeout=30
    )


def rows(gw: Gateway) -> dict[str, Any]:
    return {r.id: r for r in gw.runtime.store.list_traces(TraceQuery(since=0, until=time.time() + 60, limit=1000))}


def deep(levels: int) -> Any:
    value: Any = "bottom"
    for _ in range(levels):
        value = {"d": value}
    return value


def ready(gw: Gateway) -> httpx.Response:
    return httpx.get(gw.url + "/readyz", timeout=10)


def metric(gw: Gateway, name: str) -> float:
    for line in httpx.get(gw.url + "/metrics", timeout=10).text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"no {name} in /metrics")


@pytest.fixture
def slow_flush(make_gateway: Any, up: FakeUpstream, storage_url: str, tmp_path: Path) -> Gateway:
    """A gateway whose writer flushes every 300 ms, so calls made together share a batch."""
    raw = base_config(up, storage_url, tmp_path)
    raw["traces"]["flush_interval_ms"] = 300
    return make_gateway(raw)  # type: ignore[no-any-return]


def test_nul_in_user_metadata_and_messages_is_traced_sanitised(slow_flush: Gateway) -> None:
    gw = slow_flush
    before = chat(gw)
    bad = chat(gw, user="u\x00ser", metadata={"note": "a\x00b"}, messages=[{"role": "user", "content": "hi\x00"}])
    after = [chat(gw, user="later") for _ in range(3)]
    assert [r.status_code for r in (before, bad, *after)] == [200] * 5
    ids = {r.headers["x-keel-trace-id"] for r in (before, bad, *after)}
    wait_until(lambda: ids <= set(rows(gw)), "every call's trace row")

    got = rows(gw)[bad.headers["x-keel-trace-id"]]
    assert got.user == "u\ufffdser" and got.tags["note"] == "a\ufffdb" and got.tags[TAG] == "nul"
    assert got.request is not None and got.request["messages"][0]["content"] == "hi\ufffd"
    users = gw.runtime.store.usage(UsageQuery(since=0, until=time.time() + 60, by="user"))
    assert {u.group: u.calls for u in users} == {None: 1, "u\ufffdser": 1, "later": 3}
    stats = gw.runtime.writer.stats
    assert (stats.quarantined, stats.spilled, stats.dropped) == (0, 0, 0)


def test_metadata_nested_too_deep_never_stops_trace_writing(slow_flush: Gateway) -> None:
    gw = slow_flush
    bad = chat(gw, model="sim", metadata={"deep": deep(300)})
    after = [chat(gw, model="sim") for _ in range(3)]
    assert bad.status_code in (200, 400) and [r.status_code for r in after] == [200] * 3
    ids = {r.headers["x-keel-trace-id"] for r in after}
    if bad.status_code == 200:  # the edge let it through: its record is stored, cut at a depth stores take
        ids.add(bad.headers["x-keel-trace-id"])
    wait_until(lambda: ids <= set(rows(gw)), "every served call's trace row")
    if bad.status_code == 200:
        assert "depth" in rows(gw)[bad.headers["x-keel-trace-id"]].tags[TAG]
    assert ready(gw).json()["trace_writer"] == "ok" and gw.runtime.writer.stats.restarts == 0


def test_a_poisoned_spill_file_does_not_hold_back_an_outage_worth_of_spills(
    make_gateway: Any, up: FakeUpstream, storage_url: str, tmp_path: Path
) -> None:
    """Spills left by an earlier process (an outage): one record in the oldest file is refused."""
    spill = tmp_path / "spill"
    spill.mkdir()
    now = time.time()

    def line(i: int, **extra: Any) -> bytes:
        return orjson.dumps({"id": f"sp{i:06d}", "started_at": now, "tenant": "t1", "alias": "sim", **extra})

    (spill / "traces-1-1-1.jsonl").write_bytes(b"\n".join([line(0), line(1, attempts=TOO_BIG), line(2)]) + b"\n")
    for n in range(2, 12):
        (spill / f"traces-{n}-1-1.jsonl").write_bytes(b"\n".join(line(n * 100 + i) for i in range(20)) + b"\n")
    gw = make_gateway(base_config(up, storage_url, tmp_path))

    expected = {"sp000000", "sp000002"} | {f"sp{n * 100 + i:06d}" for n in range(2, 12) for i in range(20)}
    wait_until(lambda: expected <= set(rows(gw)), "every good spilled record to load")
    wait_until(lambda: not list(spill.glob("traces-*")), "the spill files to go")
    [entry] = gw.runtime.writer.files.deadletters()
    assert entry["record"]["id"] == "sp000001" and "UnstorableRecords" in entry["reason"]
    body = ready(gw).json()
    assert (body["status"], body["traces_quarantined"]) == ("ready", 1)
    assert metric(gw, "keel_traces_quarantined_total") == 1
    assert metric(gw, "keel_traces_reloaded_total") == len(expected)
    listed = subprocess.run(
        [*KEEL, "--config", str(tmp_path / "keel.yaml"), "traces", "deadletter", "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    [listed_entry] = json.loads(listed.stdout)
    assert listed_entry["record"]["id"] == "sp000001" and "UnstorableRecords" in listed_entry["reason"]


def test_readyz_and_metrics_say_when_the_writer_cannot_write(
    make_gateway: Any, up: FakeUpstream, tmp_path: Path
) -> None:
    """Another process holds SQLite's write lock: the writer waits in its insert, and says so. The
    process stays ready (calls are served, records wait): only records at risk take it out."""
    db = tmp_path / "keel.db"
    raw = base_config(up, f"sqlite:///{db}", tmp_path)
    raw["traces"]["stall_after_s"] = 0.3
    gw = make_gateway(raw)
    assert ready(gw).status_code == 200 and metric(gw, "keel_trace_writer_up") == 1

    with closing(sqlite3.connect(db, isolation_level=None)) as other:
        other.execute("BEGIN IMMEDIATE")
        call = chat(gw)
        assert call.status_code == 200  # served: the request path never waits on the database
        wait_until(lambda: "stalled" in ready(gw).json()["trace_writer"], "/readyz to report the stall")
        probe = ready(gw)
        assert probe.status_code == 200 and probe.json()["status"] == "ready"
        assert metric(gw, "keel_trace_writer_up") == 0
        other.execute("ROLLBACK")

    wait_until(lambda: call.headers["x-keel-trace-id"] in rows(gw), "the trace once the lock is gone")
    wait_until(lambda: ready(gw).json()["trace_writer"] == "ok", "/readyz to say the writer is fine again")
    assert metric(gw, "keel_trace_writer_up") == 1
