"""The trace writer against a real SQLite store: nothing put is lost, duplicated or waited on.

Faults are injected into the outside world only: `FlakyStore` is the real store behind a switch
that fails (a number of times, or while `down` is set) or blocks (until `gate` is set).
"""

from __future__ import annotations

import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing
from pathlib import Path
from typing import Any

import orjson
import pytest

from keel.store.open import open_store
from keel.store.protocols import Store, TraceQuery, TraceStore
from keel.traces.spill import SpillDir
from keel.traces.writer import RELOAD_SWITCH_S, TraceWriter
from keel.types import TraceRecord

FAST_RETRIES = (0.001, 0.001, 0.001)


class FlakyStore:
    """A TraceStore delegating to a real one; `append_traces` fails or blocks on demand."""

    def __init__(self, inner: Store, failures: int = 0) -> None:
        self.inner = inner
        self.failures = failures  # fail this many calls, then succeed
        self.down = threading.Event()  # fail every call while set
        self.gate = threading.Event()  # block every call until set
        self.gate.set()
        self.entered = threading.Event()  # a call has started

    def append_traces(self, records: Sequence[TraceRecord]) -> None:
        self.entered.set()
        self.gate.wait()
        if self.down.is_set():
            raise sqlite3.OperationalError("disk I/O error (injected)")
        if self.failures > 0:
            self.failures -= 1
            raise sqlite3.OperationalError("database is locked (injected)")
        self.inner.append_traces(records)

    def list_traces(self, query: TraceQuery) -> list[TraceRecord]:
        return self.inner.list_traces(query)

    def get_trace(self, trace_id: str) -> TraceRecord | None:
        return self.inner.get_trace(trace_id)

    def count_traces(self, since: float, until: float) -> int:
        return self.inner.count_traces(since, until)


def record(i: int) -> TraceRecord:
    return TraceRecord(id=f"tr{i:06d}", started_at=time.time(), alias="demo", tags={"i": i})


def ids(n: int, start: int = 0) -> set[str]:
    return {record(i).id for i in range(start, start + n)}


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "t.db"


@pytest.fixture
def store(db: Path) -> Iterator[Store]:
    s = open_store(f"sqlite:///{db}")
    yield s
    s.close()


@pytest.fixture
def spill(tmp_path: Path) -> Path:
    return tmp_path / "spill"


@pytest.fixture
def make_writer(spill: Path) -> Iterator[Callable[..., TraceWriter]]:
    """Started writers on the shared spill dir; teardown unblocks their stores and closes them."""
    made: list[tuple[TraceWriter, TraceStore]] = []

    def make(store: TraceStore, **options: Any) -> TraceWriter:
        options = {"spill_dir": spill, "flush_interval": 0.01, **options}
        writer = TraceWriter(store, **options)
        writer.start()
        made.append((writer, store))
        return writer

    yield make
    for writer, s in made:
        if isinstance(s, FlakyStore):
            s.down.clear()
            s.gate.set()
        writer.close()


def rows(db: Path) -> list[str]:
    """Every trace id in the database, read on a connection of its own."""
    with closing(sqlite3.connect(db)) as conn:
        return [r[0] for r in conn.execute("SELECT id FROM traces")]


def spill_files(spill: Path) -> list[Path]:
    return sorted(spill.glob("traces-*")) if spill.is_dir() else []


def test_every_record_put_is_in_the_database_after_close(store: Store, db: Path, make_writer: Any) -> None:
    writer = make_writer(store, batch_size=100)
    for i in range(1000):
        writer.put(record(i))
    writer.close()

    written = rows(db)
    assert len(written) == 1000
    assert set(written) == ids(1000)
    assert (writer.stats.written, writer.stats.dropped, writer.depth) == (1000, 0, 0)
    got = store.get_trace("tr000042")
    assert got is not None and got.tags == {"i": 42} and got.alias == "demo"


