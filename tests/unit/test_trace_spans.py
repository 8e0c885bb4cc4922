"""Child spans through the trace writer against a real SQLite store: the same queue, batches, spill files
and dead letter as records; a call's attempts become spans only when it made more than one; and the
pure pieces (attempts as spans, the tree) on their own."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest

from keel.config import RedactionConfig
from keel.store.open import open_store
from keel.store.protocols import Store
from keel.traces.redaction import Redactor
from keel.traces.spans import attempt_spans, child_span, tree, tree_lines
from keel.traces.spill import SpillDir, parse_record, record_line
from keel.traces.writer import TraceWriter
from keel.types import Span, TraceRecord, Usage
from tests.conftest import until

T0 = 1_700_000_000.0


def record(i: int, attempts: int = 1) -> TraceRecord:
    log: list[dict[str, Any]] = [
        {"level": "primary", "target": f"p{n}/m", "outcome": "error", "kind": "overloaded", "ms": 100.0}
        for n in range(attempts - 1)
    ]
    log.append({"level": "target" if attempts > 1 else "primary", "target": "last/m", "outcome": "ok"})
    return TraceRecord(
        id=f"tr{i:06d}", started_at=T0, tenant="acme", alias="demo", attempts=attempts, attempt_log=log,
        latency_ms=100.0 * attempts + 50, input_tokens=7, output_tokens=3, cost_usd=0.002,
    )  # fmt: skip


class DownStore:
    """The real store, whose trace and span writes fail while `down` is set."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.down = threading.Event()

    def append_traces(self, records: Sequence[TraceRecord]) -> None:
        if self.down.is_set():
            raise sqlite3.OperationalError("disk I/O error (injected)")
        self.inner.append_traces(records)

    def append_spans(self, spans: Sequence[Span]) -> None:
        if self.down.is_set():
            raise sqlite3.OperationalError("disk I/O error (injected)")
        self.inner.append_spans(spans)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = open_store(f"sqlite:///{tmp_path}/t.db")
    yield s
    s.close()


def writer(store: Any, spill: Path, **options: Any) -> TraceWriter:
    w = TraceWriter(store, spans=store, spill_dir=spill, flush_interval=0.01, **options)
    w.RETRY_DELAYS = (0.001,)
    w.start()
    return w


def test_only_calls_with_more_than_one_attempt_get_attempt_spans(store: Store, tmp_path: Path) -> None:
    w = writer(store, tmp_path / "spill")
    for i in range(100):
        w.put(record(i))  # the common call: one attempt
    w.put(record(100, attempts=3))
    w.close()

    assert (w.stats.written, w.stats.spans) == (101, 3)
    assert all(store.trace_spans(f"tr{i:06d}") == [] for i in range(100))
    spans = store.trace_spans("tr000100")
    assert [(s.span_id, s.kind, s.name, s.status, s.parent_id) for s in spans] == [
        ("attempt-1", "model", "p0/m", "error", "tr000100"),
        ("attempt-2", "model", "p1/m", "error", "tr000100"),
        ("attempt-3", "model", "last/m", "ok", "tr000100"),
    ]
    times = [t - T0 for s in spans for t in (s.started_at, s.ended_at or 0)]
    assert times == pytest.approx([0, 0.1, 0.1, 0.2, 0.2, 0.35], abs=1e-6)  # laid end to end
    assert (spans[2].usage, spans[2].cost_usd, spans[0].cost_usd) == (Usage(7, 3), 0.002, None)


def test_put_spans_are_written_and_a_writer_without_a_span_store_drops_them(store: Store, tmp_path: Path) -> None:
    r = record(1)
    w = writer(store, tmp_path / "spill")
    w.put(r)
    w.put_span(child_span(r, "tool", "search", T0, T0 + 0.5, span_id="s1", attributes={"q": "x"}))
    w.close()
    assert [(s.span_id, s.kind, s.tenant, s.attributes) for s in store.trace_spans(r.id)] == [
        ("s1", "tool", "acme", {"q": "x"})
    ]

    plain = TraceWriter(store, spill_dir=tmp_path / "spill2", flush_interval=0.01)  # as before spans: records only
    plain.start()
    plain.put(record(2, attempts=2))
    plain.put_span(child_span(record(2), "tool", "search", T0, span_id="s2"))
    plain.close()
    assert plain.stats.written == 1 and store.trace_spans("tr000002") == []


