"""OpenTelemetry export: every call leaves as one GenAI client span over OTLP/HTTP (protobuf).

The request path only appends to a bounded deque: `put` never blocks and never raises, and a full
queue drops the span and counts it. One thread batches (up to `batch_size` spans, or every flush
interval), encodes with the generated `opentelemetry-proto` classes (imported only when export is
configured, never at `import keel`) and POSTs over one keep-alive connection, retrying 429, 5xx and
connection errors with backoff. `close` sends what is queued before it returns (the SIGTERM path).
Whatever the loop raises, a supervisor counts the batch in hand as failed and starts it again;
`health()` says so meanwhile (/readyz, /metrics). A crash is logged by type and place only: its
message may quote a header value.
Header values of the destination are never logged; provider and virtual keys never reach a span:
the exporter thread redacts each record (and captured messages) with the same `Redactor` as the
trace writer before mapping it.
What a span says is `keel.traces.genai`; this module is where it goes and how. A call's child spans
(its attempts when it made more than one, derived here on this thread; spans a capability emits with
`put_span`) go in the same batches, under the call's span.
"""

from __future__ import annotations

import base64
import http.client
import logging
import re
import ssl
import threading
import time
import traceback
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol
from urllib.parse import urlsplit

from keel.config import OtelConfig
from keel.errors import ConfigError, ConfigIssue
from keel.traces.genai import AttrValue, SpanData, Upstream, child_span_data, span_data
from keel.traces.redaction import Redactor
from keel.traces.spans import attempt_spans
from keel.types import ChatRequest, EmbeddingRequest, Span, TraceRecord

if TYPE_CHECKING:
    from opentelemetry.proto.common.v1.common_pb2 import KeyValue

log = logging.getLogger("keel.otel")

# ---- where spans go -----------------------------------------------------------------------------

PRESET_BASES = {
    "langfuse": "https://cloud.langfuse.com",
    "phoenix": "http://localhost:6006",
    "mlflow": "http://localhost:5000",
}
PRESET_PREFIXES = {"langfuse": "/api/public/otel"}  # before /v1/traces


@dataclass(frozen=True, slots=True)
class Destination:
    url: str  # the full OTLP/HTTP traces URL
    headers: dict[str, str] = field(repr=False)  # may hold credentials: never logged


def destination(cfg: OtelConfig) -> Destination:
    """The traces URL and headers for `cfg`: a preset fills the path and the auth header's shape."""
    base = (cfg.endpoint or PRESET_BASES[cfg.preset or ""]).rstrip("/")
    if not base.endswith("/v1/traces"):
        prefix = PRESET_PREFIXES.get(cfg.preset or "", "")
        if prefix and not base.endswith(prefix):
            base += prefix
        base += "/v1/traces"
    headers = {"content-type": "application/x-protobuf", **_preset_headers(cfg)}
    headers.update({k.lower(): v for k, v in cfg.headers.items()})  # the operator's own headers win
    return Destination(base, headers)


def _preset_headers(cfg: OtelConfig) -> dict[str, str]:
    if cfg.preset == "langfuse":
        token = base64.b64encode(f"{cfg.public_key}:{cfg.secret_key}".encode()).decode()
        return {"authorization": f"Basic {token}", "x-langfuse-ingestion-version": "4"}
    if cfg.preset == "phoenix" and cfg.api_key:
        return {"authorization": f"Bearer {cfg.api_key}"}
    if cfg.preset == "mlflow":
        return {"x-mlflow-experiment-id": str(cfg.experiment_id)}
    return {}


def redacted(url: str) -> str:
    """The URL as it may be logged: without user:password@."""
    parts = urlsplit(url)
    return parts._replace(netloc=parts.hostname or "").geturl() if "@" in parts.netloc else url


# ---- W3C trace context ----------------------------------------------------------------------------

_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")
_TRACESTATE_MAX = 512  # W3C: a vendor may drop what it cannot propagate whole