def test_a_failed_flush_is_retried_until_it_succeeds(store: Store, db: Path, spill: Path, make_writer: Any) -> None:
    flaky = FlakyStore(store, failures=2)
    writer = make_writer(flaky)
    for i in range(100):
        writer.put(record(i))
    wait_until(lambda: writer.stats.written == 100, "the third attempt to succeed")
    writer.close()

    written = rows(db)
    assert sorted(written) == sorted(ids(100))  # all of them, each once
    assert writer.stats.failed_flushes >= 2
    assert (writer.stats.spilled, writer.stats.dropped) == (0, 0)
    assert spill_files(spill) == []


def test_a_store_that_keeps_failing_spills_and_a_new_writer_loads_it_back(
    store: Store, db: Path, spill: Path, make_writer: Any
) -> None:
    flaky = FlakyStore(store)
    flaky.down.set()
    first = make_writer(flaky, batch_size=50)
    first.RETRY_DELAYS = FAST_RETRIES
    for i in range(300):
        first.put(record(i))
    wait_until(lambda: first.stats.spilled == 300, "every batch to spill")
    first.close()  # the store is still down: the spill stays for the next start
    assert rows(db) == []
    assert spill_files(spill)
    assert first.stats.failed_flushes >= 6 * 4  # 6+ batches, each tried once and retried three times
    assert first.stats.dropped == 0

    flaky.down.clear()
    second = make_writer(flaky)
    second.put(record(300))
    second.close()

    written = rows(db)
    assert sorted(written) == sorted(ids(301))
    assert spill_files(spill) == []
    assert second.stats.reloaded == 300


def test_a_running_writer_loads_spills_back_once_the_store_recovers(
    store: Store, db: Path, spill: Path, make_writer: Any
) -> None:
    flaky = FlakyStore(store)
    flaky.down.set()
    writer = make_writer(flaky, batch_size=50)
    writer.RETRY_DELAYS = FAST_RETRIES
    for i in range(200):
        writer.put(record(i))
    wait_until(lambda: writer.stats.spilled == 200, "every batch to spill")
    assert spill_files(spill)

    flaky.down.clear()
    wait_until(lambda: not spill_files(spill), "the idle writer to reload its spills")
    assert sorted(rows(db)) == sorted(ids(200))
    assert writer.stats.reloaded == 200
    writer.close()
    assert len(rows(db)) == 200


def test_close_loads_back_spills_once_the_store_has_recovered(
    store: Store, db: Path, spill: Path, make_writer: Any
) -> None:
    """The SIGTERM path: a spill left by an outage that has ended is written before close returns."""
    flaky = FlakyStore(store)
    flaky.down.set()
    writer = make_writer(flaky, flush_interval=0.5)  # idle reloads are rare: close must do it
    writer.RETRY_DELAYS = FAST_RETRIES
    for i in range(100):
        writer.put(record(i))
    wait_until(lambda: writer.stats.spilled == 100, "the batch to spill")

    flaky.down.clear()
    writer.close()
    assert sorted(rows(db)) == sorted(ids(100))
    assert spill_files(spill) == []


def test_overflow_never_blocks_put_and_spills_until_the_store_is_back(
    store: Store, db: Path, spill: Path, make_writer: Any
) -> None:
    flaky = FlakyStore(store)
    flaky.gate.clear()
    writer = make_writer(flaky, queue_size=10)
    writer.put(record(0))
    assert flaky.entered.wait(5)  # the writer now holds record 0 inside a blocked insert

    for i in range(1, 5000):  # the request path: must return although the database does not
        writer.put(record(i))
    assert writer.depth == 4999  # 10 queued + 4,989 in the overflow buffer
    assert writer.stats.dropped == 0

    flaky.gate.set()
    wait_until(lambda: writer.stats.spilled == 4989, "the overflow to spill")
    writer.close()

    written = rows(db)
    assert sorted(written) == sorted(ids(5000))
    assert spill_files(spill) == []
    assert (writer.stats.written, writer.stats.dropped, writer.depth) == (5000, 0, 0)


def test_beyond_the_overflow_limit_records_are_dropped_and_counted(store: Store, db: Path, make_writer: Any) -> None:
    flaky = FlakyStore(store)
    flaky.gate.clear()
    writer = make_writer(flaky, queue_size=10, overflow_limit=50)
    writer.put(record(0))
    assert flaky.entered.wait(5)

    for i in range(1, 200):
        writer.put(record(i))
    # 1 in the blocked insert, 10 queued, 50 in the overflow buffer: the other 139 are dropped
    assert writer.stats.dropped == 139
    assert writer.depth == 60

    flaky.gate.set()
    writer.close()
    assert sorted(rows(db)) == sorted(ids(61))
    assert writer.stats.written + writer.stats.dropped == 200


