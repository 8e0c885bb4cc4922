"""A trace's child spans: building one under a call, and the call's upstream attempts as spans.

A call is the trace row (`TraceRecord`); its span id is the record id, so a span directly under it has
`parent_id == record.id`. A capability emits a step of a call with `child_span(record, ...)` handed to
`TraceWriter.put_span` (cheap: one append, like `put`); the writer stores it beside the row, the
exporter sends it under the call's OpenTelemetry span.
The attempts a call made (`TraceRecord.attempt_log`) become `model` spans only when there were more
than one (retries, fallback): the writer and the exporter derive them on their own threads, so the
common call costs nothing more and the request path never builds them. Their span ids are fixed
(`attempt-<n>`), so deriving them again (a retried batch, a reloaded spill) writes nothing twice.
The attempt log holds no start times: attempts are laid end to end from the call's start (failed
ones last their `ms`; the serving one ends with the call), so their times are marked estimated.
"""

from __future__ import annotations

import secrets
from dataclasses import asdict, fields
from typing import Any

from keel.store.storable import storable_span
from keel.types import JSON, Span, SpanKind, Status, TraceRecord, Usage


def new_span_id() -> str:
    """A random span id: 16 hex digits, like OpenTelemetry's."""
    return secrets.token_hex(8)


def child_span(
    record: TraceRecord,
    kind: SpanKind,
    name: str,
    started_at: float,
    ended_at: float | None = None,
    *,
    span_id: str | None = None,
    parent_id: str | None = None,
    status: Status = "ok",
    attributes: JSON | None = None,
    usage: Usage | None = None,
    cost_usd: float | None = None,
) -> Span:
    """A span of `record`'s trace under its call span (or under `parent_id`, another span of it)."""
    return Span(
        trace_id=record.id,
        span_id=span_id or new_span_id(),
        parent_id=parent_id or record.id,
        kind=kind,
        name=name,
        started_at=started_at,
        ended_at=ended_at,
        status=status,
        tenant=record.tenant,
        attributes=attributes or {},
        usage=usage,
        cost_usd=cost_usd,
        otel_trace_id=record.otel_trace_id,
    )


def attempts_of(record: TraceRecord) -> list[JSON]:
    """The upstream attempts the call made (skipped targets and static answers left out)."""
    log = record.attempt_log
    if not log or len(log) < 2:  # the common call: one attempt, nothing to walk
        return []
    return [e for e in log if isinstance(e, dict) and e.get("target") and e.get("outcome") != "skipped"]


def attempt_spans(record: TraceRecord) -> list[Span]:
    """The call's attempts as `model` spans under it, when it made more than one; else none."""
    tried = attempts_of(record)
    if len(tried) < 2:
        return []
    billed = any("cost_usd" in e for e in tried)
    call_end = None if record.latency_ms is None else record.started_at + record.latency_ms / 1000
    at: float | None = record.started_at
    spans = []
    for n, e in enumerate(tried, start=1):
        last = n == len(tried)
        ms = e.get("ms")
        start = at if at is not None else record.started_at
        if isinstance(ms, int | float) and not isinstance(ms, bool):
            end: float | None = start + ms / 1000
        else:
            end = call_end if last else None
        ok = e.get("outcome") == "ok"
        usage, cost = _bill(e, record, ok and last and not billed)
        spans.append(
            child_span(
                record,
                "model",
                str(e["target"]),
                start,
                None if end is None else max(start, end),
                span_id=f"attempt-{n}",
                status="ok" if ok else "error",
                attributes=_attributes(n, e),
                usage=usage,
                cost_usd=cost,
            )
        )
        at = end
    return spans


def _bill(e: JSON, record: TraceRecord, served_all: bool) -> tuple[Usage | None, float | None]:
    """What the attempt used: its own bill when the log has one (a resumed stream), the call's whole
    usage for the one attempt that served, else nothing."""
    if "cost_usd" in e:
        i, o = e.get("input_tokens"), e.get("output_tokens")
        return Usage(i if isinstance(i, int) else 0, o if isinstance(o, int) else 0), e.get("cost_usd")
    if not served_all:
        return None, None
    usage = Usage(
        record.input_tokens or 0,
        record.output_tokens or 0,
        record.cached_input_tokens or 0,
        record.cache_write_tokens or 0,
        record.reasoning_tokens or 0,
    )
    return usage, record.cost_usd


