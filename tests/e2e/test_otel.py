"""OpenTelemetry export, end to end: the official SDKs → Keel → a real OTLP/HTTP receiver that decodes the protobuf.

The receiver is an http.server on 127.0.0.1 speaking OTLP/HTTP: it accepts POST …/v1/traces with
application/x-protobuf, decodes ExportTraceServiceRequest with opentelemetry-proto, keeps the spans
and what each request looked like (path, headers), and can answer 503 a given number of times.
"""

from __future__ import annotations

import base64
import http.client
import http.server
import json
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest
import yaml
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from keel import config as keel_config
from keel.config import OtelConfig
from keel.errors import ConfigError
from keel.testing import FakeUpstream, Script
from keel.traces.genai import Upstream
from keel.traces.otel import SpanExporter, destination, parse_traceparent
from keel.types import ChatRequest, Message, TraceRecord
from tests.conftest import Gateway, base_config
from tests.e2e.test_serve_process import KEEL, bootstrap_key, free_port, wait_healthy
from tests.unit.test_trace_writer import wait_until

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"


# ---- the receiver --------------------------------------------------------------------------------


@dataclass
class Export:
    path: str
    headers: dict[str, str]
    spans: list[Span]
    resource: dict[str, Any]


@dataclass
class Receiver:
    url: str = ""
    exports: list[Export] = field(default_factory=list)
    fail_next: int = 0  # answer this many POSTs with 503 before accepting
    refused: int = 0
    status: int = 200  # the answer once fail_next is used up
    cond: threading.Condition = field(default_factory=threading.Condition)

    @property
    def spans(self) -> list[Span]:
        with self.cond:
            return [s for e in self.exports for s in e.spans]

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Span]:
        with self.cond:
            ok = self.cond.wait_for(lambda: sum(len(e.spans) for e in self.exports) >= count, timeout)
        assert ok, f"expected {count} spans, got {len(self.spans)} (refused {self.refused})"
        return self.spans


def _handler(rx: Receiver) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as a collector would

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["content-length"]))
            with rx.cond:
                if rx.fail_next > 0 or rx.status != 200:
                    rx.fail_next = max(0, rx.fail_next - 1)
                    rx.refused += 1
                    self._answer(503 if rx.status == 200 else rx.status)
                    return
            if self.headers["content-type"] != "application/x-protobuf":
                self._answer(415)
                return
            request = ExportTraceServiceRequest.FromString(body)
            spans = [s for rs in request.resource_spans for ss in rs.scope_spans for s in ss.spans]
            resource = {a.key: a.value.string_value for rs in request.resource_spans for a in rs.resource.attributes}
            with rx.cond:
                rx.exports.append(Export(self.path, {k.lower(): v for k, v in self.headers.items()}, spans, resource))
                rx.cond.notify_all()
            self._answer(200)

        def _answer(self, status: int) -> None:
            self.send_response(status)
            self.send_header("content-type", "application/x-protobuf")
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    rx = Receiver()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(rx))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    rx.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield rx
    server.shutdown()
    server.server_close()


def attrs(span: Span) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kv in span.attributes:
        v = kv.value
        kind = v.WhichOneof("value")
        out[kv.key] = [x.string_value for x in v.array_value.values] if kind == "array_value" else getattr(v, kind)
    return out


def otel_gateway(make_gateway: Any, up: FakeUpstream, tmp_path: Path, **otel: Any) -> Gateway:
    raw = base_config(up, f"sqlite:///{tmp_path}/keel.db", tmp_path)
    raw["otel"] = {"flush_interval_ms": 20, **otel}
    return make_gateway(raw)  # type: ignore[no-any-return]


@pytest.fixture
def gw(make_gateway: Any, up: FakeUpstream, tmp_path: Path, receiver: Receiver) -> Gateway:
    return otel_gateway(make_gateway, up, tmp_path, endpoint=receiver.url)


def client(gw: Gateway, **headers: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.base_url, api_key=gw.key, max_retries=0, timeout=10, default_headers=headers)


# ---- over real HTTP --------------------------------------------------------------------------------