def parse_traceparent(header: str | None) -> tuple[str, str] | None:
    """(trace id, parent span id) from a W3C `traceparent`, or None when it is absent or invalid."""
    if not header:
        return None
    m = _TRACEPARENT.fullmatch(header.strip())
    if m is None:
        return None
    version, trace_id, parent_id, _flags, rest = m.groups()
    if version == "ff" or (version == "00" and rest is not None):
        return None  # ff is forbidden; version 00 has exactly four fields
    if trace_id == "0" * 32 or parent_id == "0" * 16:
        return None
    return trace_id, parent_id


def join_caller_trace(record: TraceRecord, traceparent: str | None, tracestate: str | None) -> None:
    """Make the call's span a child of the caller's; an invalid traceparent starts a new trace."""
    parsed = parse_traceparent(traceparent)
    if parsed is None:
        return
    record.otel_trace_id, record.otel_parent_span_id = parsed
    if tracestate and len(tracestate) <= _TRACESTATE_MAX:
        record.otel_tracestate = tracestate.strip()


# ---- the exporter ---------------------------------------------------------------------------------


@dataclass(slots=True)
class ExportStats:
    exported: int = 0  # spans the receiver accepted
    dropped: int = 0  # spans refused because the queue was full
    failed: int = 0  # spans given up on after retries, or refused by the receiver (4xx)
    restarts: int = 0  # times the exporter loop crashed and was started again
    last_error: str | None = None  # the latest crash: exception type and where it was raised


Item = tuple[TraceRecord, ChatRequest | EmbeddingRequest] | Span


