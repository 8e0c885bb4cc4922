"""Retention on SQLite and the real PostgreSQL: old traces leave in bounded batches, rollups stay,
payload blobs follow their rows, orphans are swept; and the trace writer's blob path.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from keel.store.open import open_blobs, open_store
from keel.store.protocols import BlobStore, DeletedTraces, Store, TraceQuery, UsageQuery
from keel.tenancy.deletion import Stores, purge
from keel.traces.retention import RetentionPolicy, orphan_blobs, sweep
from keel.traces.spans import child_span
from keel.traces.writer import TraceWriter, blob_key, read_trace
from keel.types import Span, TraceRecord
from tests.e2e.test_cli import keel

NOW = time.time()
DAY = 86400.0


@pytest.fixture
def blobs(tmp_path: Path) -> BlobStore:
    return open_blobs(f"file://{tmp_path}/blobs")


class CountingDeletes:
    """The real store, counting each bounded delete and the most rows one statement removed."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.statements = 0
        self.most = 0

    def delete_traces(self, **kw: Any) -> DeletedTraces:
        d = self.inner.delete_traces(**kw)
        self.statements += 1
        self.most = max(self.most, d.rows)
        return d

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def traces(
    tenant: str | None, days_old: float, n: int, *, start: int = 0, user: str | None = None
) -> list[TraceRecord]:
    return [
        TraceRecord(
            id=f"{tenant or 'none'}-{days_old:g}-{user or ''}-{start + i}",
            started_at=NOW - days_old * DAY - i,
            tenant=tenant,
            user=user,
            session=f"s-{tenant}-{i % 3}",
            alias="fast",
            input_tokens=10,
            output_tokens=5,
            cost_usd=0.001,
            latency_ms=20.0,
        )
        for i in range(n)
    ]


def count(store: Store, tenant: str | None) -> int:
    """Traces of `tenant` (None: those without a tenant)."""
    rows = store.list_traces(TraceQuery(since=0, until=NOW + 10, tenant=tenant, limit=100_000))
    return sum(1 for r in rows if r.tenant == tenant)


def usage_calls(store: Store) -> dict[str | None, int]:
    rows = store.usage(UsageQuery(since=NOW - 400 * DAY, until=NOW + 10, by="tenant"))
    return {r.group: r.calls for r in rows}


def test_sweep_deletes_old_traces_per_tenant_in_bounded_batches_and_keeps_rollups(
    store: Store, blobs: BlobStore
) -> None:
    store.append_traces(
        traces("acme", 10, 25) + traces("acme", 3, 4)  # acme keeps 7 days
        + traces("globex", 40, 23) + traces("globex", 10, 6)  # the default: 30 days
        + traces("forever", 400, 5)  # kept forever
        + traces(None, 45, 3)  # calls without a tenant follow the default
    )  # fmt: skip
    for r in traces("acme", 10, 2):  # two old acme traces carry payload blobs
        blobs.put(blob_key(r), b"{}")
    before = usage_calls(store)
    counting = CountingDeletes(store)
    policy = RetentionPolicy(30, {"acme": 7, "forever": None}, batch_size=7, pause_s=0.001)

    report = sweep(counting, blobs, policy, NOW)  # type: ignore[arg-type]

    assert (report.traces, report.by_tenant) == (25 + 23 + 3, {"acme": 25, "*": 26})
    assert (count(store, "acme"), count(store, "globex"), count(store, "forever"), count(store, None)) == (4, 6, 5, 0)
    assert counting.most == 7  # never more than one batch per statement
    assert counting.statements == 4 + 4  # acme: 7+7+7+4; default: 7+7+7+5
    assert usage_calls(store) == before  # rollups kept: usage over the old days is still there
    assert report.blobs == 0 and report.orphan_blobs == 0  # those blobs were never referenced by a row...
    assert len(list(blobs.list())) == 2  # ...and they are younger than the orphan grace


def spans_of(store: Store, rows: Sequence[TraceRecord]) -> int:
    return sum(len(store.trace_spans(r.id)) for r in rows)


def test_spans_leave_with_their_rows_by_retention_and_purge(store: Store) -> None:
    old, young = traces("acme", 40, 5), traces("acme", 1, 3)
    alice, globex = traces("acme", 1, 2, start=10, user="alice"), traces("globex", 1, 2)
    rows = old + young + alice + globex
    store.append_traces(rows)
    store.append_spans([child_span(r, "tool", f"t{j}", r.started_at, span_id=f"s{j}") for r in rows for j in range(2)])
    rowless = Span("agent-run", "s", None, "job", "agent", NOW - 50 * DAY, tenant="acme")  # a trace with no call row
    store.append_spans([rowless])

    report = sweep(store, None, RetentionPolicy(30, {}, batch_size=3, pause_s=0), NOW)

    assert (report.traces, report.spans) == (5, 5 * 2 + 1)
    assert (spans_of(store, old), spans_of(store, young), store.trace_spans("agent-run")) == (0, 6, [])

    user = asyncio.run(purge(Stores(store), "acme", "alice")).counts  # one user: their traces' spans only
    assert (user["traces"], user["spans"], spans_of(store, alice), spans_of(store, young)) == (2, 4, 0, 6)
    store.append_spans([Span("agent-2", "s", None, "job", "agent", NOW, tenant="acme")])
    whole = asyncio.run(purge(Stores(store), "acme")).counts  # a tenant: every span of it
    spans = whole["spans"] + whole["orphan_spans"]
    assert (whole["traces"], spans, spans_of(store, young), store.trace_spans("agent-2")) == (3, 7, 0, [])
    assert spans_of(store, globex) == 4  # another tenant's: untouched


