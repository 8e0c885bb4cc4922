"""`keel.yaml`: parsed, `${ENV}`-expanded and checked whole before anything starts.

Every problem is reported at once as a `ConfigIssue(path, message, fix)`; unknown keys are refused.
Pydantic lives here and at the HTTP edge only; the rest of Keel reads these frozen models.

The package: `root` (the `Config` schema composing the sections, and the checks spanning them),
`load` (file, `${ENV}`, validation, one report), `sections/<capability>` (one typed section and its
own checks each), `starter.yaml` (what `keel init` writes). This module re-exports the names the rest
of Keel imports, so `from keel.config import Config, AliasCacheConfig` keeps working; new code may
import from a section module directly.
"""

from __future__ import annotations

from importlib.resources import files

from keel.config.load import DEFAULT_PATH, demo_config, load, parse
from keel.config.parts import WebhookConfig
from keel.config.root import Config, warnings
from keel.config.sections.alerts import AlertMetric, AlertRuleConfig, AlertsConfig, AlertScope
from keel.config.sections.cache import LOCAL_THRESHOLDS, CacheConfig, SemanticCacheConfig
from keel.config.sections.jobs import JobKindConfig, JobsConfig
from keel.config.sections.limits import LimitRule, LimitsConfig, LimitScope
from keel.config.sections.providers import PriceConfig, ProviderConfig
from keel.config.sections.resilience import BreakerConfig, ResilienceConfig
from keel.config.sections.routing import AliasCacheConfig, AliasConfig, Capability, RuleConfig, SloConfig, TargetConfig
from keel.config.sections.server import ServerConfig
from keel.config.sections.storage import RedisConfig, StorageConfig
from keel.config.sections.traces import (
    OTEL_CREDENTIALS,
    CustomDetectorConfig,
    Detector,
    MetricsConfig,
    OtelConfig,
    OtelPreset,
    RedactionConfig,
    RedactionPolicyConfig,
    RetentionConfig,
    S3Config,
    TenantRetention,
    TracesConfig,
)

STARTER = (files(__name__) / "starter.yaml").read_text(encoding="utf-8")  # `keel init` writes it as is

__all__ = [
    "DEFAULT_PATH",
    "LOCAL_THRESHOLDS",
    "OTEL_CREDENTIALS",
    "STARTER",
    "AlertMetric",
    "AlertRuleConfig",
    "AlertScope",
    "AlertsConfig",
    "AliasCacheConfig",
    "AliasConfig",
    "BreakerConfig",
    "CacheConfig",
    "Capability",
    "Config",
    "CustomDetectorConfig",
    "Detector",
    "JobKindConfig",
    "JobsConfig",
    "LimitRule",
    "LimitScope",
    "LimitsConfig",
    "MetricsConfig",
    "OtelConfig",
    "OtelPreset",
    "PriceConfig",
    "ProviderConfig",
    "RedactionConfig",
    "RedactionPolicyConfig",
    "RedisConfig",
    "ResilienceConfig",
    "RetentionConfig",
    "RuleConfig",
    "S3Config",
    "SemanticCacheConfig",
    "ServerConfig",
    "SloConfig",
    "StorageConfig",
    "TargetConfig",
    "TenantRetention",
    "TracesConfig",
    "WebhookConfig",
    "demo_config",
    "load",
    "parse",
    "warnings",
]
