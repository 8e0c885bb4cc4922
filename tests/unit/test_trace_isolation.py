"""One record never stops trace writing: the writer against real SQLite and PostgreSQL stores.

A record the store refuses is isolated (the rest of its batch is written) and quarantined to the
dead-letter file with its reason; text no store takes is stored sanitised instead; a poisoned spill
file does not hold back the ones after it; whatever the loop raises, it restarts, and `health()`
says why it cannot write meanwhile. Faults come from the outside world only: record contents, spill
files on disk, and `FlakyStore` (the real store behind a switch).
"""

from __future__ import annotations

import sqlite3
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest

from keel.store.open import open_store
from keel.store.protocols import Store, TraceQuery, UsageQuery
from keel.store.storable import TAG, storable
from keel.traces.spill import ROTATED, SpillDir
from keel.traces.writer import TraceWriter
from keel.types import TraceRecord
from tests.unit import test_trace_writer as tw
from tests.unit.test_trace_writer import FAST_RETRIES, FlakyStore, ids, record, spill_files, wait_until

db, store, spill, make_writer = tw.db, tw.store, tw.spill, tw.make_writer  # its fixtures, used here too

TOO_BIG = 2**63  # fits orjson (u64), not a signed 64-bit column: both SQL stores refuse it as a count of attempts


@pytest.fixture
def real_store(storage_url: str) -> Iterator[Store]:
    s = open_store(storage_url)
    yield s
    s.close()


def stored_ids(store: Store) -> set[str]:
    return {r.id for r in store.list_traces(TraceQuery(since=0, until=time.time() + 60, limit=1000))}


def poisoned(i: int) -> TraceRecord:
    """A record the store refuses for its content (token counts are clamped; `attempts` is not)."""
    r = record(i)
    r.attempts = TOO_BIG
    return r


def deep(levels: int) -> Any:
    value: Any = "bottom"
    for _ in range(levels):
        value = {"d": value}
    return value


# ---- a record the store refuses ---------------------------------------------------------------


def test_a_refused_record_is_quarantined_and_the_rest_of_its_batch_written(
    real_store: Store, spill: Path, make_writer: Any
) -> None:
    writer = make_writer(real_store, batch_size=200, flush_interval=0.05)
    for i in range(200):
        writer.put(poisoned(i) if i == 57 else record(i))
    wait_until(lambda: writer.stats.quarantined == 1, "the refused record to be quarantined")
    writer.put(record(200))  # later records are unaffected
    writer.close()

    assert stored_ids(real_store) == ids(201) - {"tr000057"}
    [entry] = writer.files.deadletters()
    assert entry["record"]["id"] == "tr000057" and entry["record"]["attempts"] == TOO_BIG
    assert "UnstorableRecords" in entry["reason"] or "OverflowError" in entry["reason"]
    assert (writer.stats.written, writer.stats.spilled, writer.stats.dropped) == (200, 0, 0)
    assert writer.health() is None and writer.stats.last_error is not None


class Recording(FlakyStore):
    """Remembers the size of every batch it is asked to write."""

    def __init__(self, inner: Store) -> None:
        super().__init__(inner)
        self.sizes: list[int] = []

    def append_traces(self, records: Sequence[TraceRecord]) -> None:
        self.sizes.append(len(records))
        super().append_traces(records)


def test_a_store_that_is_away_still_spills_whole_batches(store: Store, spill: Path, make_writer: Any) -> None:
    """Isolation is for refused records: an outage is retried and spilled as before, never split."""
    flaky = Recording(store)
    flaky.down.set()
    writer = make_writer(flaky, batch_size=50)
    writer.RETRY_DELAYS = FAST_RETRIES
    for i in range(100):
        writer.put(record(i))
    wait_until(lambda: writer.stats.spilled == 100, "every batch to spill")
    batches = [len(p.read_bytes().splitlines()) for p in spill_files(spill)]
    assert set(flaky.sizes) <= set(batches) and writer.stats.quarantined == 0
    flaky.down.clear()
    writer.close()
    assert writer.stats.reloaded == 100 and stored_ids(store) == ids(100)


