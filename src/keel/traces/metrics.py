"""Prometheus metrics: per-call counters fed from the trace stage, rendered as text format 0.0.4.

`observe` runs on the request path (inside the trace stage's emission, on the event loop) and costs
one dict lookup plus a few additions per call: every per-call figure lives in one accumulator list
per label tuple, and the families are derived from those at scrape time. Gauges (breakers, queues,
the trace writer, the exporters) are read when scraped and passed to `render` as `Family` values.

Labels are bounded: alias, provider, model, status, error kind, and small fixed enums (token type,
cache outcome, fallback level). Never tenant, user or key, which grow without bound — except tenant
when `metrics.tenant_label` asks for it. Counters are per process and start at zero on restart.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from keel.types import ChatRequest, EmbeddingRequest, TraceRecord

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Seconds. A cache hit answers in well under 10 ms; a long generation can take minutes.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

# Slots of one series' accumulator; histogram slots hold per-bucket (not cumulative) counts.
CALLS, INPUT, OUTPUT, CACHED, COST, LAT_SUM, TTFT_SUM, TTFT_COUNT = range(8)
LAT0 = 8
TTFT0 = LAT0 + len(LATENCY_BUCKETS) + 1
SIZE = TTFT0 + len(TTFT_BUCKETS) + 1

Kind = Literal["counter", "gauge", "histogram"]
Labels = Mapping[str, str]


@dataclass(frozen=True, slots=True)
class Family:
    """One metric family: its samples, each a label set and a value (histograms render themselves)."""

    name: str
    kind: Kind
    help: str
    samples: Sequence[tuple[Labels, float]]


class Metrics:
    """Per-call counters of one process. `observe` is a trace consumer: (record, request) → None."""

    def __init__(self, *, tenant_label: bool = False) -> None:
        self._tenant = tenant_label
        self._series: dict[tuple[str, ...], list[float]] = {}  # (alias, provider, model, status[, tenant])
        self._errors: dict[tuple[str, ...], int] = {}  # (alias, provider, kind[, tenant])
        self._cache: dict[tuple[str, ...], int] = {}  # (alias, outcome[, tenant])
        self._fallbacks: dict[tuple[str, ...], int] = {}  # (alias, level[, tenant])

    def observe(self, r: TraceRecord, request: ChatRequest | EmbeddingRequest | None = None) -> None:
        """Count one finished call. Never blocks, never raises on a well-formed record."""
        alias, provider = r.alias or "", r.provider or ""
        tail = (r.tenant or "",) if self._tenant else ()
        key = (alias, provider, r.model or "", r.status, *tail)
        acc = self._series.get(key)
        if acc is None:
            acc = self._series[key] = [0.0] * SIZE
        acc[CALLS] += 1
        acc[INPUT] += r.input_tokens or 0
        acc[OUTPUT] += r.output_tokens or 0
        acc[CACHED] += r.cached_input_tokens or 0
        acc[COST] += r.cost_usd or 0.0
        if r.latency_ms is not None:
            seconds = r.latency_ms / 1000
            acc[LAT_SUM] += seconds
            acc[LAT0 + bisect_left(LATENCY_BUCKETS, seconds)] += 1
        if r.ttft_ms is not None:
            seconds = r.ttft_ms / 1000
            acc[TTFT_SUM] += seconds
            acc[TTFT_COUNT] += 1
            acc[TTFT0 + bisect_left(TTFT_BUCKETS, seconds)] += 1
        if r.status != "ok":
            _bump(self._errors, (alias, provider, r.error_kind or "unknown", *tail))
        if r.cache is not None:
            _bump(self._cache, (alias, r.cache, *tail))
        if r.fallback not in (None, "primary"):
            _bump(self._fallbacks, (alias, r.fallback or "", *tail))

    def families(self) -> list[Family]:
        """The per-call families, summed from the accumulators into each family's own labels."""
        t = ("tenant",) if self._tenant else ()
        calls = _sum(self._series, (0, 1, 2, 3), CALLS, t)
        tokens: list[tuple[Labels, float]] = []
        for slot, kind in ((INPUT, "input"), (OUTPUT, "output"), (CACHED, "cached_input")):
            tokens += [({**labels, "type": kind}, v) for labels, v in _sum(self._series, (0, 1, 2), slot, t)]
        return [
            Family("keel_calls_total", "counter", "Calls finished, by outcome.", calls),
            Family("keel_tokens_total", "counter", "Tokens: input (all prompt tokens), output, cached_input.", tokens),
            Family("keel_cost_usd_total", "counter", "Cost in USD.", _sum(self._series, (0, 1, 2), COST, t)),
            Family("keel_errors_total", "counter", "Failed or partial calls, by error kind.", _counts(self._errors, ("alias", "provider", "kind", *t))),
            Family("keel_cache_total", "counter", "Cache outcomes: hit, semantic, stale, miss, partial.", _counts(self._cache, ("alias", "outcome", *t))),
            Family("keel_fallbacks_total", "counter", "Calls served by a fallback level (target, alias:<name>, static, stale).", _counts(self._fallbacks, ("alias", "level", *t))),
        ]  # fmt: skip

    def histograms(self) -> str:
        """Latency and time to first token, by alias, provider and status (and tenant when asked)."""
        group = (0, 1, 3, 4) if self._tenant else (0, 1, 3)
        names = ("alias", "provider", "status", "tenant")[: len(group)]
        merged: dict[tuple[str, ...], list[float]] = {}
        for key, acc in self._series.items():
            into = merged.setdefault(tuple(key[i] for i in group), [0.0] * SIZE)
            for i, v in enumerate(acc):
                into[i] += v
        lines = _histogram_head("keel_request_duration_seconds", "Time from arrival to the end of the answer.")
        for key, acc in sorted(merged.items()):
            lines += _histogram(
                "keel_request_duration_seconds", dict(zip(names, key, strict=True)), LATENCY_BUCKETS,
                acc[LAT0:TTFT0], acc[LAT_SUM],
            )  # fmt: skip
        lines += _histogram_head("keel_time_to_first_token_seconds", "Time from arrival to the first content event.")
        for key, acc in sorted(merged.items()):
            if acc[TTFT_COUNT]:
                labels = dict(zip(names, key, strict=True))
                lines += _histogram(
                    "keel_time_to_first_token_seconds", labels, TTFT_BUCKETS, acc[TTFT0:], acc[TTFT_SUM]
                )
        return "".join(lines)

    def render(self, gauges: Iterable[Family] = ()) -> bytes:
        """The whole exposition: per-call families, histograms, then the gauges read at scrape time."""
        out = [render_family(f) for f in self.families()]
        out.append(self.histograms())
        out += [render_family(f) for f in gauges]
        return "".join(out).encode()