def test_non_streamed_call_is_one_genai_client_span(gw: Gateway, up: FakeUpstream, receiver: Receiver) -> None:
    up.script(Script(usage={"prompt_tokens": 12, "completion_tokens": 3, "cached_tokens": 4}))
    with client(gw, **{"x-keel-feature": "search", "x-keel-session": "s-1"}) as c:
        raw = c.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hello there"}], max_tokens=50, temperature=0.2
        )
    raw.parse()
    [span] = receiver.wait_for(1)
    a = attrs(span)
    assert span.name == "chat gpt-4o-mini"
    assert span.kind == Span.SpanKind.SPAN_KIND_CLIENT
    assert span.status.code == Status.StatusCode.STATUS_CODE_UNSET
    assert len(span.trace_id) == 16 and len(span.span_id) == 8 and span.parent_span_id == b""
    assert span.end_time_unix_nano > span.start_time_unix_nano
    assert a["gen_ai.operation.name"] == "chat"
    assert a["gen_ai.provider.name"] == "openai" and a["gen_ai.system"] == "openai"
    assert (a["gen_ai.request.model"], a["gen_ai.response.model"]) == ("gpt-4o-mini", "gpt-4o-mini")
    assert a["gen_ai.response.id"].startswith("chatcmpl")
    assert (a["gen_ai.usage.input_tokens"], a["gen_ai.usage.output_tokens"]) == (12, 3)
    assert a["gen_ai.usage.cache_read.input_tokens"] == 4
    assert a["gen_ai.response.finish_reasons"] == ["stop"]
    assert (a["gen_ai.request.max_tokens"], a["gen_ai.request.temperature"]) == (50, 0.2)
    assert a["server.address"] == "127.0.0.1" and a["server.port"] == int(up.url.rsplit(":", 1)[1])
    assert a["gen_ai.conversation.id"] == "s-1" and a["keel.session"] == "s-1"
    assert a["keel.trace_id"] == raw.headers["x-keel-trace-id"]
    assert (a["keel.tenant"], a["keel.feature"], a["keel.alias"], a["keel.attempts"]) == (
        "t1",
        "search",
        "gpt-4o-mini",
        1,
    )
    assert a["keel.key_id"] == gw.traces()[0].key_id and a["keel.cost_usd"] > 0
    assert a["keel.fallback"] == "primary"
    assert "error.type" not in a and "gen_ai.response.time_to_first_chunk" not in a
    assert "gen_ai.input.messages" not in a and "gen_ai.output.messages" not in a  # capture_content is off
    export = receiver.exports[0]
    assert export.path == "/v1/traces" and export.resource["service.name"] == "keel"
    values = json.dumps([str(kv) for kv in span.attributes])
    assert gw.key not in values and "SECRET" not in values  # neither the virtual key nor the upstream's


def test_streamed_call_has_time_to_first_chunk(gw: Gateway, up: FakeUpstream, receiver: Receiver) -> None:
    up.script(Script(ttft=0.05))
    with client(gw) as c:
        chunks = list(
            c.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "stream"}], stream=True
            )
        )
    assert chunks
    [span] = receiver.wait_for(1)
    a = attrs(span)
    assert a["gen_ai.request.stream"] is True
    assert 0.05 <= a["gen_ai.response.time_to_first_chunk"] < 5
    assert a["keel.ttft_ms"] == pytest.approx(a["gen_ai.response.time_to_first_chunk"] * 1000)


def test_failed_call_is_an_error_span(gw: Gateway, up: FakeUpstream, receiver: Receiver) -> None:
    up.script(Script(status=400))
    with client(gw) as c, pytest.raises(openai.BadRequestError):
        c.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}])
    [span] = receiver.wait_for(1)
    a = attrs(span)
    assert span.status.code == Status.StatusCode.STATUS_CODE_ERROR and span.status.message
    assert a["error.type"] == "bad_request" and a["keel.status"] == "error"