def test_spans_spill_while_the_store_is_down_and_load_back_once_per_span(store: Store, tmp_path: Path) -> None:
    down = DownStore(store)
    down.down.set()
    spill = tmp_path / "spill"
    w = writer(down, spill)
    r = record(5, attempts=2)
    w.put(r)
    w.put_span(child_span(r, "retrieval", "docs", T0, span_id="r1"))
    assert until(lambda: w.stats.spilled >= 2)
    lines = [orjson.loads(line) for p in sorted(spill.glob("traces-*.jsonl")) for line in p.read_bytes().splitlines()]
    assert {"span"} in [set(x) for x in lines]  # a span's line; the attempts are derived again, not spilled
    w.close()  # still down: what is spilled stays spilled
    assert store.get_trace(r.id) is None

    down.down.clear()
    again = writer(down, spill)  # a new process loads the spills back
    again.close()
    assert store.get_trace(r.id) is not None
    assert [s.span_id for s in store.trace_spans(r.id)] == ["attempt-1", "r1", "attempt-2"]
    assert list(spill.glob("traces-*.jsonl")) == []


def test_a_span_round_trips_through_spill_lines_and_the_dead_letter(tmp_path: Path) -> None:
    s = child_span(record(1), "score", "judge", T0, T0 + 1, status="error", usage=Usage(1, 2), cost_usd=0.5)
    assert parse_record(record_line(s)) == s
    files = SpillDir(tmp_path)
    files.quarantine(s, "refused (test)")
    (entry,) = files.deadletters()
    assert entry["span"]["span_id"] == s.span_id and entry["reason"] == "refused (test)"
    assert files.requeue() == (1, 0)
    items, bad = files.read(files.spills()[0])
    assert (items, bad) == ([s], [])


def test_span_attributes_are_redacted_before_they_are_written(store: Store, tmp_path: Path) -> None:
    redactor = Redactor(RedactionConfig(detectors=["emails"]))
    r = record(1)
    w = writer(store, tmp_path / "spill", scrub_span=redactor.scrub_span)
    w.put(r)
    w.put_span(child_span(r, "tool", "mail", T0, span_id="m", attributes={"to": "ann@example.com", "n": 1}))
    w.close()
    (got,) = store.trace_spans(r.id)
    assert "ann@example.com" not in orjson.dumps(got.attributes).decode() and got.attributes["n"] == 1


# ---- pure pieces --------------------------------------------------------------------------------


def test_attempts_become_spans_only_past_one_and_skipped_targets_are_not_attempts() -> None:
    assert attempt_spans(record(1)) == []
    skipped = record(2)
    assert skipped.attempt_log is not None
    skipped.attempt_log.insert(0, {"level": "primary", "target": "x/m", "outcome": "skipped", "why": "breaker open"})
    assert attempt_spans(skipped) == []  # one real attempt
    resumed = record(3, attempts=2)
    assert resumed.attempt_log is not None
    resumed.attempt_log[0] |= {"outcome": "failed mid-stream", "input_tokens": 4, "output_tokens": 1, "cost_usd": 0.001}
    first, second = attempt_spans(resumed)
    assert (first.usage, first.cost_usd, first.status) == (Usage(4, 1), 0.001, "error")
    assert (second.usage, second.cost_usd) == (None, None)  # billed attempts carry their own bill only
    assert attempt_spans(resumed) == [first, second]  # the same ids every time: rewriting is idempotent


def test_the_tree_nests_children_in_start_order_and_keeps_orphans_in_view() -> None:
    r = record(1)
    a = child_span(r, "retrieval", "a", T0 + 1, T0 + 2, span_id="a")
    a1 = child_span(r, "tool", "a1", T0 + 1.5, span_id="a1", parent_id="a")
    b = child_span(r, "model", "b", T0, T0 + 0.25, span_id="b", cost_usd=0.25)
    lost = child_span(r, "job", "lost", T0 + 3, span_id="lost", parent_id="gone")
    loop = [child_span(r, "tool", "x", T0, span_id="x", parent_id="y"), child_span(r, "tool", "y", T0, span_id="y", parent_id="x")]  # fmt: skip
    assert [(d, s.span_id) for d, s in tree(r.id, [a1, a, lost, b])] == [(1, "b"), (1, "a"), (2, "a1"), (1, "lost")]
    assert {s.span_id for _, s in tree(r.id, loop)} == {"x", "y"}
    lines = tree_lines(r, [a, a1, b])
    assert lines[0].startswith("call chat demo") and lines[1].startswith("  model b")
    assert "250.0 ms" in lines[1] and "$0.250000" in lines[1] and lines[3].startswith("    tool a1")
    assert time.time() > T0
