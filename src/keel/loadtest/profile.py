"""A traffic profile: what `keel loadtest` replays, written by hand or recorded from the traces.

    rate_rps: 4                  # arrivals per second at 1x (Poisson, so bursts happen as in life)
    duration_s: 20               # each multiple runs this long
    multiples: [1, 2, 5, 10]
    mix:                         # what a call looks like; weights are relative
      - {alias: demo, weight: 3, stream: 0.3, prompt_tokens: [120, 400, 900], max_tokens: 64, feature: support}
    providers:                   # simulated stand-ins for keel.yaml's providers, by name
      openai: {ttft_ms: 300, tokens_per_second: 80, error_rate: 0.01, error: overloaded, rpm: 3000}
    thresholds: {error_rate: 0.01, rejected_rate: 0.01, p99_ratio: 2.0, cpu_cores: 0.9, trace_lag: 0.5}

`record` derives one from stored traces: the arrival rate over the window, the mix by alias and feature
(stream share, prompt sizes as quantiles, completion sizes), and each provider's latency, time to first
token, generation speed, error rate and the rate at which it answered 429.
"""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from keel.errors import ConfigError, ConfigIssue, ErrorKind
from keel.store.protocols import TraceQuery, TraceStore
from keel.types import TraceRecord

MAX_DURATION_S = 600.0  # every phase is bounded; a run is at most len(multiples) of these
MAX_RECORDED = 50_000  # traces read to record a profile


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Call(_Model):
    alias: str = Field(min_length=1)
    weight: float = Field(1.0, gt=0)
    stream: float = Field(0.0, ge=0, le=1)  # the share of calls that stream
    prompt_tokens: list[int] = Field([100], min_length=1)  # sizes drawn uniformly from this list
    max_tokens: int = Field(64, ge=1, le=100_000)
    feature: str | None = None


class Upstream(_Model):
    ttft_ms: float = Field(0.0, ge=0, le=120_000)  # time to the first token (a whole answer's wait when not streamed)
    tokens_per_second: float = Field(0.0, ge=0)
    error_rate: float = Field(0.0, ge=0, le=1)
    error: str = "overloaded"  # the ErrorKind its failures carry
    rpm: int | None = Field(None, ge=1)  # answers 429 beyond this many calls a minute


class Thresholds(_Model):
    error_rate: float = Field(0.01, ge=0, le=1)  # failed calls (not 429) beyond this share: a breach
    rejected_rate: float = Field(0.01, ge=0, le=1)  # 429s (limits, saturated targets) beyond this share
    p99_ratio: float = Field(2.0, gt=1)  # p99 latency beyond this many times the 1x run's
    cpu_cores: float = Field(0.9, gt=0)  # gateway CPU per process beyond this many cores
    trace_lag: float = Field(0.5, gt=0, le=1)  # trace writer queue beyond this share of its bound


class Profile(_Model):
    rate_rps: float = Field(gt=0, le=10_000)
    duration_s: float = Field(20.0, gt=0, le=MAX_DURATION_S)
    multiples: list[float] = Field([1, 2, 5, 10], min_length=1, max_length=10)
    mix: list[Call] = Field(min_length=1)
    providers: dict[str, Upstream] = {}
    thresholds: Thresholds = Thresholds()


def parse(raw: Any, source: str) -> Profile:
    """A profile from parsed YAML, or one ConfigError listing every bad key with its fix."""
    try:
        profile = Profile.model_validate(raw)
    except ValidationError as err:
        fix = "see the profile's shape in `keel loadtest run --help` and the README"
        issues = [ConfigIssue(".".join(str(p) for p in e["loc"]) or "(top level)", e["msg"], fix) for e in err.errors()]
        raise ConfigError(issues, source) from None
    known = {k.value for k in ErrorKind}
    for name, up in profile.providers.items():
        if up.error not in known:
            fix = f"use one of: {', '.join(sorted(known))}"
            raise ConfigError([ConfigIssue(f"providers.{name}.error", f"unknown error kind {up.error!r}", fix)], source)
    if sorted(profile.multiples) != profile.multiples or profile.multiples[0] <= 0:
        raise ConfigError([ConfigIssue("multiples", "must be positive and ascending", "e.g. [1, 2, 5, 10]")], source)
    return profile