def test_caller_traceparent_is_joined_and_invalid_one_ignored(gw: Gateway, receiver: Receiver) -> None:
    traceparent = f"00-{TRACE_ID}-{PARENT_ID}-01"
    with client(gw, traceparent=traceparent, tracestate="vendor=abc") as c:
        c.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}])
    with client(gw, traceparent=f"00-{'0' * 32}-{PARENT_ID}-01", tracestate="vendor=abc") as c:
        c.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "y"}])
    joined, fresh = sorted(receiver.wait_for(2), key=lambda s: s.start_time_unix_nano)
    assert joined.trace_id.hex() == TRACE_ID and joined.parent_span_id.hex() == PARENT_ID
    assert joined.trace_state == "vendor=abc" and joined.span_id.hex() != PARENT_ID
    assert fresh.trace_id.hex() not in (TRACE_ID, "0" * 32) and fresh.parent_span_id == b"" and fresh.trace_state == ""


def test_anthropic_edge_honours_traceparent(gw: Gateway, receiver: Receiver) -> None:
    headers = {"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"}
    with anthropic.Anthropic(base_url=gw.url, api_key=gw.key, max_retries=0, default_headers=headers) as c:
        c.messages.create(model="claude", max_tokens=20, messages=[{"role": "user", "content": "hi"}])
    [span] = receiver.wait_for(1)
    a = attrs(span)
    assert span.trace_id.hex() == TRACE_ID and span.parent_span_id.hex() == PARENT_ID
    assert a["gen_ai.provider.name"] == "anthropic" and a["gen_ai.operation.name"] == "chat"
    assert a["gen_ai.request.max_tokens"] == 20


def test_content_only_when_enabled(make_gateway: Any, up: FakeUpstream, tmp_path: Path, receiver: Receiver) -> None:
    gw = otel_gateway(make_gateway, up, tmp_path, endpoint=receiver.url, capture_content=True)
    with client(gw) as c:
        c.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello there"}],
        )
    [span] = receiver.wait_for(1)
    a = attrs(span)
    assert json.loads(a["gen_ai.input.messages"]) == [
        {"role": "system", "parts": [{"type": "text", "content": "be brief"}]},
        {"role": "user", "parts": [{"type": "text", "content": "hello there"}]},
    ]
    assert json.loads(a["gen_ai.output.messages"]) == [
        {"role": "assistant", "parts": [{"type": "text", "content": "echo: hello there"}], "finish_reason": "stop"}
    ]


def test_embeddings_span(gw: Gateway, receiver: Receiver) -> None:
    with client(gw) as c:
        c.embeddings.create(model="embed", input=["a", "b"])
    [span] = receiver.wait_for(1)
    assert span.name == "embeddings embed" and attrs(span)["gen_ai.operation.name"] == "embeddings"


def test_cache_outcome_is_an_attribute(make_gateway: Any, up: FakeUpstream, tmp_path: Path, receiver: Receiver) -> None:
    raw = base_config(up, f"sqlite:///{tmp_path}/keel.db", tmp_path)
    raw["cache"] = {"enabled": True, "ttl_s": 60, "url": "memory://"}
    raw["otel"] = {"endpoint": receiver.url, "flush_interval_ms": 20}
    gw = make_gateway(raw)
    with client(gw) as c:
        for _ in range(2):
            c.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "same question"}], temperature=0
            )  # deterministic: cacheable
    first, second = sorted(receiver.wait_for(2), key=lambda s: s.start_time_unix_nano)
    assert (attrs(first)["keel.cache"], attrs(second)["keel.cache"]) == ("miss", "hit")


def test_receiver_503s_are_retried(gw: Gateway, receiver: Receiver) -> None:
    receiver.fail_next = 2
    with client(gw) as c:
        c.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}])
    assert len(receiver.wait_for(1)) == 1
    assert receiver.refused == 2
    exporter = gw.runtime.exporter
    assert exporter is not None
    deadline = time.monotonic() + 5
    while exporter.stats.exported < 1 and time.monotonic() < deadline:  # the receiver stores before it answers
        time.sleep(0.01)
    assert (exporter.stats.exported, exporter.stats.failed) == (1, 0)
    ready = httpx.get(gw.url + "/readyz").json()
    assert (ready["otel_spans_exported"], ready["otel_spans_dropped"], ready["otel_spans_failed"]) == (1, 0, 0)


