"""Online evals: rules pick live calls by a hash of their trace id; jobs score them off the request path.

On the request path (`OnlineSampler`, in the `trace` slot inside the trace stage) a finished chat call is
checked against each enabled rule's filters (tenant, alias, feature, prompt version, tags) and kept when
`blake2b(rule name + trace id)` read as a fraction of 2⁶⁴ is below the rule's rate: a fixed decision
per (rule, call), with no lock, no I/O and no randomness to seed; a kept call is one tuple appended to a
bounded buffer. `Selections.flush` (a worker, every `online_evals.flush_ms`) turns the buffer into
`online.score` jobs, one per rule and batch, due `delay_s` after the last call in it.

`Scorer.run` (the job handler) reads each trace whole (its payload from the blob store when it is
there), runs the rule's assertions (keel.evals.assertions, judges through the gateway) and writes each
verdict twice: a `score` span of the trace (span id `score:<rule>:<scorer>`) and a score row
(keel.store.protocols.online) that rolls up per feature, model, alias and prompt version. Both writes
are idempotent, so a job that runs again (execution is at least once) writes nothing twice. A trace the
writer has not stored yet fails the attempt, which the queue retries with backoff.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from keel.evals.assertions import Judge, Output, Scoring, check, parse_assertion
from keel.gateway.call import Call, Outcome, Reply
from keel.gateway.pipeline import Handler
from keel.jobs.queue import JobQueue
from keel.store.protocols import (
    BlobStore,
    Job,
    JobContext,
    JobSpec,
    OnlineRule,
    ScoreRow,
    Store,
)
from keel.traces.spans import child_span
from keel.traces.writer import read_trace
from keel.types import ChatRequest, Span, Status, TraceRecord

log = logging.getLogger("keel.evals.online")
JOB_KIND = "online.score"
_SCALE = 2.0**64


def picked(rule_name: str, trace_id: str, rate: float) -> bool:
    """The sampling decision: stable per (rule, call), uniform over calls."""
    digest = hashlib.blake2b(f"{rule_name}|{trace_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") < rate * _SCALE


class RuleBook:
    """The enabled rules, in memory; replaced whole by `refresh` (from the store, off the event loop)."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self.rules: tuple[OnlineRule, ...] = ()
        self.by_name: dict[str, OnlineRule] = {}
        self._lock = asyncio.Lock()
        self._warned = Warned()

    def load(self) -> None:
        found = self._store.list_online_rules()
        self.by_name = {r.name: r for r in found}
        self.rules = tuple(r for r in found if r.enabled and r.rate > 0)  # one assignment: a call sees old or new

    async def refresh(self) -> None:
        async with self._lock:  # the worker's pass and an admin write's refresh never overlap
            try:
                await asyncio.to_thread(self.load)
            except Exception as exc:
                self._warned.warn("reading online eval rules failed (%s: %s); keeping the last ones", exc)


class Warned:
    """A warning logged at most every `every_s` while a store stays away (workers retry far more often)."""

    def __init__(self, every_s: float = 30.0) -> None:
        self._every = every_s
        self._at = float("-inf")

    def warn(self, message: str, exc: Exception, *args: object) -> None:
        if time.monotonic() - self._at >= self._every:
            self._at = time.monotonic()
            log.warning(message, type(exc).__name__, exc, *args)


@dataclass(slots=True)
class SelectionStats:
    selected: int = 0
    dropped: int = 0  # the buffer was full
    enqueued: int = 0  # calls handed to jobs
    failed: int = 0  # calls whose jobs could not be enqueued (store away): dropped, logged


