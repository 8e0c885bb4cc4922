"""Traces with spans, end to end over real HTTP: the openai SDK → Keel → two fake upstreams, the first
failing. The call's attempts come back as `model` spans under the call (admin API, `keel traces show`,
an OTLP receiver with the right parent ids), a capability's spans join them, and a tenant purge and a
retention sweep take them away with their rows. A call with one attempt writes no span at all."""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from opentelemetry.proto.trace.v1.trace_pb2 import Status

from keel.store.protocols import TraceQuery
from keel.testing import FakeUpstream, Script
from keel.traces.genai import span_ids
from keel.traces.retention import RetentionPolicy, sweep
from keel.traces.spans import child_span
from keel.types import TraceRecord
from tests.conftest import Gateway, base_config, until
from tests.e2e.test_cli import keel
from tests.e2e.test_otel import Receiver, _handler, attrs

ASK: Any = [{"role": "user", "content": "hello"}]


@pytest.fixture
def collector() -> Iterator[Receiver]:
    """tests/e2e/test_otel.py's OTLP/HTTP receiver."""
    rx = Receiver()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(rx))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    rx.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield rx
    server.shutdown()
    server.server_close()


def spans_config(up: FakeUpstream, b: FakeUpstream, storage: str, tmp: Path, otel: str) -> dict[str, Any]:
    raw = base_config(up, storage, tmp)
    raw["providers"]["backup"] = {"type": "openai", "base_url": b.url + "/v1", "api_key": "sk-b"}
    raw["models"]["main"] = {"targets": [{"provider": "oai", "model": "gpt-4o-mini"}, {"provider": "backup", "model": "gpt-4o-mini"}]}  # fmt: skip
    raw["resilience"] = {"retries_per_target": 0, "backoff_ms": 10}
    raw["otel"] = {"endpoint": otel, "flush_interval_ms": 20}
    return raw


def call(gw: Gateway) -> str:
    """One chat call; the id of its trace (the x-keel-trace-id header)."""
    with openai.OpenAI(base_url=gw.base_url, api_key=gw.key, max_retries=0, timeout=10) as c:
        raw = c.chat.completions.with_raw_response.create(model="main", messages=ASK)
    return raw.headers["x-keel-trace-id"]