def test_sigterm_sends_what_is_queued(tmp_path: Path, receiver: Receiver) -> None:
    """`keel serve` as a real process: spans still queued (long flush interval) leave before exit."""
    port, n = free_port(), 20
    config = {
        "server": {"port": port},
        "storage": {"url": f"sqlite:///{tmp_path}/k.db"},
        "traces": {"spill_dir": str(tmp_path / "spill")},
        "otel": {"endpoint": receiver.url, "flush_interval_ms": 600_000, "batch_size": 1000},
        "providers": {"sim": {"type": "simulated"}},
        "models": {"demo": {"targets": [{"provider": "sim", "model": "simulated-1"}]}},
    }
    (tmp_path / "keel.yaml").write_text(yaml.safe_dump(config))
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([*KEEL, "serve"], cwd=tmp_path, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
    try:
        url = f"http://127.0.0.1:{port}"
        key = bootstrap_key(proc, log)
        wait_healthy(proc, url, log)
        with openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0, timeout=10) as c:
            for i in range(n):
                c.chat.completions.create(model="demo", messages=[{"role": "user", "content": f"call {i}"}])
        assert receiver.spans == []  # nothing sent yet: the flush interval is ten minutes
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, log.read_text()[-2000:]
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    assert len(receiver.spans) == n and len(receiver.exports) == 1
    assert {attrs(s)["gen_ai.provider.name"] for s in receiver.spans} == {"simulated"}


# ---- presets: the receiver sees each backend's path and auth headers --------------------------------


@pytest.mark.parametrize(
    ("otel", "path", "expected"),
    [
        (
            {"preset": "langfuse", "public_key": "pk-lf-1", "secret_key": "sk-lf-2"},
            "/api/public/otel/v1/traces",
            {"authorization": "Basic " + base64.b64encode(b"pk-lf-1:sk-lf-2").decode()},
        ),
        ({"preset": "phoenix", "api_key": "phx-3"}, "/v1/traces", {"authorization": "Bearer phx-3"}),
        ({"preset": "mlflow", "experiment_id": "42"}, "/v1/traces", {"x-mlflow-experiment-id": "42"}),
        ({"headers": {"X-Team": "${TEAM_TOKEN:-from-env}"}}, "/v1/traces", {"x-team": "from-env"}),
    ],
)
def test_presets_reach_their_paths_with_their_headers(
    make_gateway: Any,
    up: FakeUpstream,
    tmp_path: Path,
    receiver: Receiver,
    otel: dict[str, Any],
    path: str,
    expected: dict[str, str],
) -> None:
    gw = otel_gateway(make_gateway, up, tmp_path, endpoint=receiver.url, **otel)
    with client(gw) as c:
        c.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}])
    receiver.wait_for(1)
    export = receiver.exports[0]
    assert export.path == path
    assert {k: export.headers.get(k) for k in expected} == expected


def test_full_path_is_kept_and_langfuse_base_gets_its_path() -> None:
    full = destination(OtelConfig(endpoint="http://c:4318/custom/v1/traces"))
    assert full.url == "http://c:4318/custom/v1/traces"
    lf = destination(
        OtelConfig(endpoint="https://lf.example/api/public/otel", preset="langfuse", public_key="p", secret_key="s")
    )
    assert lf.url == "https://lf.example/api/public/otel/v1/traces"
    assert destination(OtelConfig(preset="langfuse", public_key="p", secret_key="s")).url.startswith(
        "https://cloud.langfuse.com/"
    )
    assert "authorization" not in repr(lf) and "Basic" not in repr(lf)  # credentials stay out of repr


# ---- the exporter on its own: flush on close, drops when full, 4xx not retried ---------------------


def record(n: int) -> tuple[TraceRecord, ChatRequest]:
    r = TraceRecord(id=f"rec{n}", started_at=time.time(), alias="a", provider="p", latency_ms=5.0, tenant="t")
    return r, ChatRequest(model="a", messages=(Message("user", "hi"),))