class SpanExporter:
    RESTART_DELAYS = (0.1, 0.5, 2.0, 5.0)
    BACKOFF_S = 0.2
    BACKOFF_MAX_S = 5.0
    RETRY_AFTER_CAP_S = 30.0

    def __init__(
        self,
        cfg: OtelConfig,
        upstreams: dict[str, Upstream],
        resource_version: str = "",
        redactor: Redactor | None = None,
    ) -> None:
        _require_proto()
        self._redactor = redactor
        self._dest = destination(cfg)
        parts = urlsplit(self._dest.url)
        self._https = parts.scheme == "https"
        self._host, self._port = parts.hostname or "localhost", parts.port
        self._path = parts.path + (f"?{parts.query}" if parts.query else "")
        self._upstreams = upstreams
        self._capture = cfg.capture_content
        self._service = cfg.service_name
        self._version = resource_version
        self._size, self._batch = cfg.queue_size, cfg.batch_size
        self._interval, self._timeout, self._retries = cfg.flush_interval_ms / 1000, cfg.timeout_s, cfg.retries
        self._queue: deque[Item] = deque()
        self._wake = threading.Event()
        self._stopping = threading.Event()  # cuts a restart delay short
        self._closing = False
        self._deadline = float("inf")
        self._conn: http.client.HTTPConnection | None = None
        self._thread = threading.Thread(target=self._supervise, name="keel-otel-exporter", daemon=True)
        self._started = False
        self._in_hand = 0  # spans of the batch being sent: failed if the loop crashes
        self._crash: str | None = None  # why the loop crashed, until it has drained again
        self.stats = ExportStats()

    @property
    def url(self) -> str:
        return redacted(self._dest.url)

    @property
    def depth(self) -> int:
        return len(self._queue)

    def start(self) -> None:
        self._started = True
        self._thread.start()

    def health(self) -> str | None:
        """Why spans cannot leave now (for /readyz and /metrics); None while they can."""
        if self._crash is not None:
            return f"crashed ({self._crash}); restarting"
        if self._started and not self._thread.is_alive() and not self._closing:
            return "its thread is not running"
        return None

    def put(self, record: TraceRecord, request: ChatRequest | EmbeddingRequest) -> None:
        # One producer (the event loop): deque.append is atomic, and only a full batch wakes the thread.
        queued = len(self._queue)
        if queued >= self._size:
            self.stats.dropped += 1
            return
        self._queue.append((record, request))
        if queued + 1 == self._batch:
            self._wake.set()

    def put_span(self, span: Span) -> None:
        """Queue a child span of a call (keel.traces.spans.child_span); like `put`, never blocks."""
        queued = len(self._queue)
        if queued >= self._size:
            self.stats.dropped += 1
            return
        self._queue.append(span)
        if queued + 1 == self._batch:
            self._wake.set()

    def close(self, timeout: float = 10.0) -> None:
        """Send what is queued (retrying within `timeout`), then stop."""
        self._deadline = time.monotonic() + timeout
        self._closing = True
        self._stopping.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout + self._timeout)
        if self._conn is not None:
            self._conn.close()

    # ---- exporter thread

    def _supervise(self) -> None:
        crashes = 0
        while True:
            began = time.monotonic()
            try:
                self._run()
                return
            except BaseException as exc:  # a crash must not end span export quietly
                self.stats.restarts += 1
                self.stats.failed += self._in_hand
                self._in_hand = 0
                self._reset()
                frame = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
                where = f" at {Path(frame.filename).name}:{frame.lineno}" if frame else ""
                self._crash = self.stats.last_error = f"{type(exc).__name__}{where}"
                crashes = 1 if time.monotonic() - began > 60 else crashes + 1
                delay = self.RESTART_DELAYS[min(crashes, len(self.RESTART_DELAYS)) - 1]
                log.critical("the OpenTelemetry exporter crashed (%s); restarting in %.1f s", self._crash, delay)
                self._stopping.wait(delay)
                if self._closing:
                    time.sleep(0.1)  # drain again soon, within close's timeout

    def _run(self) -> None:
        while not self._closing:
            self._wake.wait(self._interval)
            self._wake.clear()
            self._drain()
            self._crash = None
        self._drain()

    def _drain(self) -> None:
        while self._queue:
            batch: list[Item] = []
            popleft = self._queue.popleft
            while self._queue and len(batch) < self._batch:
                batch.append(popleft())
            self._in_hand = len(batch)
            try:
                spans = self._spans(batch)
                body = encode(spans, self._resource())
            except Exception:  # a record the mapping cannot read must not stop the thread
                log.exception("encoding %d spans failed; dropped", len(batch))
                self.stats.failed += len(batch)
                self._in_hand = 0
                continue
            self._send(body, len(spans))
            self._in_hand = 0

    def _spans(self, batch: list[Item]) -> list[SpanData]:
        """Each record's span (and its attempts', when it made more than one); each child span's."""
        out = []
        for item in batch:
            if isinstance(item, Span):
                out.append(self._child(item))
                continue
            record, request = item
            out.append(self._span(record, request))
            if record.attempt_log is not None and len(record.attempt_log) > 1:
                out += [self._child(s) for s in attempt_spans(record)]
        return out

    def _child(self, span: Span) -> SpanData:
        return child_span_data(span if self._redactor is None else self._redactor.scrub_span(span))

    def _span(self, record: TraceRecord, request: ChatRequest | EmbeddingRequest) -> SpanData:
        r = self._redactor
        if r is None:
            return span_data(record, request, self._upstreams, self._capture)
        tenant = record.tenant
        return span_data(
            r.scrub(record, request=False),  # the span never reads the stored request body
            request,
            self._upstreams,
            self._capture,
            redact=lambda value: r.redact(tenant, value),
        )

    def _resource(self) -> dict[str, str]:
        resource = {"service.name": self._service, "telemetry.sdk.name": "keel", "telemetry.sdk.language": "python"}
        if self._version:
            resource["service.version"] = self._version
        return resource

    def _send(self, body: bytes, count: int) -> None:
        reason = ""
        for attempt in range(self._retries + 1):
            retry, retry_after, reason = self._post(body)
            if not reason:
                self.stats.exported += count
                return
            if not retry or attempt == self._retries:
                break
            delay = min(retry_after, self.RETRY_AFTER_CAP_S) if retry_after is not None else self._backoff(attempt)
            if self._closing and time.monotonic() + delay > self._deadline:
                break  # shutting down: no time left to wait for the receiver
            time.sleep(delay)
        self.stats.failed += count
        log.warning("OpenTelemetry export of %d spans to %s failed (%s); dropped", count, self.url, reason)

    def _backoff(self, attempt: int) -> float:
        return float(min(self.BACKOFF_MAX_S, self.BACKOFF_S * 2**attempt))

    def _post(self, body: bytes) -> tuple[bool, float | None, str]:
        """One POST: (retryable, Retry-After seconds, failure reason or "" on success)."""
        for fresh in (self._conn is None, True):
            conn = self._connection()
            try:
                conn.request("POST", self._path, body, self._dest.headers)
                response = conn.getresponse()
                response.read()
            except (OSError, http.client.HTTPException) as exc:
                self._reset()
                if fresh:  # a reused connection the receiver had closed gets one immediate fresh try
                    return True, None, type(exc).__name__
                continue
            except ValueError as exc:  # a request http.client will not send (a header it refuses): never will
                self._reset()
                return False, None, type(exc).__name__
            if response.will_close:
                self._reset()
            status = response.status
            if 200 <= status < 300:
                return False, None, ""
            retryable = status == 429 or status >= 500
            return retryable, _seconds(response.getheader("retry-after")), f"HTTP {status}"
        raise AssertionError("unreachable: the second try always uses a fresh connection")

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            if self._https:
                ctx = ssl.create_default_context()
                self._conn = http.client.HTTPSConnection(self._host, self._port, timeout=self._timeout, context=ctx)
            else:
                self._conn = http.client.HTTPConnection(self._host, self._port, timeout=self._timeout)
        return self._conn

    def _reset(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def _seconds(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None  # an HTTP date: fall back to our own backoff


def _require_proto() -> None:
    try:
        import opentelemetry.proto.collector.trace.v1.trace_service_pb2  # noqa: F401
    except ImportError:
        fix = "pip install 'keel[otel]' (the opentelemetry-proto package), or remove the otel section"
        raise ConfigError(
            [ConfigIssue("otel", "export is configured but opentelemetry-proto is missing", fix)]
        ) from None


# ---- protobuf encoding ------------------------------------------------------------------------------


def encode(spans: list[SpanData], resource: dict[str, str]) -> bytes:
    """An ExportTraceServiceRequest holding `spans` under one resource and the `keel` scope.

    Built in place (`add()` on repeated fields): constructing and copying sub-messages costs several
    times more per span.
    """
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
    from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

    request = ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add()
    _set_attributes(resource_spans.resource.attributes, resource)
    scope = resource_spans.scope_spans.add()
    scope.scope.name = "keel"
    client, error = Span.SpanKind.SPAN_KIND_CLIENT, Status.StatusCode.STATUS_CODE_ERROR
    internal = Span.SpanKind.SPAN_KIND_INTERNAL
    for s in spans:
        span = scope.spans.add()
        span.trace_id, span.span_id, span.parent_span_id = s.trace_id, s.span_id, s.parent_span_id
        span.trace_state, span.name, span.flags = s.trace_state, s.name, s.flags
        span.kind = internal if s.internal else client
        span.start_time_unix_nano, span.end_time_unix_nano = s.start_ns, s.end_ns
        _set_attributes(span.attributes, s.attributes)
        if s.error is not None:
            span.status.code, span.status.message = error, s.error
    return request.SerializeToString()  # type: ignore[no-any-return]


class _KeyValues(Protocol):
    def add(self) -> KeyValue: ...


def _set_attributes(into: _KeyValues, attributes: Mapping[str, AttrValue]) -> None:
    for key, value in attributes.items():
        kv = into.add()
        kv.key = key
        v = kv.value
        if isinstance(value, str):
            v.string_value = value
        elif isinstance(value, bool):  # before int: bool is an int
            v.bool_value = value
        elif isinstance(value, int):
            v.int_value = value
        elif isinstance(value, float):
            v.double_value = value
        else:
            for x in value:
                v.array_value.values.add().string_value = x