class Selections:
    """The calls picked and not yet handed to jobs, bounded; `flush` enqueues them."""

    def __init__(
        self, queue: JobQueue | None, *, max_pending: int, batch_size: int, job_queue: str = "default"
    ) -> None:
        self._queue = queue
        self._pending: deque[tuple[str, str, str, float]] = deque()  # (rule, tenant, trace id, due)
        self._max = max_pending
        self._batch = batch_size
        self._job_queue = job_queue
        self._warned = Warned()
        self.stats = SelectionStats()

    def add(self, rule: OnlineRule, tenant: str, trace_id: str, now: float) -> None:
        if len(self._pending) >= self._max:
            self.stats.dropped += 1
            return
        self.stats.selected += 1
        self._pending.append((rule.name, tenant, trace_id, now + rule.delay_s))

    @property
    def pending(self) -> int:
        return len(self._pending)

    def specs(self) -> list[JobSpec]:
        """Take everything pending as job specs: per (rule, tenant), `batch_size` calls a job."""
        groups: dict[tuple[str, str], list[tuple[str, float]]] = {}
        while self._pending:
            rule, tenant, trace_id, due = self._pending.popleft()
            groups.setdefault((rule, tenant), []).append((trace_id, due))
        specs = []
        for (rule, tenant), items in groups.items():
            for i in range(0, len(items), self._batch):
                chunk = items[i : i + self._batch]
                payload = {"rule": rule, "traces": [t for t, _ in chunk]}
                run_at = max(d for _, d in chunk)
                specs.append(JobSpec(JOB_KIND, payload, queue=self._job_queue, tenant=tenant, run_at=run_at))
        return specs

    async def flush(self) -> None:
        if not self._pending or self._queue is None:
            return
        specs = self.specs()
        calls = sum(len(s.payload["traces"]) for s in specs)
        try:
            await self._queue.enqueue_many(specs)
        except Exception:
            self.stats.failed += calls
            log.exception(
                "enqueueing %d online scoring job(s) failed; %d selected call(s) go unscored", len(specs), calls
            )
            return
        self.stats.enqueued += calls


class OnlineSampler:
    """The `trace` slot's online-eval stage: picks finished chat calls for the rules. Never raises."""

    def __init__(
        self,
        book: RuleBook,
        selections: Selections,
        *,
        skip_feature: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._book = book
        self._selections = selections
        self._skip = skip_feature  # the judges' own calls: never scored
        self._clock = clock

    async def __call__(self, call: Call, next: Handler) -> Reply:
        reply = await next(call)
        if self._book.rules and isinstance(call.request, ChatRequest) and call.feature != self._skip:
            reply.on_done(lambda outcome: self.select(call, outcome))
        return reply

    def select(self, call: Call, outcome: Outcome) -> None:
        if outcome.error is not None or outcome.status != "ok" or call.principal is None:
            return
        tenant = call.principal.tenant
        trace_id = call.trace.id
        for rule in self._book.rules:
            if matches(rule, call, tenant) and picked(rule.name, trace_id, rule.rate):
                self._selections.add(rule, tenant, trace_id, self._clock())


def matches(rule: OnlineRule, call: Call, tenant: str) -> bool:
    if rule.tenant is not None and rule.tenant != tenant:
        return False
    if rule.alias is not None and (call.plan is None or call.plan.alias != rule.alias):
        return False
    if rule.feature is not None and call.feature != rule.feature:
        return False
    if rule.prompt_version is not None and call.trace.prompt_version != rule.prompt_version:
        return False
    if rule.tags:
        tags = call.tags or {}
        return all(str(tags.get(k)) == v for k, v in rule.tags)
    return True


# ---- scoring, in the job ------------------------------------------------------------------------


class TraceNotStored(RuntimeError):
    """The trace writer has not stored a selected call yet: the attempt fails and is retried."""


def scorer_name(assertion: dict[str, Any]) -> str:
    return str(assertion.get("metric") or assertion.get("type"))


def output_of(record: TraceRecord) -> Output:
    response = record.response if isinstance(record.response, dict) else {}
    calls = response.get("tool_calls") or ()
    tool_calls = tuple(
        {"id": c.get("id"), "type": "function", "function": {"name": c.get("name"), "arguments": c.get("arguments")}}
        for c in calls
        if isinstance(c, dict)
    )
    return Output(
        text=str(response.get("content") or ""),
        tool_calls=tool_calls,
        latency_ms=record.latency_ms or 0.0,
        cost_usd=record.cost_usd or 0.0,
        trace_id=record.id,
        raw=response,
    )


def scoring_of(record: TraceRecord, base: Scoring, judge: Judge | None) -> Scoring:
    request = record.request if isinstance(record.request, dict) else {}
    tools = request.get("tools")
    return Scoring(
        vars={"prompt": _last_user_text(request)},
        judge=judge,
        embed=base.embed,
        grader=base.grader,
        tools=tuple(tools) if isinstance(tools, list) else (),
    )


def _last_user_text(request: dict[str, Any]) -> str:
    for m in reversed(request.get("messages") or []):
        if isinstance(m, dict) and m.get("role") == "user":
            content = m.get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, list):
                return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return ""


