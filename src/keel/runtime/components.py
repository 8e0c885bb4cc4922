"""The one composition root: Config → the object graph the edges (api, cli) use."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field

from keel.alerts.rules import RuleEvaluator
from keel.alerts.sender import AlertSender
from keel.cache.policy import CachePolicy
from keel.cache.stage import CacheStage, TextEmbedder
from keel.catalog import CATALOG
from keel.config import AliasCacheConfig, Config, WebhookConfig
from keel.embedding.text import AliasTextEmbedder, LocalTextEmbedder
from keel.errors import ConfigError, ConfigIssue
from keel.gateway.backpressure import Gates
from keel.gateway.call import Call
from keel.gateway.health import HealthBook
from keel.gateway.pipeline import Handler, Stage, build_pipeline
from keel.gateway.routing import Router
from keel.gateway.stages.failover import FailoverStage, RetryPolicy
from keel.gateway.stages.invoke import Invoker
from keel.gateway.stages.route import RouteStage
from keel.keys.auth import Authenticator
from keel.keys.stage import AuthStage
from keel.limits.book import LimitBook, book_from
from keel.limits.stage import LimitsStage
from keel.providers.base import Provider
from keel.providers.http import Sessions
from keel.providers.prices import PriceBook, price_from_config
from keel.providers.registry import build_provider
from keel.store.open import open_blobs, open_breakers, open_cache, open_limits, open_store, open_vectors
from keel.store.protocols import BlobStore, BreakerPolicy, BreakerStore, LimitStore, Store
from keel.traces.genai import upstreams
from keel.traces.metrics import Metrics
from keel.traces.otel import SpanExporter
from keel.traces.redaction import Redactor
from keel.traces.retention import RetentionPolicy, sweep
from keel.traces.stage import Export, TraceStage
from keel.traces.writer import TraceWriter
from keel.types import RoutePlan, Span, Target

log = logging.getLogger("keel.runtime")


@dataclass
class Runtime:
    config: Config
    store: Store
    writer: TraceWriter
    authenticator: Authenticator
    router: Router
    providers: dict[str, Provider]
    sessions: Sessions
    prices: PriceBook
    breakers: BreakerStore
    health: HealthBook
    limits: LimitStore
    limits_stage: LimitsStage
    gates: Gates
    alerts: AlertSender | None
    trace_stage: TraceStage
    cache_stage: CacheStage | None
    pipeline: Handler
    exporter: SpanExporter | None = None  # OpenTelemetry export, when `otel:` is configured
    metrics: Metrics | None = None  # per-call Prometheus counters, unless `metrics.enabled: false`
    rules: RuleEvaluator | None = None  # alert rules, when `alerts.rules` has any
    rule_alerts: AlertSender | None = None  # their webhook sender, when it is not the limits' one
    redactor: Redactor | None = None
    blobs: BlobStore | None = None  # large trace payloads
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @classmethod
    def build(cls, config: Config, store: Store | None = None) -> Runtime:
        store = store or open_store(config.storage.url)
        redactor = Redactor.from_config(config)
        t = config.traces
        blobs = blobs_from(config)
        writer = TraceWriter(
            store,
            queue_size=t.queue_size,
            batch_size=t.batch_size,
            flush_interval=t.flush_interval_ms / 1000,
            spill_dir=t.spill_dir,
            scrub=redactor.scrub,
            blobs=blobs,
            blob_threshold=t.blob_threshold_bytes,
            deadletter_max_bytes=t.deadletter_max_bytes,
            stall_after=t.stall_after_s,
            spans=store,
            scrub_span=redactor.scrub_span,
        )
        sc = config.server
        authenticator = Authenticator(store, ttl=sc.key_cache_ttl_s, poll=sc.revocation_poll_s, stale=sc.key_stale_s)
        sessions = Sessions()
        providers = {
            name: build_provider(name, p, sessions, redact=redactor.credentials) for name, p in config.providers.items()
        }
        prices = PriceBook.bundled({m: price_from_config(p) for m, p in config.prices.items()})
        r = config.resilience
        policy = RetryPolicy(
            retries_per_target=r.retries_per_target,
            max_attempts=r.max_attempts,
            backoff_s=r.backoff_ms / 1000,
            backoff_max_s=r.backoff_max_ms / 1000,
            retry_after_cap_s=r.retry_after_cap_s,
            rate_limit_floor_s=r.rate_limit_floor_ms / 1000,
            total_timeout_s=r.total_timeout_s,
            max_total_timeout_s=r.max_total_timeout_s,
        )
        b = r.breaker
        breakers = open_breakers(
            config.redis.url, BreakerPolicy(b.failures, b.error_rate, b.window, b.min_calls, b.cooldown_s)
        )
        health = HealthBook()
        regions = {name: p.region for name, p in config.providers.items()}
        router = Router(config.models, regions, prices, health)

        def plan_for(call: Call, alias: str) -> RoutePlan:
            # Fallbacks are the operator's policy: not limited by the key's aliases, but by residency.
            assert call.principal is not None
            return router.plan(alias, call.request, call.principal, None, follow_rules=False)

        prefill = [name for name, p in config.providers.items() if CATALOG[p.type].prefill]
        failover = FailoverStage(policy, breakers, health, plan_for, prefill=prefill)
        limits = open_limits(config.redis.url)
        hook = config.limits.webhook
        alerts = sender(hook, store) if hook is not None else None
        limits_stage = LimitsStage(
            limits,
            book_from(config.limits, store.list_limits()),
            prices,
            default_output_tokens=config.limits.default_output_tokens,
            thresholds=tuple(config.limits.soft_thresholds),
            alert=alerts.threshold_crossed if alerts is not None else None,
        )
        exporter = SpanExporter(config.otel, upstreams(config), redactor=redactor) if config.otel.enabled else None
        metrics = Metrics(tenant_label=config.metrics.tenant_label) if config.metrics.enabled else None
        consumers: list[Export] = [metrics.observe] if metrics is not None else []
        consumers += [exporter.put] if exporter is not None else []
        trace_stage = TraceStage(writer, consumers, max_response_chars=config.traces.max_response_chars)
        stages: list[Stage] = [trace_stage, AuthStage(authenticator), RouteStage(router), limits_stage]
        cache_stage = build_cache(config, providers)
        stages += [cache_stage, failover] if cache_stage is not None else [failover]
        caps = {
            f"{t.provider}/{t.model}": (t.max_concurrency, t.queue_limit)
            for a in config.models.values()
            for t in a.targets
            if t.max_concurrency is not None
        }
        gates = Gates(caps)
        invoker = Invoker(providers, prices, ttft_timeout=r.ttft_timeout_s, idle_timeout=r.idle_timeout_s, gates=gates)
        pipeline = build_pipeline(stages, invoker)
        return cls(
            config,
            store,
            writer,
            authenticator,
            router,
            providers,
            sessions,
            prices,
            breakers,
            health,
            limits,
            limits_stage,
            gates,
            alerts,
            trace_stage,
            cache_stage,
            pipeline,
            exporter,
            metrics,
            *build_rules(config, store, alerts),
            redactor,
            blobs,
        )

    async def start(self) -> None:
        self.writer.start()
        if self.exporter is not None:
            self.exporter.start()
        self._tasks.append(asyncio.create_task(self.authenticator.run(), name="keel-revocations"))
        self._tasks.append(asyncio.create_task(self._refresh_limits(), name="keel-limit-overrides"))
        if self.alerts is not None:
            self._tasks.append(asyncio.create_task(self.alerts.run(), name="keel-alerts"))
        if self.rule_alerts is not None:
            self._tasks.append(asyncio.create_task(self.rule_alerts.run(), name="keel-rule-alerts"))
        if self.rules is not None:
            self._tasks.append(asyncio.create_task(self.rules.run(), name="keel-alert-rules"))
        policy = RetentionPolicy.from_config(self.config.retention)
        if policy.deletes_traces or self.blobs is not None:
            self._tasks.append(asyncio.create_task(self._sweep_retention(policy), name="keel-retention"))

    def limits_book(self) -> LimitBook:
        return self.limits_stage.book

    async def _refresh_limits(self, every: float = 2.0) -> None:
        """Per-tenant and per-key overrides reach every process within `every` seconds; an outage never stops this."""
        warned_at = float("-inf")
        while True:
            await asyncio.sleep(every)
            read_at = time.time()
            try:
                overrides = await asyncio.to_thread(self.store.list_limits)
            except Exception as exc:
                if time.monotonic() - warned_at >= 30.0:  # once per half minute of an outage, not every read
                    warned_at = time.monotonic()
                    log.warning(
                        "reading limit overrides failed (%s: %s); keeping the last ones", type(exc).__name__, exc
                    )
                continue
            self.limits_stage.update(book_from(self.config.limits, overrides), read_at)

    async def _sweep_retention(self, policy: RetentionPolicy) -> None:
        """Old traces and orphan blobs leave every `sweep_every_s`, off the request path (in a thread)."""
        every = self.config.retention.sweep_every_s
        await asyncio.sleep(min(every, 60.0))  # a first pass soon after start, then on the clock
        while True:
            try:
                report = await asyncio.to_thread(sweep, self.store, self.blobs, policy, time.time())
                if report.traces or report.orphan_blobs:
                    log.info(
                        "retention: deleted %d traces, %d blobs, %d orphan blobs",
                        report.traces,
                        report.blobs,
                        report.orphan_blobs,
                    )
            except Exception:  # a flaky store must not stop the sweeper
                log.exception("retention sweep failed; will retry")
            await asyncio.sleep(every)

    async def aclose(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await asyncio.to_thread(self.authenticator.close)  # its reads end before the store closes
        for provider in self.providers.values():
            await provider.aclose()
        await self.sessions.aclose()
        await self.breakers.aclose()
        await self.limits.aclose()
        if self.cache_stage is not None:
            await self.cache_stage.aclose()
        for hooks in (self.alerts, self.rule_alerts):
            if hooks is not None:
                await hooks.aclose()  # sends what is queued, within its drain time
        await asyncio.to_thread(self.writer.close)
        if self.exporter is not None:
            await asyncio.to_thread(self.exporter.close)  # sends what is queued, within its timeout
        self.store.close()
        if self.blobs is not None:
            self.blobs.close()

    def put_span(self, span: Span) -> None:
        """Emit a child span of a call (keel.traces.spans.child_span): stored beside its trace row by the
        trace writer, exported under the call's span when OpenTelemetry is configured. Never blocks."""
        self.writer.put_span(span)
        if self.exporter is not None:
            self.exporter.put_span(span)


