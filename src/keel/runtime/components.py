"""The one composition root: Config → the capabilities' builders → the pipeline, workers and parts.

`BUILDERS` lists the capabilities, one line each, in build order (a builder finds what earlier ones
offered). Their stages are composed by slot (`gateway.pipeline.SLOTS`), not by this order; their
workers start in this order and stop in reverse, and so do their start and close hooks. Adding a
capability is a new package with a builder and one line here (or, for an embedder or a test,
`Runtime.build(config, extra=[builder])`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from keel.agents import builder as agents
from keel.alerts import builder as alerts
from keel.alerts.builder import Alerts
from keel.alerts.rules import RuleEvaluator
from keel.alerts.sender import AlertSender
from keel.audit import builder as audit
from keel.cache import builder as cache
from keel.cache.stage import CacheStage
from keel.config import Config
from keel.evals import builder as evals
from keel.evals import online_builder as online_evals
from keel.gateway import builder as gateway
from keel.gateway.backpressure import Gates
from keel.gateway.builder import GatewayParts
from keel.gateway.capability import Builder, Context, Contribution, Pipeline
from keel.gateway.health import HealthBook
from keel.gateway.pipeline import Handler, build_pipeline, in_slot_order
from keel.gateway.routing import Router
from keel.jobs import builder as jobs
from keel.jobs import deferred
from keel.jobs.plugins import load_builders
from keel.jobs.queue import JobQueue
from keel.jobs.registry import JobRegistry
from keel.keys import builder as keys
from keel.keys.auth import Authenticator
from keel.limits import builder as limits
from keel.limits.book import LimitBook
from keel.limits.stage import LimitsStage
from keel.prompts import builder as prompts
from keel.providers.base import Provider
from keel.providers.http import Sessions
from keel.providers.prices import PriceBook
from keel.rag import builder as rag_index
from keel.rag import ingest_builder as rag_ingest
from keel.runtime.workers import Workers
from keel.store.open import open_store
from keel.store.protocols import BlobStore, BreakerStore, LimitStore, Store
from keel.tenancy import builder as tenancy
from keel.tenancy import sso
from keel.traces import builder as traces
from keel.traces.metrics import Metrics
from keel.traces.otel import SpanExporter
from keel.traces.redaction import Redactor
from keel.traces.stage import TraceStage
from keel.traces.writer import TraceWriter
from keel.types import Span

__all__ = ["BUILDERS", "Runtime"]
T = TypeVar("T")

BUILDERS: tuple[Builder, ...] = (
    traces.build,  # trace slot; writer, metrics, OTLP export, redaction, blobs; retention worker
    gateway.build,  # route, failover slots and the invoke handler; providers, prices, breakers, gates
    keys.build,  # auth slot; revocation poll worker
    alerts.build,  # webhook senders and alert rules workers; offers the ThresholdAlert port
    limits.build,  # limits slot; overrides refresh worker
    audit.build,  # the hash-chained audit log (AuditLog) that agents, prompts and tenancy append to
    cache.build,  # cache slot (when any alias caches)
    jobs.build,  # the job queue, its workers and the registry every builder's `jobs` handlers join
    deferred.build,  # async calls, their webhook deliveries and OpenAI batches, as job kinds
    prompts.build,  # prompt slot; versions and labels in memory; their refresh worker
    rag_index.build,  # the RAG index (offered as Index), the retrieve slot
    rag_ingest.build,  # RAG collections and documents; ingestion, purge and re-chunk job kinds; orphan sweep
    online_evals.build,  # online eval rules (a trace-slot sampler), scoring jobs, score monitors, drift checks
    evals.build,  # eval suite runs as jobs (through the pipeline), datasets
    agents.build,  # tools, secrets, sandbox, runs and approvals; the runs worker
    tenancy.build,  # users, teams, roles and personal access tokens (Directory) the admin guard resolves
    sso.build,  # OpenID Connect sign-in and JWT bearers (SignOn), when `sso.providers` lists any
)


@dataclass
class Runtime:
    config: Config
    store: Store
    pipeline: Handler
    workers: Workers
    context: Context
    contributions: tuple[Contribution, ...]
    # The parts the edges use, found once at build time (the hot path reads attributes, not lookups).
    writer: TraceWriter = field(init=False)
    trace_stage: TraceStage = field(init=False)
    redactor: Redactor | None = field(init=False)
    blobs: BlobStore | None = field(init=False)  # large trace payloads
    exporter: SpanExporter | None = field(init=False)  # OpenTelemetry export, when `otel:` is configured
    metrics: Metrics | None = field(init=False)  # per-call Prometheus counters, unless `metrics.enabled: false`
    authenticator: Authenticator = field(init=False)
    limits_stage: LimitsStage = field(init=False)
    limits: LimitStore = field(init=False)
    cache_stage: CacheStage | None = field(init=False)
    alerts: AlertSender | None = field(init=False)  # soft-limit crossings' webhook sender
    rules: RuleEvaluator | None = field(init=False)  # alert rules, when `alerts.rules` has any
    rule_alerts: AlertSender | None = field(init=False)  # their webhook sender, when it is not the limits' one
    router: Router = field(init=False)
    providers: dict[str, Provider] = field(init=False)
    sessions: Sessions = field(init=False)
    prices: PriceBook = field(init=False)
    breakers: BreakerStore = field(init=False)
    health: HealthBook = field(init=False)
    gates: Gates = field(init=False)
    jobs: JobQueue | None = field(init=False)

    def __post_init__(self) -> None:
        ctx = self.context
        self.writer, self.trace_stage = ctx.get(TraceWriter), ctx.get(TraceStage)
        self.redactor, self.blobs = ctx.find(Redactor), ctx.find(BlobStore)  # type: ignore[type-abstract]
        self.exporter, self.metrics = ctx.find(SpanExporter), ctx.find(Metrics)
        self.authenticator = ctx.get(Authenticator)
        self.limits_stage, self.limits = ctx.get(LimitsStage), ctx.get(LimitStore)  # type: ignore[type-abstract]
        self.cache_stage = ctx.find(CacheStage)
        found = ctx.find(Alerts) or Alerts(None, None, None)
        self.alerts, self.rules, self.rule_alerts = found.limits, found.rules, found.rule_sender
        up = ctx.get(GatewayParts)
        self.router, self.providers, self.sessions, self.prices = up.router, up.providers, up.sessions, up.prices
        self.breakers, self.health, self.gates = up.breakers, up.health, up.gates
        self.jobs = ctx.find(JobQueue)

    @classmethod
    def build(
        cls,
        config: Config,
        store: Store | None = None,
        *,
        builders: Sequence[Builder] = BUILDERS,
        extra: Sequence[Builder] = (),
    ) -> Runtime:
        """Run the builders in order (then `extra`, e.g. a test's capability, then `jobs.plugins`) and
        compose what they give."""
        ctx = Context(config, store or open_store(config.storage.url))
        made = tuple(build(ctx) for build in (*builders, *extra, *load_builders(config.jobs.plugins)))
        last = [c.invoke for c in made if c.invoke is not None]
        if len(last) != 1:
            raise ValueError(f"exactly one builder must give the invoke handler; {len(last)} did")
        pipeline = build_pipeline(in_slot_order(s for c in made for s in c.stages), last[0])
        ctx.add(Pipeline(pipeline))
        registry = ctx.find(JobRegistry)
        if registry is not None:
            registry.register_all(c.jobs for c in made)
        elif any(c.jobs for c in made):
            raise ValueError("a builder gives job handlers but no builder runs the job queue (keel.jobs.builder)")
        workers = Workers([w for c in made for w in c.workers])
        return cls(config, ctx.store, pipeline, workers, ctx, made)

    def get(self, kind: type[T]) -> T:
        """A part a builder offered, by type (`runtime.get(Authenticator)`)."""
        return self.context.get(kind)

    def find(self, kind: type[T]) -> T | None:
        return self.context.find(kind)

    async def start(self) -> None:
        for c in self.contributions:
            for start in c.start:
                start()
        self.workers.start()

    def limits_book(self) -> LimitBook:
        return self.limits_stage.book

    def put_span(self, span: Span) -> None:
        """Emit a child span of a call (keel.traces.spans.child_span): stored beside its trace row by the
        trace writer, exported under the call's span when OpenTelemetry is configured. Never blocks."""
        self.writer.put_span(span)
        if self.exporter is not None:
            self.exporter.put_span(span)

    async def aclose(self) -> None:
        await self.workers.stop()
        for c in reversed(self.contributions):
            for close in c.close:
                await close()
        # A cancelled worker's store call may still run in a thread (cancelling `to_thread` does not
        # stop it), and closing an SQLite connection under a query crashes the process: let those end,
        # within a bound (a dead database never holds up exit).
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.get_running_loop().shutdown_default_executor(), 5.0)
        self.store.close()