# ---- text no store takes: stored sanitised, never quarantined ---------------------------------


def test_text_no_store_takes_is_stored_sanitised_with_its_rollups(
    real_store: Store, make_writer: Any, storage_url: str
) -> None:
    bad = record(0)
    bad.tenant, bad.user, bad.feature, bad.session = "t\x00", "u\x00ser", "fe\ud800at", "s" * 3000
    bad.tags = {"k\x00": "v\x00", "big": 2**70, "lone": "\udc80", "deep": deep(300)}
    bad.request = {"messages": [{"role": "user", "content": "hi\x00 \ud83d"}], "metadata": deep(300)}
    bad.error_message, bad.cost_usd = "upstream said \x00", 0.5
    writer = make_writer(real_store)
    writer.put(bad)
    writer.put(record(1))
    writer.close()

    assert stored_ids(real_store) == ids(2)
    got = real_store.get_trace("tr000000")
    assert got is not None
    assert (got.tenant, got.user, got.feature) == ("t\ufffd", "u\ufffdser", "fe\ufffdat")
    assert got.session is not None and len(got.session) == 256 and got.session.endswith("\u2026")
    assert set(got.tags[TAG].split(",")) == {"nul", "surrogate", "int", "depth", "long"}
    assert got.tags["k\ufffd"] == "v\ufffd" and got.tags["big"] == str(2**70) and got.tags["lone"] == "\ufffd"
    assert got.request is not None and got.request["messages"][0]["content"] == "hi\ufffd \ufffd"
    assert got.error_message == "upstream said \ufffd"
    [row] = real_store.usage(UsageQuery(since=0, until=time.time() + 60, by="user", tenant="t\ufffd"))
    assert (row.group, row.calls, row.cost_usd) == ("u\ufffdser", 1, 0.5)
    assert (writer.stats.quarantined, writer.stats.dropped) == (0, 0)


def test_a_record_orjson_refuses_is_spilled_sanitised_during_an_outage(
    store: Store, db: Path, spill: Path, make_writer: Any
) -> None:
    flaky = FlakyStore(store)
    flaky.down.set()
    writer = make_writer(flaky)
    writer.RETRY_DELAYS = FAST_RETRIES
    bad = record(0)
    bad.tags = {"deep": deep(300), "lone": "\ud800"}
    writer.put(bad)
    wait_until(lambda: writer.stats.spilled == 1, "the record to spill")
    flaky.down.clear()
    writer.put(record(1))
    writer.close()
    got = store.get_trace("tr000000")
    assert got is not None and set(got.tags[TAG].split(",")) == {"depth", "surrogate"}
    assert stored_ids(store) == ids(2)


# ---- spills: a poisoned file never holds back the ones after it ------------------------------


def write_spill(spill: Path, name: str, lines: Sequence[bytes]) -> None:
    spill.mkdir(exist_ok=True)
    (spill / name).write_bytes(b"".join(line + b"\n" for line in lines))


def line(r: TraceRecord) -> bytes:
    return orjson.dumps({"id": r.id, "started_at": r.started_at, "alias": r.alias, "attempts": r.attempts})