class Scorer:
    """The `online.score` job handler."""

    def __init__(
        self,
        store: Store,
        blobs: BlobStore | None,
        book: RuleBook,
        put_span: Callable[[Span], None],
        scoring: Scoring,
        *,
        judge_for: Callable[[TraceRecord], Judge] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._blobs = blobs
        self._book = book
        self._put_span = put_span
        self._scoring = scoring
        self._judge_for = judge_for  # a judge calling as the scored call's tenant
        self._clock = clock

    async def run(self, job: Job, ctx: JobContext) -> Any:
        payload = job.payload if isinstance(job.payload, dict) else {}
        name = str(payload.get("rule"))
        rule = self._book.by_name.get(name)
        if rule is None:  # written moments ago through another process, or deleted: the store says which
            await self._book.refresh()
            rule = self._book.by_name.get(name)
        if rule is None:
            return {"scored": 0, "skipped": "rule deleted"}
        ids = [str(t) for t in payload.get("traces") or ()]
        rows: list[ScoreRow] = []
        missing = []
        for trace_id in ids:
            record = await asyncio.to_thread(read_trace, self._store, self._blobs, trace_id)
            if record is None:
                missing.append(trace_id)
                continue
            rows += await self.score(rule, record)
        added = await asyncio.to_thread(self._store.add_scores, rows)
        if missing:
            raise TraceNotStored(f"{len(missing)} of {len(ids)} traces are not stored yet (first: {missing[0]})")
        return {"scored": len(ids), "scores": len(rows), "new": added}

    async def score(self, rule: OnlineRule, record: TraceRecord) -> list[ScoreRow]:
        """Every scorer of `rule` on one trace: its score rows, its spans emitted."""
        judge = self._judge_for(record) if self._judge_for is not None else None
        output, scoring = output_of(record), scoring_of(record, self._scoring, judge)
        rows = []
        for obj in rule.scorers:
            name = scorer_name(obj)
            started = self._clock()
            verdict = await check(parse_assertion(obj), output, scoring)
            attributes = {
                "keel.score.rule": rule.name,
                "keel.score.scorer": name,
                "keel.score.value": verdict.score,
                "keel.score.passed": verdict.passed,
                "keel.score.reason": verdict.reason[:500],
            }
            if verdict.error:
                attributes["keel.score.error"] = verdict.error[:500]
            status: Status = "error" if verdict.error else "ok"
            span_id = f"score:{rule.name}:{name}"
            self._put_span(
                child_span(record, "score", name, started, self._clock(), span_id=span_id, status=status,
                           attributes=attributes)
            )  # fmt: skip
            if verdict.error:
                continue  # a scorer that could not score (a judge call failed) gives no value to roll up
            rows.append(
                ScoreRow(
                    trace_id=record.id,
                    rule=rule.name,
                    scorer=name,
                    at=record.started_at,
                    value=float(verdict.score),
                    passed=verdict.passed,
                    tenant=record.tenant,
                    feature=record.feature,
                    alias=record.alias,
                    model=record.model,
                    prompt_version=record.prompt_version,
                )
            )
        return rows
