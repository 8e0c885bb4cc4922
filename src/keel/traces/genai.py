"""What one call looks like as an OpenTelemetry GenAI client span: pure mapping, no I/O, no protobuf.

Attributes follow the GenAI semantic conventions (gen_ai.*, server.*, error.type); Keel's own facts
(cost, attribution, routing) are keel.* attributes. Only ids go out: the key id, never a key.
Content (gen_ai.input/output.messages, JSON in the conventions' parts shape) only when asked for.
The span and trace ids derive from Keel's record id, so a re-sent span is the same span; a caller's
W3C traceparent overrides the trace id and becomes the parent.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import orjson

from keel.catalog import CATALOG
from keel.config import Config
from keel.types import ChatRequest, EmbeddingRequest, Message, Span, TraceRecord

AttrValue = str | int | float | bool | list[str]
Redact = Callable[[Any], Any]  # a JSON-shaped value → the same with secrets and personal data replaced

OPERATIONS = {"chat": "chat", "messages": "chat", "embeddings": "embeddings"}
# Catalog types whose gen_ai.provider.name is spelled otherwise in the conventions' well-known values.
PROVIDER_NAMES = {"azure": "azure.ai.openai", "mistral": "mistral_ai", "gemini": "gcp.gemini"}
PROVIDER_NAMES |= {"google": "gcp.gemini", "bedrock": "aws.bedrock"}
_SAMPLED = 0x01
_HAS_IS_REMOTE, _IS_REMOTE = 0x100, 0x200  # OTLP span flags: whether the parent came from another process


@dataclass(frozen=True, slots=True)
class Upstream:
    provider_name: str  # gen_ai.provider.name
    address: str | None  # server.address
    port: int | None  # server.port


def upstreams(cfg: Config) -> dict[str, Upstream]:
    """Per configured provider name: its conventional provider name and the host it calls."""
    out = {}
    for name, p in cfg.providers.items():
        row = CATALOG.get(p.type)
        url = p.base_url or (row.base_url if row else None)
        parts = urlsplit(url) if url else None
        port = (parts.port or (443 if parts.scheme == "https" else 80)) if parts and parts.hostname else None
        out[name] = Upstream(PROVIDER_NAMES.get(p.type, p.type), parts.hostname if parts else None, port)
    return out


@dataclass(frozen=True, slots=True)
class SpanData:
    trace_id: bytes  # 16
    span_id: bytes  # 8
    parent_span_id: bytes  # 8, or empty for a root span
    trace_state: str
    name: str
    start_ns: int
    end_ns: int
    attributes: dict[str, AttrValue]
    error: str | None  # the status message when the call failed
    flags: int
    internal: bool = False  # an INTERNAL span (a step inside Keel); else a CLIENT span (a call out)


def span_ids(record: TraceRecord) -> tuple[bytes, bytes, bytes]:
    """(trace id, span id, parent span id) for the record's span."""
    digest = hashlib.blake2b(record.id.encode(), digest_size=24).digest()
    trace_id = bytes.fromhex(record.otel_trace_id) if record.otel_trace_id else digest[:16]
    parent = bytes.fromhex(record.otel_parent_span_id) if record.otel_parent_span_id else b""
    return trace_id, digest[16:], parent


def child_ids(span: Span) -> tuple[bytes, bytes, bytes]:
    """(trace id, span id, parent span id) of a child span: the call's trace, and a parent that is the
    call's span (`span_ids`) when `parent_id` is the trace id, else the parent span's own id."""
    digest = hashlib.blake2b(span.trace_id.encode(), digest_size=24).digest()
    trace_id = bytes.fromhex(span.otel_trace_id) if span.otel_trace_id else digest[:16]
    if span.parent_id is None:
        parent = b""
    elif span.parent_id == span.trace_id:
        parent = digest[16:]
    else:
        parent = _child_id(span.trace_id, span.parent_id)
    return trace_id, _child_id(span.trace_id, span.span_id), parent