def _attributes(n: int, e: JSON) -> JSON:
    target = str(e["target"])
    provider, _, model = target.partition("/")
    out: JSON = {
        "keel.attempt": n,
        "keel.level": e.get("level"),
        "keel.outcome": e.get("outcome"),
        "keel.provider": provider,
        "keel.model": model,
        "keel.timing": "estimated",
    }
    for key in ("kind", "resumed", "ms"):
        if e.get(key) is not None:
            out[f"keel.{'error_kind' if key == 'kind' else key}"] = e[key]
    return out


# ---- reading a tree back --------------------------------------------------------------------------


def tree(trace_id: str, spans: list[Span]) -> list[tuple[int, Span]]:
    """`spans` depth first in start order, each with its depth below the call span (1: directly under
    it). A span whose parent is not among them hangs under the call, so none is lost from view."""
    ids = {s.span_id for s in spans}
    children: dict[str, list[Span]] = {}
    for s in sorted(spans, key=lambda s: (s.started_at, s.span_id)):
        parent = s.parent_id if s.parent_id in ids and s.parent_id != s.span_id else trace_id
        children.setdefault(parent, []).append(s)
    out: list[tuple[int, Span]] = []
    stack = [(1, s) for s in reversed(children.get(trace_id, []))]
    seen: set[str] = set()
    while stack:
        depth, s = stack.pop()
        if s.span_id in seen:  # a cycle of parents: each span once
            continue
        seen.add(s.span_id)
        out.append((depth, s))
        stack += [(depth + 1, c) for c in reversed(children.get(s.span_id, []))]
    out += [(1, s) for s in spans if s.span_id not in seen]  # in a cycle that never reaches the call
    return out


def duration_ms(span: Span) -> float | None:
    return None if span.ended_at is None else (span.ended_at - span.started_at) * 1000


def tree_lines(record: TraceRecord, spans: list[Span]) -> list[str]:
    """The call and its spans as indented text lines: kind, name, duration, status, cost."""
    call = _line(0, "call", f"{record.endpoint} {record.alias or record.model or ''}".strip(), record.latency_ms,
                 record.status, record.cost_usd)  # fmt: skip
    return [call, *(_line(d, s.kind, s.name, duration_ms(s), s.status, s.cost_usd) for d, s in tree(record.id, spans))]


def _line(depth: int, kind: str, name: str, ms: float | None, status: str, cost: float | None) -> str:
    label = f"{'  ' * depth}{kind} {name}"
    took = "-" if ms is None else f"{ms:.1f} ms"
    return f"{label:<48} {took:>12}  {status:<7} {'-' if cost is None else f'${cost:.6f}'}"


# ---- the JSON form (spill lines, dead letter, admin API)

_FIELDS = frozenset(f.name for f in fields(Span))


def span_dict(s: Span) -> dict[str, Any]:
    """`s` as JSON (spill lines, dead letter, admin API), made storable first; without `otel_trace_id`
    unless it is set."""
    out = asdict(storable_span(s))
    if out["otel_trace_id"] is None:
        del out["otel_trace_id"]
    return out


def span_from_dict(value: Any) -> Span:
    """A span from its JSON object. Raises ValueError for anything else."""
    if not isinstance(value, dict) or not {"trace_id", "span_id", "kind", "name", "started_at"} <= value.keys():
        raise ValueError("not a span (no trace_id, span_id, kind, name and started_at)")
    unknown = value.keys() - _FIELDS
    if unknown:
        raise ValueError(f"unknown span fields {sorted(unknown)}")
    usage = value.get("usage")
    return Span(**{**value, "usage": Usage(**usage) if isinstance(usage, dict) else None})
