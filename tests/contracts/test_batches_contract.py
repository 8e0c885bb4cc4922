"""The BatchStore contract, over every SQL backend (SQLite and PostgreSQL): files and batches per
tenant (never another's), pages newest first, status changes only from the states named, and line
results recorded once per (batch, custom_id) however often they are recorded again."""

from __future__ import annotations

import time

import pytest

from keel.store.protocols import BatchRow, FileRow, LineResult, Store

NOW = time.time()


def file(n: int, tenant: str = "acme", purpose: str = "batch") -> FileRow:
    return FileRow(f"file-{n:04d}", tenant, f"in{n}.jsonl", purpose, 100 + n, NOW + n, f"files/{tenant}/{n}", n)


def batch(n: int, tenant: str = "acme") -> BatchRow:
    return BatchRow(
        f"batch_{n:04d}", tenant, "key1", "/v1/chat/completions", "file-0001", "24h", NOW + n, NOW + 86400,
        metadata={"run": str(n)},
    )  # fmt: skip


def test_files_are_read_listed_and_deleted_per_tenant(store: Store) -> None:
    for n in range(1, 6):
        store.put_file(file(n))
    store.put_file(file(9, tenant="globex"))
    store.put_file(file(7, purpose="batch_output"))

    assert store.get_file("acme", "file-0003") == file(3)
    assert store.get_file("globex", "file-0003") is None
    assert store.get_file(None, "file-0009") == file(9, tenant="globex")
    page = store.list_files("acme", limit=3)
    assert [f.id for f in page] == ["file-0007", "file-0005", "file-0004"]
    assert [f.id for f in store.list_files("acme", after="file-0004", limit=3)] == [
        "file-0003",
        "file-0002",
        "file-0001",
    ]
    assert [f.id for f in store.list_files("acme", purpose="batch_output")] == ["file-0007"]

    assert store.delete_file("globex", "file-0003") is None
    assert store.delete_file("acme", "file-0003") == file(3)
    assert store.get_file("acme", "file-0003") is None
    assert store.delete_file("acme", "file-0003") is None


def test_batches_round_trip_page_and_stay_in_their_tenant(store: Store) -> None:
    for n in range(1, 6):
        store.create_batch(batch(n))
    store.create_batch(batch(8, tenant="globex"))

    assert store.get_batch("acme", "batch_0002") == batch(2)
    assert store.get_batch("globex", "batch_0002") is None
    assert [b.id for b in store.list_batches("acme", limit=2)] == ["batch_0005", "batch_0004"]
    assert [b.id for b in store.list_batches("acme", after="batch_0004", limit=10)] == [
        "batch_0003", "batch_0002", "batch_0001",
    ]  # fmt: skip
    assert [b.id for b in store.list_batches("globex")] == ["batch_0008"]


def test_status_changes_only_from_the_states_named(store: Store) -> None:
    store.create_batch(batch(1))

    moved = store.update_batch("batch_0001", {"status": "in_progress", "in_progress_at": NOW, "total": 3})
    assert moved is not None and (moved.status, moved.total, moved.in_progress_at) == ("in_progress", 3, NOW)
    assert store.update_batch("batch_0001", {"status": "cancelling"}, when=("validating",)) is None
    errors = [{"code": "invalid", "message": "bad", "line": 2}]
    done = store.update_batch("batch_0001", {"status": "failed", "errors": errors}, when=("in_progress",))
    assert done is not None and done.errors == errors and done.metadata == {"run": "1"}
    assert store.update_batch("nope", {"status": "failed"}) is None
    with pytest.raises(ValueError, match="tenant"):
        store.update_batch("batch_0001", {"tenant": "globex"})


def test_line_results_are_recorded_once_and_read_in_line_order(store: Store) -> None:
    first = [LineResult("b1", f"c{i}", i, i % 3 != 0, f'{{"line": {i}}}') for i in (3, 1, 2)]

    assert store.record_results(first) == 3
    again = [LineResult("b1", "c1", 1, False, "changed"), LineResult("b1", "c4", 4, True, "{}")]
    assert store.record_results(again) == 1  # a resumed worker records c1 again: kept as first written
    store.record_results([LineResult("b2", "c1", 1, True, "other batch")])

    got = store.batch_results("b1")
    assert [(r.custom_id, r.line, r.ok) for r in got] == [
        ("c1", 1, True),
        ("c2", 2, True),
        ("c3", 3, False),
        ("c4", 4, True),
    ]
    assert got[0].text == '{"line": 1}'
    assert store.recorded_ids("b1") == {"c1", "c2", "c3", "c4"}
    assert store.count_results("b1") == (3, 1)
    assert store.count_results("none") == (0, 0)
    with pytest.raises(ValueError, match="one batch"):
        store.record_results([LineResult("b1", "x", 9, True, ""), LineResult("b2", "y", 9, True, "")])


def test_a_tenant_purge_takes_its_files_batches_and_results_only(store: Store) -> None:
    store.put_file(file(1))
    store.put_file(file(2, tenant="globex"))
    store.create_batch(batch(1))
    store.create_batch(batch(2, tenant="globex"))
    store.record_results([LineResult("batch_0001", "a", 1, True, "{}")])
    store.record_results([LineResult("batch_0002", "a", 1, True, "{}")])

    dropped: list[str] = []

    def erase(kind: str) -> int:  # the purge's path (keel.tenancy.deletion)
        return store.erase_subject(kind, "acme", None, 100, dropped.extend)

    assert (erase("files"), erase("batches"), dropped) == (1, 2, ["files/acme/1"])  # the batch and its result

    assert store.get_file(None, "file-0001") is None and store.get_batch(None, "batch_0001") is None
    assert store.batch_results("batch_0001") == []
    assert store.get_batch("globex", "batch_0002") is not None and len(store.batch_results("batch_0002")) == 1
    assert store.get_file("globex", "file-0002") is not None
    assert (erase("files"), erase("batches")) == (0, 0)
