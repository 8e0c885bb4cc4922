"""The root schema: `Config` composes one typed section per capability, and the checks that span
sections run here, in a fixed order, after each section's own.

Checks read typed sections: of the config or, when the schema rejected part of the file, of a draft
without that part (`keel.config.draft`). They ask the `Outline` what the typed sections cannot say:
the names the file declares, whether it sets a part at all, which values the schema rejected.
"""

from __future__ import annotations

from keel.config.parts import Model, Outline
from keel.config.sections import alerts, batches, evals, jobs, online_evals, providers, routing, sso, traces
from keel.config.sections.alerts import AlertsConfig
from keel.config.sections.audit import AuditConfig
from keel.config.sections.batches import AsyncCallsConfig, BatchesConfig
from keel.config.sections.cache import LOCAL_THRESHOLDS, CacheConfig
from keel.config.sections.evals import EvalsConfig
from keel.config.sections.jobs import JobsConfig
from keel.config.sections.limits import LimitsConfig
from keel.config.sections.online_evals import OnlineEvalsConfig
from keel.config.sections.providers import PriceConfig, ProviderConfig
from keel.config.sections.rag import RagConfig
from keel.config.sections.resilience import ResilienceConfig
from keel.config.sections.responses import ResponsesConfig
from keel.config.sections.routing import AliasConfig
from keel.config.sections.server import ServerConfig
from keel.config.sections.sso import SsoConfig
from keel.config.sections.storage import RedisConfig, StorageConfig
from keel.config.sections.traces import MetricsConfig, OtelConfig, RedactionConfig, RetentionConfig, TracesConfig
from keel.errors import ConfigIssue


class Config(Model):
    server: ServerConfig = ServerConfig()
    resilience: ResilienceConfig = ResilienceConfig()
    redis: RedisConfig = RedisConfig()
    limits: LimitsConfig = LimitsConfig()
    cache: CacheConfig = CacheConfig()
    admin_token: str | None = None
    storage: StorageConfig = StorageConfig()
    traces: TracesConfig = TracesConfig()
    retention: RetentionConfig = RetentionConfig()
    otel: OtelConfig = OtelConfig()
    metrics: MetricsConfig = MetricsConfig()
    alerts: AlertsConfig = AlertsConfig()
    jobs: JobsConfig = JobsConfig()
    redaction: RedactionConfig = RedactionConfig()
    responses: ResponsesConfig = ResponsesConfig()
    providers: dict[str, ProviderConfig] = {}
    models: dict[str, AliasConfig] = {}
    prices: dict[str, PriceConfig] = {}
    batches: BatchesConfig = BatchesConfig()
    async_calls: AsyncCallsConfig = AsyncCallsConfig()
    online_evals: OnlineEvalsConfig = OnlineEvalsConfig()
    evals: EvalsConfig = EvalsConfig()
    audit: AuditConfig = AuditConfig()  # the audit log's streaming export to a SIEM
    sso: SsoConfig = SsoConfig()
    rag: RagConfig = RagConfig()


def cross_check(cfg: Config, outline: Outline) -> list[ConfigIssue]:
    """Every check beyond the schema, each section's own and those spanning sections, in report order."""
    issues = [issue for name, p in cfg.providers.items() for issue in providers.check(name, p, outline)]
    issues += _check_targets(cfg, outline)
    issues += routing.check(cfg.models, outline.aliases)
    issues += _check_cache(cfg, outline)
    issues += traces.check_otel(cfg.otel, outline)
    if cfg.alerts.rules and not outline.given & {"alerts.webhook", "limits.webhook"}:
        fix = "set alerts.webhook: {url: https://..., secret: ${KEEL_ALERT_SECRET}} (or limits.webhook)"
        issues.append(ConfigIssue("alerts.webhook", "alert rules are configured but no webhook to send them to", fix))
    issues += alerts.check(cfg.alerts, outline)
    if cfg.metrics.require_token and "admin_token" not in outline.given:
        fix = "set admin_token (scrapers send it as a bearer token), or set metrics.require_token: false"
        issues.append(ConfigIssue("metrics.require_token", "needs an admin_token to check", fix))
    issues += traces.check_blobs(cfg.traces, outline)
    issues += batches.check(cfg.async_calls, outline)
    issues += evals.check(cfg.evals)
    issues += jobs.check(cfg.jobs, outline)
    issues += online_evals.check(cfg.online_evals, outline)
    oe = cfg.online_evals
    if (oe.monitors or oe.drift) and not outline.given & {"online_evals.webhook", "alerts.webhook", "limits.webhook"}:
        fix = "set online_evals.webhook: {url: https://..., secret: ${KEEL_ALERT_SECRET}} (or alerts.webhook)"
        issues.append(ConfigIssue("online_evals.webhook", "monitors or drift checks need a webhook to alert", fix))
    issues += sso.check(cfg.sso, outline)
    if cfg.sso.providers and not outline.given & {"admin_token", "sso.session_secret"}:
        fix = "set sso.session_secret: ${KEEL_SESSION_SECRET} (openssl rand -hex 32), the same on every replica"
        issues.append(ConfigIssue("sso.session_secret", "SSO sign-ins need a key to sign dashboard sessions", fix))
    if outline.providers and "models" not in outline.given:
        fix = "add an alias under models: with its targets"
        issues.append(ConfigIssue("models", "providers are configured but no model alias is", fix))
    return issues