def _child_id(trace_id: str, span_id: str) -> bytes:
    return hashlib.blake2b(f"{trace_id}/{span_id}".encode(), digest_size=8).digest()


def child_span_data(span: Span) -> SpanData:
    """A child span (already redacted) as an OpenTelemetry span under its call's: `model` spans are
    CLIENT spans named like the call's (`chat <provider/model>`), the others INTERNAL (`<kind> <name>`)."""
    trace_id, span_id, parent = child_ids(span)
    start_ns = int(span.started_at * 1e9)
    end_ns = int(span.ended_at * 1e9) if span.ended_at is not None else start_ns
    u = span.usage
    pairs: dict[str, AttrValue | None] = {
        "keel.span.kind": span.kind,
        "keel.trace_id": span.trace_id,
        "keel.span_id": span.span_id,
        "keel.tenant": span.tenant,
        "keel.status": span.status,
        "keel.cost_usd": span.cost_usd,
        "gen_ai.usage.input_tokens": u.input_tokens if u else None,
        "gen_ai.usage.output_tokens": u.output_tokens if u else None,
    }
    for key, value in span.attributes.items():
        pairs[str(key)] = _attr(value)
    attributes = {k: v for k, v in pairs.items() if v is not None}
    error = str(span.attributes.get("keel.error_kind") or "failed") if span.status != "ok" else None
    model = span.kind == "model"
    name = f"chat {span.name}" if model else f"{span.kind} {span.name}"
    return SpanData(trace_id, span_id, parent, "", name, start_ns, end_ns, attributes, error, _SAMPLED, not model)


def _attr(value: Any) -> AttrValue | None:
    """A span attribute as OTLP holds it: scalars and lists of strings as they are, anything else as JSON."""
    if value is None or isinstance(value, str | bool | int | float):
        return value
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    return orjson.dumps(value, default=str).decode()


def span_data(
    record: TraceRecord,
    request: ChatRequest | EmbeddingRequest,
    upstreams: dict[str, Upstream],
    capture: bool,
    redact: Redact | None = None,
) -> SpanData:
    """`record` is already redacted; `redact` applies to the captured input messages."""
    trace_id, span_id, parent = span_ids(record)
    start_ns = int(record.started_at * 1e9)
    end_ns = start_ns + int((record.latency_ms or 0.0) * 1e6)
    attributes = span_attributes(record, request, upstreams.get(record.provider or ""), capture, redact)
    failed = record.status != "ok"
    error = (record.error_message or record.error_kind or "failed") if failed else None
    flags = _SAMPLED | _HAS_IS_REMOTE | (_IS_REMOTE if parent else 0)
    name = f"{attributes['gen_ai.operation.name']} {record.alias or request.model}"
    return SpanData(
        trace_id, span_id, parent, record.otel_tracestate or "", name, start_ns, end_ns, attributes, error, flags
    )


