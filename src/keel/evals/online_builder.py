"""The online evals' builder: the sampler in the `trace` slot, the `online.score` job kind, and the
workers that refresh rules, turn selections into jobs, judge monitors and run scheduled drift checks.

Judges (llm-rubric, …) call through the composed pipeline as the scored call's tenant (the eval runs'
`GatewayCalls`), with feature `keel.online-evals` so the sampler never picks a judge's own call. Alerts go through a signed webhook
sender: the alerts capability's when the hook is the same, else one of its own.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from keel.alerts.builder import Alerts, sender
from keel.alerts.sender import AlertSender, RuleEvent
from keel.evals.assertions import Judge, Scoring
from keel.evals.calls import GatewayCalls
from keel.evals.monitors import DriftChecks, Monitors
from keel.evals.online import JOB_KIND, OnlineSampler, RuleBook, Scorer, Selections
from keel.gateway.capability import Context, Contribution, Pipeline, Worker
from keel.jobs.calls import Caller
from keel.jobs.queue import JobQueue
from keel.store.protocols import BlobStore
from keel.traces.otel import SpanExporter
from keel.traces.writer import TraceWriter
from keel.types import Principal, Span, TraceRecord

if TYPE_CHECKING:
    from keel.embedding.model import LocalEmbedder

JUDGE_FEATURE = "keel.online-evals"
JUDGE_KEY = "keel:online-evals"


@dataclass(frozen=True, slots=True)
class OnlineEvals:
    """What the edges use (`ctx.get(OnlineEvals)`): the rules in memory, the selections, the scorer."""

    book: RuleBook
    selections: Selections
    scorer: Scorer
    monitors: Monitors | None
    drift: tuple[DriftChecks, ...]
    sender: AlertSender | None  # this capability's own webhook sender, when it does not share the alerts' one


class LocalEmbed:
    """The local embedding model, loaded on first use (a second or two), shared by scorers and drift."""

    def __init__(self) -> None:
        self._model: LocalEmbedder | None = None
        self._lock = threading.Lock()

    def __call__(self, texts: Sequence[str]) -> Any:
        if self._model is None:
            with self._lock:
                if self._model is None:
                    from keel.embedding.model import LocalEmbedder

                    self._model = LocalEmbedder()
        return self._model.embed(texts)


def judges(ctx: Context) -> Callable[[TraceRecord], Judge]:
    """The judge of one scored call: the grader alias through the pipeline as the call's tenant (the eval
    runs' `GatewayCalls`), tagged `eval_run=online`, `eval_item=<the scored trace id>`, `eval_judge=1`."""
    payloads = ctx.config.traces.store_payloads

    def judge_for(record: TraceRecord) -> Judge:
        caller = Caller(Principal(record.tenant or "", JUDGE_KEY, "online evals"), feature=JUDGE_FEATURE)
        calls = GatewayCalls(ctx.get(Pipeline).handler, caller, "online", store_payloads=payloads)
        judge: Judge = calls.judge(record.id)
        return judge

    return judge_for


def build(ctx: Context) -> Contribution:
    oe = ctx.config.online_evals
    store = ctx.store
    book = RuleBook(store)
    book.load()
    selections = Selections(
        ctx.find(JobQueue), max_pending=oe.max_pending, batch_size=oe.batch_size, job_queue=oe.queue
    )
    writer, exporter = ctx.get(TraceWriter), ctx.find(SpanExporter)

    def put_span(span: Span) -> None:
        writer.put_span(span)
        if exporter is not None:
            exporter.put_span(span)

    blobs = ctx.find(BlobStore)  # type: ignore[type-abstract]
    embed = LocalEmbed()
    scorer = Scorer(store, blobs, book, put_span, Scoring(embed=embed, grader=oe.judge), judge_for=judges(ctx))
    send, own = _sender(ctx)
    monitors = Monitors(oe.monitors, store, send, every_s=oe.evaluate_every_s) if oe.monitors and send else None
    checks = tuple(DriftChecks(c, store, blobs, embed, send) for c in oe.drift) if send is not None else ()
    ctx.add(OnlineEvals(book, selections, scorer, monitors, checks, own))
    workers = [
        Worker("online-rules", book.refresh, oe.rules_refresh_s),
        Worker("online-selections", selections.flush, oe.flush_ms / 1000),
    ]
    workers += [Worker("online-monitors", monitors.tick, monitors.every_s)] if monitors is not None else []
    workers += [Worker(f"drift-{c.name}", d.run, _every(c.every)) for c, d in zip(oe.drift, checks, strict=True)]
    workers += [Worker("online-alerts", own.run)] if own is not None else []

    async def close() -> None:
        await selections.flush()  # what was picked before shutdown still becomes jobs
        if own is not None:
            await own.aclose()

    return Contribution(
        [("trace", OnlineSampler(book, selections, skip_feature=JUDGE_FEATURE))],
        workers=workers,
        close=[close],
        jobs={JOB_KIND: scorer.run},
    )


def _every(text: str) -> float:
    from keel.config.sections.online_evals import seconds

    return float(seconds(text))


Send = Callable[[RuleEvent], None]


def _sender(ctx: Context) -> tuple[Send | None, AlertSender | None]:
    """Where monitor and drift events go, and the sender this builder runs itself (if any)."""
    config = ctx.config
    hook = config.online_evals.webhook or config.alerts.webhook or config.limits.webhook
    if hook is None:
        return None, None
    alerts = ctx.find(Alerts)
    if alerts is not None:
        shared = [
            (config.limits.webhook, alerts.limits),
            (config.alerts.webhook or config.limits.webhook, alerts.rule_sender),
        ]
        for their_hook, their_sender in shared:
            if their_sender is not None and their_hook == hook:
                return _send(their_sender), None
    own = sender(hook, ctx.store)
    return _send(own), own


def _send(s: AlertSender) -> Send:
    return s.send