def test_a_poisoned_spill_file_is_skipped_past_and_its_good_records_loaded(
    real_store: Store, spill: Path, make_writer: Any
) -> None:
    write_spill(spill, "traces-1-1-1.jsonl", [line(record(0)), line(poisoned(1)), b'{"id": "cut sh', line(record(2))])
    for n in range(2, 6):  # a whole outage's worth after it
        write_spill(spill, f"traces-{n}-1-1.jsonl", [line(record(i)) for i in range(n * 10, n * 10 + 10)])
    writer = make_writer(real_store)
    writer.close()

    assert stored_ids(real_store) == {"tr000000", "tr000002"} | ids(40, start=20)
    assert sorted(p.name for p in spill.iterdir()) == ["deadletter.jsonl"]
    entries = writer.files.deadletters()
    assert [e.get("record", {}).get("id") for e in entries] == [None, "tr000001"]  # the cut line, then the record
    assert (
        "unreadable spill line in traces-1-1-1.jsonl" in entries[0]["reason"] and entries[0]["line"] == '{"id": "cut sh'
    )
    assert "UnstorableRecords" in entries[1]["reason"] or "OverflowError" in entries[1]["reason"]
    assert (writer.stats.reloaded, writer.stats.quarantined, writer.stats.dropped) == (42, 2, 0)


class RefusesOne(FlakyStore):
    """A store that refuses any batch holding one record, raising `error`."""

    def __init__(self, inner: Store, bad_id: str, error: Exception) -> None:
        super().__init__(inner)
        self.bad_id = bad_id
        self.error = error

    def append_traces(self, records: Sequence[TraceRecord]) -> None:
        if any(r.id == self.bad_id for r in records):
            raise self.error
        self.inner.append_traces(records)


def test_a_spill_failing_for_an_unclassified_reason_is_split_once_the_store_takes_others(
    store: Store, spill: Path, make_writer: Any
) -> None:
    write_spill(spill, "traces-1-1-1.jsonl", [line(record(i)) for i in range(10)])
    write_spill(spill, "traces-2-1-1.jsonl", [line(record(i)) for i in range(10, 20)])
    unclassified = sqlite3.OperationalError("something went wrong (injected)")  # looks like an outage
    writer = make_writer(RefusesOne(store, "tr000003", unclassified))
    wait_until(lambda: writer.stats.quarantined == 1, "the record to be isolated")
    writer.close()
    assert stored_ids(store) == ids(20) - {"tr000003"}
    assert [e["record"]["id"] for e in writer.files.deadletters()] == ["tr000003"]
    assert not list(spill.glob("traces-*"))


def test_two_spill_files_failing_in_a_row_mean_the_store_is_away(store: Store, spill: Path) -> None:
    for n in range(1, 4):
        write_spill(spill, f"traces-{n}-1-1.jsonl", [line(record(n))])
    flaky = Recording(store)
    flaky.down.set()
    writer = TraceWriter(flaky, spill_dir=spill)  # not started: one reload pass, run here
    writer._reload_spills()
    assert flaky.sizes == [1, 1] and writer.stats.quarantined == 0  # the third file was not tried
    flaky.down.clear()
    writer._reload_spills()
    assert stored_ids(store) == {"tr000001", "tr000002", "tr000003"} and not spill_files(spill)


# ---- the dead letter: bounded, listed, requeued ------------------------------------------------


def test_the_dead_letter_stays_under_its_bound(spill: Path) -> None:
    files = SpillDir(spill, deadletter_max_bytes=65_536)
    big = record(0)
    big.request = {"content": "x" * 5000}  # ~5 kB per entry: under max/8, kept whole
    for i in range(40):
        big.id = f"tr{i:06d}"
        files.quarantine(big, "refused")
    sizes = [p.stat().st_size for p in spill.iterdir()]
    assert (spill / ROTATED).exists() and sum(sizes) <= 65_536
    huge = record(99)
    huge.request = {"content": "y" * 10_000}  # over max/8: the payload is left out, the facts kept
    files.quarantine(huge, "refused")
    last = files.deadletters()[-1]
    assert last["record"]["id"] == "tr000099" and last["record"]["request"] is None
    assert "payload omitted" in last["reason"]