def _check_targets(cfg: Config, outline: Outline) -> list[ConfigIssue]:
    """Each target names a provider the file declares."""
    issues: list[ConfigIssue] = []
    known = ", ".join(sorted(outline.providers)) or "(none configured)"
    for alias, a in cfg.models.items():
        for i, t in enumerate(a.targets):
            if t.provider not in outline.providers:
                path = f"models.{alias}.targets[{i}].provider"
                issues.append(ConfigIssue(path, f"unknown provider '{t.provider}'", f"use one of: {known}"))
    return issues


def _check_cache(cfg: Config, outline: Outline) -> list[ConfigIssue]:
    """The semantic cache needs the cache on, and its embedder is `local` or an alias."""
    issues: list[ConfigIssue] = []
    semantic = cfg.cache.semantic
    aliases = cfg.models.values()
    wants_semantic = semantic.enabled or any(a.cache.semantic is True for a in aliases)
    enabled = cfg.cache.enabled or any(a.cache.enabled is True for a in aliases)
    enabled = enabled or len(cfg.models) < len(outline.aliases)  # an alias the schema rejected may turn it on
    if wants_semantic and not enabled:
        fix = "set cache.enabled: true (semantic matches answer from the same cache)"
        issues.append(ConfigIssue("cache.semantic.enabled", "the semantic cache is on but the cache is off", fix))
    if semantic.embedder not in LOCAL_THRESHOLDS and semantic.embedder not in outline.aliases:
        known = ", ".join(sorted(outline.aliases)) or "(none configured)"
        fix = f"use local or local-int8 (the bundled all-MiniLM-L6-v2) or an embeddings alias: {known}"
        issues.append(ConfigIssue("cache.semantic.embedder", f"unknown alias '{semantic.embedder}'", fix))
    return issues


def warnings(cfg: Config) -> list[ConfigIssue]:
    """Valid settings that defeat themselves: `keel config check` and `keel serve` report them."""
    r = cfg.resilience
    falling_back = [alias for alias, a in cfg.models.items() if a.fallbacks or len(a.targets) > 1]
    issues: list[ConfigIssue] = []
    if falling_back and r.ttft_timeout_s >= r.total_timeout_s:
        message = (
            f"{r.ttft_timeout_s:g} s is not below total_timeout_s ({r.total_timeout_s:g} s): after a first-token"
            f" timeout no time is left for the fallbacks of {', '.join(falling_back)}"
        )
        fix = "set resilience.ttft_timeout_s well below total_timeout_s (e.g. 10 and 120)"
        issues.append(ConfigIssue("resilience.ttft_timeout_s", message, fix))
    for name, p in cfg.providers.items():  # a call is held only if its deadline outlasts the wait
        if p.readiness not in (None, False) and p.cold_start_wait_s >= r.total_timeout_s:
            message = (
                f"{p.cold_start_wait_s:g} s is not below resilience.total_timeout_s ({r.total_timeout_s:g} s):"
                " calls without a longer x-keel-timeout are never held, they go to the next target at once"
            )
            fix = "lower cold_start_wait_s, or raise resilience.total_timeout_s above it"
            issues.append(ConfigIssue(f"providers.{name}.cold_start_wait_s", message, fix))
    return issues
