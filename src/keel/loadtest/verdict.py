"""From what a phase measured to what broke first, and why.

Each multiple's figures are checked against the profile's thresholds (errors, refusals, p99 against
the 1x run's, CPU per gateway process, trace writer lag). The first multiple with a breach is where
the system breaks; its cause is named by evidence, most specific first: a capped target whose queue
refused calls or grew (the queue wait is the latency), limits answering 429, the upstream's own
errors, CPU, the trace writer's lag; latency alone is reported as latency. A generator that fell
behind its schedule taints its phase: the figures are shown but not blamed on the gateway.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from keel.loadtest.drive import Phase
from keel.loadtest.observe import Sample
from keel.loadtest.profile import Thresholds

LATE_MS = 50.0  # the generator's p99 lateness beyond which its phase is not the gateway's fault
SATURATED = "target_saturated"


@dataclass(frozen=True, slots=True)
class Summary:
    multiple: float
    offered_rps: float
    achieved_rps: float
    calls: int
    ok: int
    errors: int  # answered with a failure other than 429, or not answered
    rejected: int  # 429
    rejected_by: dict[str, int]  # error code -> count
    p50_ms: float
    p99_ms: float
    ttft_p50_ms: float | None
    overhead_p50_ms: float | None
    cpu_cores: float  # mean over the phase, whole process tree
    cpu_per_process: float
    trace_queue_max: float
    queued_max: dict[str, float]  # per capped target
    refused_by_target: dict[str, float]  # per capped target, during the phase
    late_p99_ms: float
    not_sent: int

    @property
    def error_rate(self) -> float:
        return self.errors / self.calls if self.calls else 0.0

    @property
    def rejected_rate(self) -> float:
        return self.rejected / self.calls if self.calls else 0.0


@dataclass(frozen=True, slots=True)
class Breach:
    what: str  # a short name: target_saturated, limits, upstream_errors, cpu, trace_lag, latency
    detail: str


@dataclass(frozen=True, slots=True)
class Verdict:
    summaries: list[Summary]
    breaches: dict[float, list[Breach]] = field(default_factory=dict)  # per multiple, most specific first
    first: float | None = None  # the first multiple with a breach
    tainted: tuple[float, ...] = ()  # multiples where the generator fell behind

    @property
    def bottleneck(self) -> Breach | None:
        return self.breaches[self.first][0] if self.first is not None else None


def summarize(phase: Phase, samples: list[Sample], processes: int) -> Summary:
    results = phase.results
    ok = [r for r in results if r.status == 200]
    rejected = [r for r in results if r.status == 429]
    latencies = sorted(r.latency_ms for r in ok)
    ttfts = sorted(r.ttft_ms for r in ok if r.ttft_ms is not None)
    overheads = sorted(r.overhead_ms for r in ok if r.overhead_ms is not None)
    during = [s for s in samples if s.at <= phase.duration_s + 1.0] or samples
    first, last = (samples[0], samples[-1]) if samples else (None, None)
    refused: dict[str, float] = {}
    if first and last:
        refused = {
            t: v - first.rejected.get(t, 0.0) for t, v in last.rejected.items() if v > first.rejected.get(t, 0.0)
        }
    queued: dict[str, float] = {}
    for s in samples:
        for target, depth in s.queued.items():
            queued[target] = max(queued.get(target, 0.0), depth)
    cores = sum(s.cpu_cores for s in during) / len(during) if during else 0.0
    return Summary(
        multiple=phase.multiple,
        offered_rps=phase.offered_rps,
        achieved_rps=len(ok) / phase.duration_s,
        calls=len(results),
        ok=len(ok),
        errors=len(results) - len(ok) - len(rejected),
        rejected=len(rejected),
        rejected_by=dict(Counter(r.code or "429" for r in rejected)),
        p50_ms=_q(latencies, 0.5),
        p99_ms=_q(latencies, 0.99),
        ttft_p50_ms=_q(ttfts, 0.5) if ttfts else None,
        overhead_p50_ms=_q(overheads, 0.5) if overheads else None,
        cpu_cores=cores,
        cpu_per_process=cores / max(1, processes),
        trace_queue_max=max((s.trace_queue for s in samples), default=0.0),
        queued_max=queued,
        refused_by_target=refused,
        late_p99_ms=_q(sorted(r.late_ms for r in results), 0.99),
        not_sent=phase.not_sent,
    )


def judge(summaries: list[Summary], thresholds: Thresholds, trace_queue_size: int) -> Verdict:
    base = summaries[0] if summaries else None
    breaches: dict[float, list[Breach]] = {}
    tainted = []
    for s in summaries:
        if s.late_p99_ms > LATE_MS or s.not_sent:
            tainted.append(s.multiple)
        found = _breaches(s, base, thresholds, trace_queue_size)
        if found:
            breaches[s.multiple] = found
    first = next((s.multiple for s in summaries if s.multiple in breaches), None)
    return Verdict(summaries, breaches, first, tuple(tainted))


def _breaches(s: Summary, base: Summary | None, t: Thresholds, trace_queue_size: int) -> list[Breach]:
    out = []
    over_p99 = base is not None and base.p99_ms > 0 and s.p99_ms > base.p99_ms * t.p99_ratio
    for target, refused in sorted(s.refused_by_target.items(), key=lambda kv: -kv[1]):
        if refused / max(1, s.calls) > t.rejected_rate:
            out.append(
                Breach(
                    SATURATED,
                    f"target {target} is saturated (its max_concurrency): {refused:.0f} calls refused "
                    f"({refused / max(1, s.calls):.1%}), queue up to {s.queued_max.get(target, 0):.0f}",
                )
            )
    if over_p99 and not out:
        for target, depth in sorted(s.queued_max.items(), key=lambda kv: -kv[1]):
            if depth >= 1:
                assert base is not None
                out.append(
                    Breach(
                        SATURATED,
                        f"target {target} is saturated (its max_concurrency): calls queue for a slot "
                        f"(up to {depth:.0f} waiting), p99 {s.p99_ms:.0f} ms against {base.p99_ms:.0f} ms at 1x",
                    )
                )
                break
    limited = sum(n for code, n in s.rejected_by.items() if code != SATURATED)
    if limited / max(1, s.calls) > t.rejected_rate:
        codes = ", ".join(f"{c} {n}" for c, n in sorted(s.rejected_by.items()) if c != SATURATED)
        out.append(Breach("limits", f"{limited / s.calls:.1%} of calls refused with 429 ({codes})"))
    if s.error_rate > t.error_rate:
        out.append(Breach("upstream_errors", f"{s.error_rate:.1%} of calls failed ({s.errors} of {s.calls})"))
    if s.cpu_per_process > t.cpu_cores:
        out.append(Breach("cpu", f"the gateway used {s.cpu_per_process:.2f} cores per process"))
    if trace_queue_size and s.trace_queue_max > t.trace_lag * trace_queue_size:
        out.append(Breach("trace_lag", f"the trace writer fell behind: {s.trace_queue_max:.0f} records queued"))
    if over_p99 and not out:
        assert base is not None
        out.append(Breach("latency", f"p99 {s.p99_ms:.0f} ms against {base.p99_ms:.0f} ms at 1x"))
    return out


def _q(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, int(q * len(values)))] if values else 0.0