def test_unreadable_spill_lines_are_quarantined_and_the_rest_of_their_file_loaded(
    store: Store, db: Path, spill: Path, make_writer: Any
) -> None:
    spill.mkdir()
    good = orjson.dumps({"id": "tr900000", "started_at": 1.0, "alias": "demo"})
    (spill / "traces-1-1-1.jsonl").write_bytes(good + b'\n{"id": "half a rec\n')  # cut short by a crash
    (spill / "traces-2-1-1.jsonl").write_bytes(b'{"id": "x", "started_at": 1.0, "no_such_field": 1}\n')
    writer = make_writer(store)
    for i in range(10):
        writer.put(record(i))
    writer.close()

    assert sorted(rows(db)) == sorted(ids(10) | {"tr900000"})
    assert sorted(p.name for p in spill.iterdir()) == ["deadletter.jsonl"]  # kept there, not lost
    reasons = [e["reason"] for e in writer.files.deadletters()]
    assert len(reasons) == 2 and "traces-1-1-1.jsonl" in reasons[0] and "no_such_field" in reasons[1]
    assert (writer.stats.quarantined, writer.stats.reloaded) == (2, 1)


def test_a_spill_path_that_cannot_be_read_is_set_aside_and_the_writer_keeps_going(
    store: Store, db: Path, spill: Path, make_writer: Any
) -> None:
    (spill / "traces-1-1-1.jsonl").mkdir(parents=True)  # reading it raises IsADirectoryError
    writer = make_writer(store)
    for i in range(10):
        writer.put(record(i))
    wait_until(lambda: len(rows(db)) == 10, "the records after it to be written")
    writer.close()
    assert (spill / "traces-1-1-1.bad").is_dir()


def test_a_batch_that_can_be_neither_written_nor_spilled_is_counted_as_dropped(
    store: Store, db: Path, tmp_path: Path, make_writer: Any
) -> None:
    not_a_dir = tmp_path / "spill-is-a-file"
    not_a_dir.write_text("")
    flaky = FlakyStore(store)
    flaky.down.set()
    writer = make_writer(flaky, spill_dir=not_a_dir)
    writer.RETRY_DELAYS = FAST_RETRIES
    for i in range(5):
        writer.put(record(i))
    wait_until(lambda: writer.stats.dropped == 5, "the lost batch to be counted")

    flaky.down.clear()  # the writer is still alive: later records are written
    for i in range(5, 10):
        writer.put(record(i))
    writer.close()
    assert sorted(rows(db)) == sorted(ids(5, start=5))
    assert (writer.stats.written, writer.stats.dropped) == (5, 5)


class SwitchNotingStore(FlakyStore):
    """Notes the GIL's switch interval each time the writer hands it records."""

    def __init__(self, inner: Store) -> None:
        super().__init__(inner)
        self.switch: list[tuple[int, float]] = []  # (records, switch interval)

    def append_traces(self, records: Sequence[TraceRecord]) -> None:
        self.switch.append((len(records), sys.getswitchinterval()))
        super().append_traces(records)


def test_spills_load_back_with_a_short_gil_switch_interval_and_it_is_restored(
    store: Store, db: Path, spill: Path, make_writer: Any
) -> None:
    default = sys.getswitchinterval()
    SpillDir(spill).spill([record(i) for i in range(300)])  # as an outage leaves
    noting = SwitchNotingStore(store)
    writer = make_writer(noting)
    wait_until(lambda: writer.stats.reloaded == 300, "the spill to load back")
    writer.put(record(300))
    writer.close()

    assert noting.switch[0] == (300, RELOAD_SWITCH_S)  # the event loop waits at most this for the GIL
    assert noting.switch[-1] == (1, default)  # an ordinary batch: Python's own
    assert sys.getswitchinterval() == default
    assert sorted(rows(db)) == sorted(ids(301))