def blobs_from(config: Config) -> BlobStore:
    """The blob store for large trace payloads: `traces.blobs_url`, else a directory beside the database."""
    t = config.traces
    url = t.blobs_url or default_blobs_url(config)
    s3 = t.s3
    return open_blobs(
        url,
        endpoint=s3.endpoint,
        region=s3.region,
        access_key_id=s3.access_key_id,
        secret_access_key=s3.secret_access_key,
    )


def default_blobs_url(config: Config) -> str:
    """<db stem>-blobs beside a SQLite file; .keel/blobs otherwise (set an s3:// URL for several hosts)."""
    storage = config.storage.url
    if storage.startswith("sqlite:///") and storage != "sqlite:///:memory:":
        path = storage.removeprefix("sqlite:///")
        return f"file://{path[: -len('.db')] if path.endswith('.db') else path}-blobs"
    return "file://.keel/blobs"


def cache_urls(config: Config) -> tuple[str | None, str | None]:
    """(exact cache URL, vector index URL) as the gateway opens them; None where that part is off."""
    c = config.cache
    policies = [CachePolicy.resolve(c, a.cache) for a in config.models.values()]
    policies.append(CachePolicy.resolve(c, AliasCacheConfig()))
    if not any(p.enabled for p in policies):
        return None, None
    url = c.url or default_cache_url(config)
    if not any(p.semantic for p in policies):
        return url, None
    return url, c.semantic.vectors_url or (url if url.startswith("sqlite:///") else "memory://")