def admin(gw: Gateway, method: str, path: str) -> Any:
    r = httpx.request(method, gw.url + path, headers={"authorization": f"Bearer {gw.admin}"}, json={}, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def written(gw: Gateway, trace_id: str, spans: int) -> TraceRecord:
    """The trace row, once it and `spans` child spans are in the store."""
    store = gw.runtime.store
    assert until(lambda: store.get_trace(trace_id) is not None and len(store.trace_spans(trace_id)) >= spans)
    row = store.get_trace(trace_id)
    assert row is not None
    return row


def test_a_fallback_call_has_its_attempts_as_spans_read_back_exported_and_purged(
    make_gateway: Any, up: FakeUpstream, b: FakeUpstream, storage_url: str, tmp_path: Path, collector: Receiver
) -> None:
    gw = make_gateway(spans_config(up, b, storage_url, tmp_path, collector.url))
    plain = call(gw)  # one attempt: no span
    up.script(Script(status=503))  # the first target fails, the fallback answers
    failover = call(gw)
    record = written(gw, failover, 2)
    assert (record.attempts, record.fallback, record.provider) == (2, "target", "backup")

    # a capability's spans under the same call: a retrieval with a tool call below it
    retrieval = child_span(record, "retrieval", "docs", record.started_at, record.started_at + 0.01, span_id="r1")
    tool = child_span(record, "tool", "search", record.started_at, record.started_at + 0.005, parent_id="r1")
    gw.runtime.put_span(retrieval)
    gw.runtime.put_span(tool)
    written(gw, failover, 4)

    # the admin API: the call row as today, its spans beside it
    view = admin(gw, "GET", f"/api/traces/{failover}")
    assert view["id"] == failover and view["attempts"] == 2
    by_id = {s["span_id"]: s for s in view["spans"]}
    assert set(by_id) == {"attempt-1", "attempt-2", "r1", tool.span_id}
    first, second = by_id["attempt-1"], by_id["attempt-2"]
    assert (first["kind"], first["name"], first["status"], first["parent_id"]) == ("model", "oai/gpt-4o-mini", "error", failover)  # fmt: skip
    assert first["attributes"]["keel.error_kind"] == "overloaded" and first["cost_usd"] is None
    assert (second["name"], second["status"], second["cost_usd"]) == ("backup/gpt-4o-mini", "ok", record.cost_usd)
    assert second["usage"]["input_tokens"] == record.input_tokens
    assert by_id[tool.span_id]["parent_id"] == "r1" and by_id["r1"]["tenant"] == "t1"
    assert admin(gw, "GET", f"/api/traces/{plain}")["spans"] == []
    written(gw, plain, 0)
    assert gw.runtime.store.trace_spans(plain) == []  # the common call writes nothing more

    # `keel traces show`: today's fields, then the tree; --json carries the spans
    config = str(tmp_path / "keel.yaml")
    text = keel(tmp_path, "-c", config, "traces", "show", failover).stdout
    tree = text.split("\nspans:\n", 1)[1].splitlines()
    assert tree[0].split()[:3] == ["call", "chat", "main"]
    assert tree[1].split()[:2] == ["model", "oai/gpt-4o-mini"] and "error" in tree[1]
    assert [line.split()[0] for line in tree] == ["call", "model", "retrieval", "tool", "model"]
    assert [len(line) - len(line.lstrip()) for line in tree] == [2, 4, 4, 6, 4]  # indented by depth
    shown = json.loads(keel(tmp_path, "-c", config, "traces", "show", failover, "--json").stdout)
    assert {s["span_id"] for s in shown["spans"]} == set(by_id)

    # OTLP: the call's span and its children in one trace, each child under its parent
    exported = collector.wait_for(1 + 1 + 4)
    trace_id, call_span, _ = span_ids(record)
    mine = [s for s in exported if s.trace_id == trace_id]
    names = {attrs(s).get("keel.span_id", "call"): s for s in mine}
    assert set(names) == {"call", "attempt-1", "attempt-2", "r1", tool.span_id}
    assert names["call"].span_id == call_span and names["call"].parent_span_id == b""
    for child in ("attempt-1", "attempt-2", "r1"):
        assert names[child].parent_span_id == call_span, child
    assert names[tool.span_id].parent_span_id == names["r1"].span_id
    assert names["attempt-1"].status.code == Status.STATUS_CODE_ERROR
    assert names["attempt-2"].name == "chat backup/gpt-4o-mini" and names["r1"].name == "retrieval docs"

    # a tenant purge takes the spans with the rows
    report = admin(gw, "POST", "/api/tenants/t1/purge")["counts"]
    assert report["traces"] == 2 and report["spans"] == 4
    assert gw.runtime.store.trace_spans(failover) == []


def test_retention_removes_spans_with_their_rows(
    make_gateway: Any, up: FakeUpstream, b: FakeUpstream, storage_url: str, tmp_path: Path, collector: Receiver
) -> None:
    gw = make_gateway(spans_config(up, b, storage_url, tmp_path, collector.url))
    up.script(Script(status=503))
    trace_id = call(gw)
    written(gw, trace_id, 2)
    store = gw.runtime.store
    kept = RetentionPolicy(30, {})
    assert sweep(store, None, kept, time.time()).spans == 0  # young: kept
    report = sweep(store, None, kept, time.time() + 31 * 86400)  # a month later
    assert (report.traces, report.spans) == (1, 2)
    assert store.trace_spans(trace_id) == []
    assert store.list_traces(TraceQuery(since=0, until=time.time() + 10)) == []