def test_requeued_dead_letters_are_loaded_by_the_writer(store: Store, spill: Path, make_writer: Any) -> None:
    flaky = RefusesOne(store, "tr000001", ValueError("value out of range (injected)"))
    writer = make_writer(flaky, batch_size=10)
    for i in range(3):
        writer.put(poisoned(i) if i == 0 else record(i))
    wait_until(lambda: writer.stats.quarantined == 2, "both refused records to be quarantined")
    writer.close()
    assert stored_ids(store) == {"tr000002"}

    flaky.bad_id = "none"  # the fix: the store now takes tr000001; tr000000 is still refused
    assert SpillDir(spill).requeue() == (2, 0)
    assert not (spill / "deadletter.jsonl").exists()
    second = make_writer(flaky)
    second.close()
    assert stored_ids(store) == {"tr000001", "tr000002"}
    assert [e["record"]["id"] for e in second.files.deadletters()] == ["tr000000"]


# ---- the supervisor and health -----------------------------------------------------------------


class Exits(FlakyStore):
    """A store whose driver calls sys.exit() while `down` is set: in a thread, that ends it silently."""

    def append_traces(self, records: Sequence[TraceRecord]) -> None:
        self.entered.set()
        if self.down.is_set():
            sys.exit(1)
        self.inner.append_traces(records)


def test_the_writer_restarts_after_anything_its_loop_raises(store: Store, spill: Path, make_writer: Any) -> None:
    exits = Exits(store)
    exits.down.set()
    writer = make_writer(exits, batch_size=10)
    writer.RESTART_DELAYS = (0.05,)
    for i in range(10):
        writer.put(record(i))
    wait_until(lambda: writer.stats.restarts >= 2, "the loop to crash and restart")
    reason = writer.health()
    assert reason is not None and "SystemExit" in reason and "restarting" in reason
    assert writer.stats.spilled >= 10  # the batch in hand was kept on disk, not lost

    exits.down.clear()
    for i in range(10, 20):
        writer.put(record(i))
    wait_until(lambda: writer.health() is None and stored_ids(store) == ids(20), "the writer to recover")
    writer.close()
    assert writer.stats.dropped == 0 and not list(spill.glob("traces-*"))


def test_health_reports_a_stalled_store_write(store: Store, make_writer: Any) -> None:
    flaky = FlakyStore(store)
    flaky.gate.clear()
    writer = make_writer(flaky, stall_after=0.2)
    writer.put(record(0))
    assert flaky.entered.wait(5)
    wait_until(lambda: writer.health() is not None, "the stall to show")
    assert "stalled" in str(writer.health())
    flaky.gate.set()
    wait_until(lambda: writer.health() is None, "the write to return")


def test_health_reports_records_that_can_be_neither_written_nor_spilled(
    store: Store, tmp_path: Path, make_writer: Any
) -> None:
    not_a_dir = tmp_path / "spill-is-a-file"
    not_a_dir.write_text("")
    flaky = FlakyStore(store)
    flaky.down.set()
    writer = make_writer(flaky, spill_dir=not_a_dir)
    writer.RETRY_DELAYS = FAST_RETRIES
    writer.put(record(0))
    wait_until(lambda: writer.stats.dropped == 1, "the record to be lost")
    assert "losing records" in str(writer.health())
    flaky.down.clear()
    writer.put(record(1))
    wait_until(lambda: writer.health() is None, "a write to succeed again")


# ---- storable: the rewrite itself ----------------------------------------------------------------


def test_storable_returns_a_clean_record_itself_and_names_what_it_changed() -> None:
    clean = record(0)
    clean.request = {"messages": [{"role": "user", "content": "héllo ✓"}], "n": 2**63, "t": (1, 2)}
    assert storable(clean) is clean
    odd = record(1)
    odd.tags = {1: "one", "ok": ["a", "b\x00"]}
    got = storable(odd)
    assert got.tags == {"1": "one", "ok": ["a", "b\ufffd"], TAG: "key,nul"}
    assert odd.tags == {1: "one", "ok": ["a", "b\x00"]}  # the original is never changed