def exporter(url: str, **kw: Any) -> SpanExporter:
    cfg = OtelConfig(endpoint=url, **kw)
    return SpanExporter(cfg, {"p": Upstream("openai", "127.0.0.1", 1)})


def test_close_flushes_what_is_queued(receiver: Receiver) -> None:
    ex = exporter(receiver.url, flush_interval_ms=60_000, batch_size=1000)
    ex.start()
    for n in range(25):
        ex.put(*record(n))
    ex.close()
    assert len(receiver.spans) == 25 and ex.stats.exported == 25
    assert len(receiver.exports) == 1  # one batch
    assert {attrs(s)["keel.trace_id"] for s in receiver.spans} == {f"rec{n}" for n in range(25)}


def test_full_queue_drops_and_counts(receiver: Receiver) -> None:
    ex = exporter(receiver.url, queue_size=3, batch_size=2)
    for n in range(5):
        ex.put(*record(n))  # not started: nothing drains
    assert (ex.depth, ex.stats.dropped) == (3, 2)
    ex.start()
    ex.close()
    assert ex.stats.exported == 3 and len(receiver.exports) == 2  # batches of at most 2


def test_refusal_is_not_retried_and_outage_gives_up(receiver: Receiver) -> None:
    receiver.status = 401
    ex = exporter(receiver.url, retries=3)
    ex.start()
    ex.put(*record(1))
    ex.close()
    assert (ex.stats.exported, ex.stats.failed, receiver.refused) == (0, 1, 1)
    receiver.status, receiver.fail_next = 200, 100
    ex = exporter(receiver.url, retries=2)
    ex.BACKOFF_S = 0.01
    ex.start()
    ex.put(*record(2))
    ex.close()
    assert (ex.stats.failed, receiver.refused) == (1, 4)  # 1 + (1 + 2 retries)


def test_unreachable_receiver_never_raises() -> None:
    ex = exporter("http://127.0.0.1:9", retries=1)  # discard port: connection refused
    ex.BACKOFF_S = 0.01
    ex.start()
    ex.put(*record(1))
    ex.close()
    assert (ex.stats.exported, ex.stats.failed) == (0, 1)


def test_a_header_value_http_client_refuses_fails_the_export_not_the_exporter(receiver: Receiver) -> None:
    """A token read from a file ends with a newline: http.client refuses to send it (ValueError)."""
    ex = exporter(receiver.url, headers={"x-token": "s3cret\n"}, flush_interval_ms=10)
    ex.start()
    ex.put(*record(1))
    wait_until(lambda: ex.stats.failed == 1, "the export to fail")
    ex.put(*record(2))
    wait_until(lambda: ex.stats.failed == 2, "the next export to be tried too")
    assert ex.health() is None and ex.stats.restarts == 0
    ex.close()