_CALL_LABELS = ("alias", "provider", "model", "status")


def _bump(counts: dict[tuple[str, ...], int], key: tuple[str, ...]) -> None:
    counts[key] = counts.get(key, 0) + 1


def _sum(
    series: dict[tuple[str, ...], list[float]], keep: tuple[int, ...], slot: int, tenant: tuple[str, ...]
) -> list[tuple[Labels, float]]:
    """One slot summed over the series, grouped by the key positions in `keep` (plus the tenant, if kept)."""
    out: dict[tuple[str, ...], float] = {}
    for key, acc in series.items():
        group = tuple(key[i] for i in keep) + key[len(_CALL_LABELS) :]
        out[group] = out.get(group, 0.0) + acc[slot]
    names = (*(_CALL_LABELS[i] for i in keep), *tenant)
    return [(dict(zip(names, k, strict=True)), v) for k, v in sorted(out.items())]


def _counts(counts: dict[tuple[str, ...], int], names: tuple[str, ...]) -> list[tuple[Labels, float]]:
    return [(dict(zip(names, k, strict=True)), float(v)) for k, v in sorted(counts.items())]


# ---- text format 0.0.4 -------------------------------------------------------------------------


def escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def number(v: float) -> str:
    if v != v:
        return "NaN"
    if v in (float("inf"), float("-inf")):
        return "+Inf" if v > 0 else "-Inf"
    return str(int(v)) if v == int(v) and abs(v) < 2**53 else repr(v)


def _labels(labels: Labels) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{escape_label(v)}"' for k, v in labels.items()) + "}"


def render_family(f: Family) -> str:
    lines = [f"# HELP {f.name} {_escape_help(f.help)}\n", f"# TYPE {f.name} {f.kind}\n"]
    lines += [f"{f.name}{_labels(labels)} {number(v)}\n" for labels, v in f.samples]
    return "".join(lines)


def _histogram_head(name: str, help: str) -> list[str]:
    return [f"# HELP {name} {_escape_help(help)}\n", f"# TYPE {name} histogram\n"]


def _histogram(name: str, labels: Labels, bounds: Sequence[float], counts: Sequence[float], total: float) -> list[str]:
    """_bucket lines (cumulative, ending with le="+Inf"), then _sum and _count."""
    lines, seen = [], 0.0
    for bound, n in zip((*bounds, float("inf")), counts, strict=True):
        seen += n
        le = "+Inf" if bound == float("inf") else repr(float(bound))
        lines.append(f"{name}_bucket{_labels({**labels, 'le': le})} {number(seen)}\n")
    lines.append(f"{name}_sum{_labels(labels)} {number(total)}\n")
    lines.append(f"{name}_count{_labels(labels)} {number(seen)}\n")
    return lines