def record(store: TraceStore, since: float, until: float) -> Profile:
    """A profile of the traffic the traces hold between `since` and `until` (at most MAX_RECORDED calls)."""
    rows = [
        r for r in store.list_traces(TraceQuery(since, until, limit=MAX_RECORDED)) if r.endpoint == "chat" and r.alias
    ]
    if not rows:
        issue = ConfigIssue(
            "--since", "no chat calls were traced in that window", "widen the window or write a profile"
        )
        raise ConfigError([issue], "keel loadtest record")
    starts = [r.started_at for r in rows]
    span = max(max(starts) - min(starts), 1.0)
    return Profile(
        rate_rps=round(len(rows) / span, 3),
        mix=_mix(rows),
        providers={name: _upstream(calls) for name, calls in _by_provider(rows).items()},
    )


def _mix(rows: Sequence[TraceRecord]) -> list[Call]:
    groups: dict[tuple[str, str | None], list[TraceRecord]] = defaultdict(list)
    for r in rows:
        groups[(r.alias or "", r.feature)].append(r)
    mix = []
    for (alias, feature), calls in sorted(groups.items(), key=lambda kv: -len(kv[1])):
        prompt = sorted(r.input_tokens for r in calls if r.input_tokens)
        output = sorted(r.output_tokens for r in calls if r.output_tokens)
        mix.append(
            Call(
                alias=alias,
                feature=feature,
                weight=len(calls),
                stream=round(sum(r.stream for r in calls) / len(calls), 3),
                prompt_tokens=_quantiles(prompt) or [100],
                max_tokens=max(1, _quantile(output, 0.9)) if output else 64,
            )
        )
    return mix


def _by_provider(rows: Sequence[TraceRecord]) -> dict[str, list[TraceRecord]]:
    out: dict[str, list[TraceRecord]] = defaultdict(list)
    for r in rows:
        if r.provider and r.cache not in ("hit", "semantic", "stale"):
            out[r.provider].append(r)
    return out


def _upstream(calls: Sequence[TraceRecord]) -> Upstream:
    ok = [r for r in calls if r.status == "ok" and r.latency_ms is not None]
    failed = [r for r in calls if r.status != "ok" and r.error_kind]
    ttft = [r.ttft_ms for r in ok if r.ttft_ms is not None]
    latency = [r.latency_ms for r in ok if r.latency_ms is not None]
    first = statistics.median(ttft) if ttft else (statistics.median(latency) if latency else 0.0)
    speeds = [
        r.output_tokens / ((r.latency_ms - r.ttft_ms) / 1000)
        for r in ok
        if r.output_tokens and r.ttft_ms is not None and r.latency_ms is not None and r.latency_ms > r.ttft_ms
    ]
    kinds = Counter(r.error_kind for r in failed)
    limited = sorted(r.started_at for r in failed if r.error_kind == ErrorKind.rate_limited.value)
    return Upstream(
        ttft_ms=round(first, 1),
        tokens_per_second=round(statistics.median(speeds), 1) if speeds else 0.0,
        error_rate=round(len(failed) / len(calls), 4) if calls else 0.0,
        error=kinds.most_common(1)[0][0] if kinds else ErrorKind.overloaded.value,
        rpm=_rpm_at_429(calls, limited),
    )


def _rpm_at_429(calls: Sequence[TraceRecord], limited: Sequence[float]) -> int | None:
    """The calls a minute the provider took in the busiest minute that ended in a 429: its limit, roughly."""
    if not limited:
        return None
    per_minute = Counter(int(r.started_at // 60) for r in calls)
    return max(1, max(per_minute[int(t // 60)] for t in limited) - 1)


def _quantile(values: Sequence[int], q: float) -> int:
    return values[min(len(values) - 1, int(q * len(values)))]


def _quantiles(values: Sequence[int]) -> list[int]:
    return sorted({_quantile(values, q) for q in (0.1, 0.3, 0.5, 0.7, 0.9)}) if values else []