class _CrashingTransport:
    """http.client's request raising what no one expects (as a buggy transport might), while `on`."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.on = True
        real = http.client.HTTPConnection.request

        def request(conn: http.client.HTTPConnection, *args: Any, **kwargs: Any) -> None:
            if self.on:
                raise SystemExit("transport gave up (injected)")
            real(conn, *args, **kwargs)

        monkeypatch.setattr(http.client.HTTPConnection, "request", request)


def test_the_exporter_restarts_after_anything_its_loop_raises(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    crashing = _CrashingTransport(monkeypatch)
    ex = exporter(receiver.url, flush_interval_ms=60_000, batch_size=1)  # a full batch wakes the thread
    ex.RESTART_DELAYS = (0.05,)
    ex.start()
    ex.put(*record(1))
    wait_until(lambda: ex.stats.restarts == 1, "the loop to crash and restart")
    assert "SystemExit at" in str(ex.health()) and "transport gave up" not in str(ex.health())
    assert ex.stats.failed == 1  # the batch in hand, counted
    crashing.on = False
    ex.put(*record(2))
    receiver.wait_for(1)
    wait_until(lambda: ex.health() is None, "a drain to complete")
    ex.close()
    assert (ex.stats.exported, ex.stats.failed, ex.stats.restarts) == (1, 1, 1)


def test_readyz_and_metrics_show_a_crashed_exporter(
    make_gateway: Any, up: FakeUpstream, tmp_path: Path, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    gw = otel_gateway(make_gateway, up, tmp_path, endpoint=receiver.url)
    assert gw.runtime.exporter is not None
    gw.runtime.exporter.RESTART_DELAYS = (60.0,)  # stays down for the test; close cuts the wait short
    _CrashingTransport(monkeypatch)
    client(gw).chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    wait_until(lambda: gw.runtime.exporter is not None and gw.runtime.exporter.stats.restarts == 1, "the crash")
    body = httpx.get(gw.url + "/readyz").json()
    assert body["otel_exporter"].startswith("crashed (SystemExit at") and body["otel_restarts"] == 1
    assert body["status"] == "ready"  # spans are best effort: the trace writer decides readiness
    scrape = httpx.get(gw.url + "/metrics").text
    assert "keel_otel_exporter_up 0" in scrape and "keel_otel_exporter_restarts_total 1" in scrape


def test_config_refuses_header_values_http_cannot_carry_without_echoing_them() -> None:
    bad = err_paths({"endpoint": "http://x", "headers": {"authorization": "Bearer s3cret\n", "bad name": "v"}})
    assert "line break" in bad["otel.headers.authorization"] and "s3cret" not in str(bad)
    assert "header name" in bad["otel.headers.bad name"]
    assert "otel.api_key" in err_paths({"preset": "phoenix", "api_key": "k\r\n"})


# ---- pure pieces ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "parsed"),
    [
        (f"00-{TRACE_ID}-{PARENT_ID}-01", (TRACE_ID, PARENT_ID)),
        (f" 00-{TRACE_ID}-{PARENT_ID}-00 ", (TRACE_ID, PARENT_ID)),
        (f"01-{TRACE_ID}-{PARENT_ID}-01-future", (TRACE_ID, PARENT_ID)),  # a later version may add fields
        (f"00-{TRACE_ID}-{PARENT_ID}-01-extra", None),  # version 00 has exactly four
        (f"ff-{TRACE_ID}-{PARENT_ID}-01", None),
        (f"00-{TRACE_ID.upper()}-{PARENT_ID}-01", None),
        (f"00-{'0' * 32}-{PARENT_ID}-01", None),
        (f"00-{TRACE_ID}-{'0' * 16}-01", None),
        (f"00-{TRACE_ID[:-1]}-{PARENT_ID}-01", None),
        ("garbage", None),
        ("", None),
    ],
)
def test_parse_traceparent(header: str, parsed: tuple[str, str] | None) -> None:
    assert parse_traceparent(header) == parsed


def err_paths(otel: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(ConfigError) as info:
        keel_config.parse({"otel": otel}, {})
    return {i.path: f"{i.message} | {i.fix}" for i in info.value.issues}


def test_config_errors_name_key_and_fix() -> None:
    bad = err_paths({"preset": "datadog"})
    assert "langfuse" in bad["otel.preset"] and "phoenix" in bad["otel.preset"] and "mlflow" in bad["otel.preset"]
    missing = err_paths({"preset": "langfuse", "public_key": "pk"})
    assert list(missing) == ["otel.secret_key"] and "set otel.secret_key" in missing["otel.secret_key"]
    assert "otel.experiment_id" in err_paths({"preset": "mlflow"})
    stray = err_paths({"preset": "phoenix", "experiment_id": "1"})
    assert "mlflow" in stray["otel.experiment_id"]
    assert "otel.endpoint" in err_paths({"endpoint": "localhost:4318"})
    assert "otel.batchsize" in err_paths({"endpoint": "http://x", "batchsize": 3})
    ok = keel_config.parse({"otel": {"preset": "phoenix"}}, {}).otel  # phoenix's api key is optional
    assert ok.enabled and destination(ok).url == "http://localhost:6006/v1/traces"
    assert not keel_config.parse({}, {}).otel.enabled
