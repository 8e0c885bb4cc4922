"""The SpanStore contract, over every SQL backend (SQLite and PostgreSQL): a trace's child spans
written in batches, read back whole and in order, never duplicated, made storable and bounded, and
deleted by trace, by tenant and by age in bounded statements."""

from __future__ import annotations

import time

import orjson
import pytest

from keel.store.protocols import Store
from keel.store.storable import MAX_SPAN_ATTRIBUTES, TAG
from keel.types import Span, Usage

NOW = time.time()


def span(trace: str, sid: str, *, at: float = NOW, tenant: str | None = "acme", parent: str | None = None) -> Span:
    return Span(trace, sid, parent or trace, "tool", f"step {sid}", at, at + 0.25, "ok", tenant, {"n": sid})


def test_spans_read_back_whole_and_in_start_order(store: Store) -> None:
    full = Span(
        "t1", "b", "a", "model", "openai/gpt-4o", NOW + 1, NOW + 1.5, "error", "acme",
        {"keel.attempt": 2, "nested": {"list": [1, "two", None]}, "flag": True}, Usage(10, 5, 2, 1, 3), 0.0125,
    )  # fmt: skip
    store.append_spans([full, span("t1", "a", at=NOW), span("t2", "a", at=NOW - 5)])

    got = store.trace_spans("t1")

    assert [s.span_id for s in got] == ["a", "b"]
    assert got[1] == full
    assert store.trace_spans("t2")[0].parent_id == "t2"
    assert store.trace_spans("nope") == []


def test_appending_again_never_duplicates(store: Store) -> None:
    batch = [span("t1", "a"), span("t1", "b"), span("t2", "a")]
    store.append_spans(batch)
    store.append_spans([*batch, span("t1", "c")])  # a retried batch, or a reloaded spill, plus one new
    store.append_spans([span("t1", "a"), span("t1", "a")])  # one id twice in a batch

    assert [s.span_id for s in store.trace_spans("t1")] == ["a", "b", "c"]
    assert len(store.trace_spans("t2")) == 1


def test_content_no_store_takes_is_made_storable_and_attributes_bounded(store: Store) -> None:
    odd = Span("t1", "a", "t1", "tool", "na\x00me", NOW, None, "ok", "acme", {"k": "v\ud800", "big": 2**70})
    huge = Span("t1", "b", "t1", "tool", "huge", NOW + 1, None, "ok", "acme", {"text": "x" * 100_000, "n": 1})
    store.append_spans([odd, huge])

    a, b = store.trace_spans("t1")

    assert (a.name, a.attributes["k"], a.attributes["big"]) == ("na\ufffdme", "v\ufffd", str(2**70))
    assert set(a.attributes[TAG].split(",")) == {"nul", "surrogate", "int"}
    assert len(orjson.dumps(b.attributes)) <= MAX_SPAN_ATTRIBUTES + 64
    assert (b.attributes["n"], b.attributes[TAG]) == (1, "size")
    assert b.attributes["text"].endswith("\u2026")


def test_spans_leave_with_their_traces_by_tenant_and_by_age(store: Store) -> None:
    store.append_spans(
        [span("t1", str(i)) for i in range(5)]
        + [span("t2", "a"), span("t3", "a", tenant="globex")]
        + [span(f"old{i}", "a", at=NOW - 100 * 86400) for i in range(7)]
        + [span("old-none", "a", at=NOW - 100 * 86400, tenant=None)]
        + [span("old-kept", "a", at=NOW - 100 * 86400, tenant="forever")]
    )

    assert store.delete_trace_spans(["t1", "missing"]) == 5
    assert store.trace_spans("t1") == [] and len(store.trace_spans("t2")) == 1

    rounds = []
    while n := store.delete_spans(limit=3, before=NOW - 30 * 86400, exclude=["forever"]):
        rounds.append(n)
    assert rounds == [3, 3, 2]  # bounded: never more than `limit` per statement; tenantless spans included
    assert len(store.trace_spans("old-kept")) == 1

    assert store.delete_spans(limit=100, tenant="acme") == 1  # t2's
    assert [len(store.trace_spans(t)) for t in ("t2", "t3", "old-kept")] == [0, 1, 1]
    with pytest.raises(ValueError):
        store.delete_spans(limit=10)  # neither a tenant nor a cut-off: refused