def sender(hook: WebhookConfig, store: Store) -> AlertSender:
    return AlertSender(hook.url, hook.secret, claim=store.claim_alert, timeout_s=hook.timeout_s, retries=hook.retries)


def build_rules(
    config: Config, store: Store, limit_alerts: AlertSender | None
) -> tuple[RuleEvaluator | None, AlertSender | None]:
    """The rule evaluator, and a sender of its own unless the rules share the limits' webhook."""
    a = config.alerts
    if not a.rules:
        return None, None
    hook = a.webhook or config.limits.webhook
    assert hook is not None  # the config check requires one
    own = None if limit_alerts is not None and hook == config.limits.webhook else sender(hook, store)
    out = own or limit_alerts
    assert out is not None
    return RuleEvaluator(a.rules, store, out.send, every_s=a.evaluate_every_s), own


def build_cache(config: Config, providers: dict[str, Provider]) -> CacheStage | None:
    """The cache stage, when any alias uses the cache; its store, and for semantic matches, vectors."""
    c = config.cache
    policies = {alias: CachePolicy.resolve(c, a.cache) for alias, a in config.models.items()}
    default = CachePolicy.resolve(c, AliasCacheConfig())
    url, vectors_url = cache_urls(config)
    if url is None:
        return None
    store = open_cache(url, max_entries=c.max_entries)
    # in-process stores cannot hang; a file, Redis or PostgreSQL can, and the request must not wait on it
    local = url == "memory://" and vectors_url in (None, "memory://")
    read_timeout = None if local else c.read_timeout_ms / 1000
    if vectors_url is None:
        return CacheStage(store, policies, default, read_timeout=read_timeout)
    vectors = open_vectors(vectors_url, max_entries=c.max_entries)
    embedder: TextEmbedder
    if c.semantic.embedder == "local":
        from keel.embedding.model import LocalEmbedder, ModelNotInstalled

        try:
            embedder = LocalTextEmbedder(LocalEmbedder())
        except ModelNotInstalled as exc:
            fix = "install it as the message says, or set cache.semantic.embedder to an embeddings alias"
            raise ConfigError([ConfigIssue("cache.semantic.embedder", str(exc), fix)]) from None
    else:
        t = config.models[c.semantic.embedder].targets[0]
        embedder = AliasTextEmbedder(providers[t.provider], Target(t.provider, t.model))
    from keel.embedding.model import verify

    checker = verify if c.semantic.verify else None
    return CacheStage(
        store, policies, default, vectors=vectors, embedder=embedder, verify=checker, read_timeout=read_timeout
    )


def default_cache_url(config: Config) -> str:
    """A file beside a SQLite storage (one process); Redis when configured (several); else memory."""
    storage = config.storage.url
    if config.redis.url:
        return config.redis.url
    if storage.startswith("sqlite:///"):
        path = storage.removeprefix("sqlite:///")
        stem = path[: -len(".db")] if path.endswith(".db") else path
        return f"sqlite:///{stem}-cache.db"
    return "memory://"