def test_retention_deletes_the_blobs_of_the_rows_it_deletes(store: Store, blobs: BlobStore, tmp_path: Path) -> None:
    writer = TraceWriter(store, spill_dir=tmp_path / "spill", blobs=blobs, blob_threshold=500, flush_interval=0.01)
    writer.start()
    big = "x" * 2000
    old = [TraceRecord(id=f"old{i}", started_at=NOW - 40 * DAY, tenant="acme", request={"q": big}) for i in range(3)]
    young = [TraceRecord(id=f"new{i}", started_at=NOW - DAY, tenant="acme", request={"q": big}) for i in range(2)]
    for r in old + young:
        writer.put(r)
    writer.close()
    assert len(list(blobs.list())) == 5

    report = sweep(store, blobs, RetentionPolicy(30, {}), NOW)

    assert (report.traces, report.blobs) == (3, 3)
    assert sorted(k for k, _ in blobs.list()) == sorted(blob_key(r) for r in young)
    kept = read_trace(store, blobs, "new0")
    assert kept is not None and kept.request == {"q": big}


def test_orphan_blobs_are_swept_once_past_the_grace(store: Store, blobs: BlobStore) -> None:
    [with_row] = traces("acme", 1, 1)
    store.append_traces([with_row])
    orphan_old, orphan_new = traces("acme", 1, 2, start=100)
    for r in (with_row, orphan_old, orphan_new):
        blobs.put(blob_key(r), b"{}")
    blobs.put("elsewhere/not-a-trace.json", b"{}")  # not Keel's: never touched
    hour_ago = time.time() - 3600
    path = Path(blobs.url.removeprefix("file://"))
    for r in (with_row, orphan_old):
        os.utime(path / blob_key(r), (hour_ago, hour_ago))

    assert orphan_blobs(store, blobs, time.time() - 600) == [blob_key(orphan_old)]
    report = sweep(store, blobs, RetentionPolicy(None, {}, orphan_grace_s=600), time.time())
    assert report.orphan_blobs == 1 and report.traces == 0
    left = sorted(k for k, _ in blobs.list())
    assert left == sorted([blob_key(with_row), blob_key(orphan_new), "elsewhere/not-a-trace.json"])


def test_the_writer_puts_large_payloads_in_blobs_and_small_ones_inline(
    store: Store, blobs: BlobStore, tmp_path: Path
) -> None:
    writer = TraceWriter(store, spill_dir=tmp_path / "spill", blobs=blobs, blob_threshold=1000, flush_interval=0.01)
    writer.start()
    large = TraceRecord(id="large", started_at=NOW, tenant="acme", request={"q": "y" * 5000}, response={"a": "ok"})
    small = TraceRecord(id="small", started_at=NOW, tenant="acme", request={"q": "hi"}, response={"a": "ok"})
    writer.put(large)
    writer.put(small)
    writer.close()
    row = store.get_trace("large")
    assert row is not None and (row.request, row.response, row.payload_blob) == (None, None, blob_key(large))
    full = read_trace(store, blobs, "large")
    assert full is not None and (full.request, full.response) == ({"q": "y" * 5000}, {"a": "ok"})
    inline = store.get_trace("small")
    assert inline is not None and (inline.request, inline.payload_blob) == ({"q": "hi"}, None)
    assert [k for k, _ in blobs.list()] == [blob_key(large)]


class BlobsDown:
    """A blob store that cannot be written (a full disk, S3 unreachable)."""

    url = "file:///nowhere"

    def put(self, key: str, data: bytes) -> None:
        raise OSError("no space left on device (injected)")

    def get(self, key: str) -> bytes | None:
        return None

    def delete(self, keys: Sequence[str]) -> int:
        return 0

    def list(self, prefix: str = "") -> Iterator[tuple[str, float]]:
        return iter(())

    def close(self) -> None:
        return None


def test_a_failing_blob_store_spills_the_batch_with_its_payloads_and_no_row_points_nowhere(
    store: Store, tmp_path: Path, blobs: BlobStore
) -> None:
    spill = tmp_path / "spill"
    writer = TraceWriter(store, spill_dir=spill, blobs=BlobsDown(), blob_threshold=100, flush_interval=0.01)
    writer.RETRY_DELAYS = (0.001,)
    writer.start()
    writer.put(TraceRecord(id="big1", started_at=NOW, tenant="acme", request={"q": "z" * 500}))
    writer.close()
    assert store.get_trace("big1") is None and writer.stats.spilled == 1
    # the blob store is back: the spill reloads, payload and all, through the blob path
    again = TraceWriter(store, spill_dir=spill, blobs=blobs, blob_threshold=100, flush_interval=0.01)
    again.start()
    again.close()
    full = read_trace(store, blobs, "big1")
    assert full is not None and full.payload_blob is not None and full.request == {"q": "z" * 500}


def test_keel_db_sweep_prints_what_it_deleted(tmp_path: Path) -> None:
    db = tmp_path / "keel.db"
    raw = {
        "storage": {"url": f"sqlite:///{db}"},
        "retention": {"traces_days": 30, "tenants": {"acme": {"traces_days": 7}}},
    }
    (tmp_path / "keel.yaml").write_text(yaml.safe_dump(raw))
    s = open_store(f"sqlite:///{db}")
    s.append_traces(traces("acme", 10, 3) + traces("acme", 1, 2) + traces("globex", 31, 4) + traces("globex", 29, 1))
    s.close()
    out = keel(tmp_path, "db", "sweep").stdout
    assert "tenant acme: 3 traces deleted" in out and "tenants on the default: 4 traces deleted" in out
    assert "deleted 7 traces, 0 payload blobs, 0 orphan blobs" in out
    again = keel(tmp_path, "db", "sweep", "--json").stdout
    assert '"traces": 0' in again