def span_attributes(
    record: TraceRecord,
    request: ChatRequest | EmbeddingRequest,
    upstream: Upstream | None,
    capture: bool,
    redact: Redact | None = None,
) -> dict[str, AttrValue]:
    chat = request if isinstance(request, ChatRequest) else None
    response = record.response or {}
    finish = response.get("finish_reason")
    provider = upstream.provider_name if upstream else None
    pairs: dict[str, AttrValue | None] = {
        "gen_ai.operation.name": OPERATIONS.get(record.endpoint, record.endpoint),
        "gen_ai.provider.name": provider,
        "gen_ai.system": provider,  # the name before semantic conventions 1.37; still read by some backends
        "gen_ai.request.model": record.alias or request.model,
        "gen_ai.response.model": record.model,
        "gen_ai.response.id": response.get("id") or None,
        "gen_ai.response.finish_reasons": [finish] if finish else None,
        "gen_ai.request.max_tokens": chat.max_tokens if chat else None,
        "gen_ai.request.temperature": chat.temperature if chat else None,
        "gen_ai.request.top_p": chat.top_p if chat else None,
        "gen_ai.request.stream": chat.stream if chat else None,
        "gen_ai.usage.input_tokens": record.input_tokens,
        "gen_ai.usage.output_tokens": record.output_tokens,
        "gen_ai.usage.cache_read.input_tokens": record.cached_input_tokens,
        "gen_ai.usage.cache_write.input_tokens": record.cache_write_tokens,
        "gen_ai.usage.reasoning.output_tokens": record.reasoning_tokens,
        "gen_ai.response.time_to_first_chunk": _seconds(record.ttft_ms) if record.stream else None,
        "gen_ai.conversation.id": record.session,
        "server.address": upstream.address if upstream else None,
        "server.port": upstream.port if upstream and upstream.address else None,
        "error.type": (record.error_kind or "_OTHER") if record.status != "ok" else None,
        "user.id": record.user,
        "session.id": record.session,
        **keel_attributes(record),
    }
    if capture and chat is not None:
        messages = [_message(m) for m in chat.messages]
        pairs["gen_ai.input.messages"] = orjson.dumps(redact(messages) if redact else messages).decode()
        if record.response is not None:
            pairs["gen_ai.output.messages"] = orjson.dumps([_output(record.response)]).decode()
    return {k: v for k, v in pairs.items() if v is not None}


def keel_attributes(record: TraceRecord) -> dict[str, AttrValue | None]:
    return {
        "keel.trace_id": record.id,
        "keel.status": record.status,
        "keel.http_status": record.http_status,
        "keel.tenant": record.tenant,
        "keel.key_id": record.key_id,
        "keel.user": record.user,
        "keel.feature": record.feature,
        "keel.session": record.session,
        "keel.alias": record.alias,
        "keel.provider": record.provider,
        "keel.fallback": record.fallback,
        "keel.attempts": record.attempts,
        "keel.cost_usd": record.cost_usd,
        "keel.latency_ms": record.latency_ms,
        "keel.ttft_ms": record.ttft_ms,
        "keel.overhead_ms": record.overhead_ms,
        "keel.cache": record.cache,  # hit | semantic | stale | miss
        "keel.cache_saved_usd": record.cache_saved_usd,
    }


def _seconds(ms: float | None) -> float | None:
    return None if ms is None else ms / 1000


def _message(m: Message) -> dict[str, Any]:
    """A chat message in the conventions' shape: {role, parts: [{type: text|tool_call|..., ...}]}."""
    if m.role == "tool":
        return {"role": "tool", "parts": [{"type": "tool_call_response", "id": m.tool_call_id, "response": m.content}]}
    parts = _parts(m.content)
    parts += [
        {"type": "tool_call", "id": c.id, "name": c.name, "arguments": _arguments(c.arguments)} for c in m.tool_calls
    ]
    out: dict[str, Any] = {"role": m.role, "parts": parts}
    if m.name:
        out["name"] = m.name
    return out


def _parts(content: str | list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "content": content}]
    parts: list[dict[str, Any]] = []
    for p in content:
        if p.get("type") == "text":
            parts.append({"type": "text", "content": p.get("text", "")})
        elif p.get("type") == "image_url":
            url = (p.get("image_url") or {}).get("url", "")
            parts.append({"type": "uri", "modality": "image", "uri": url})
        else:
            parts.append({"type": str(p.get("type", "unknown"))})  # a kind the conventions do not shape yet
    return parts


def _output(response: dict[str, Any]) -> dict[str, Any]:
    parts = _parts(response.get("content"))
    for c in response.get("tool_calls") or []:
        parts.append({"type": "tool_call", "id": c["id"], "name": c["name"], "arguments": _arguments(c["arguments"])})
    return {"role": "assistant", "parts": parts, "finish_reason": response.get("finish_reason") or "error"}


def _arguments(text: str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return text  # as the model produced it
