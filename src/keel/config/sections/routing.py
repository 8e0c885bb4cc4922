"""`models:`: aliases, the names clients send as `model`, each mapped to ordered targets, task rules,
fallbacks and the per-alias changes to the cache's defaults.

`check` holds the references an alias makes to other aliases (fallbacks, rules) and its classifier's
form; whether its targets name configured providers spans sections and is checked in the root.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from typing import Literal

from pydantic import Field

from keel.config.parts import Model
from keel.errors import ConfigIssue

Capability = Literal["tools", "vision", "json"]


class TargetConfig(Model):
    provider: str
    model: str
    weight: float = Field(1.0, gt=0)  # strategy: weighted
    context_window: int | None = Field(None, gt=0)  # tokens; None = unknown, assumed large enough
    capabilities: list[Capability] | None = None  # None = assumed to support everything
    max_concurrency: int | None = Field(None, ge=1)  # calls in flight to this target, per gateway process
    queue_limit: int = Field(100, ge=0)  # calls that may wait for a slot, by priority; beyond: 429 at once


class RuleConfig(Model):
    """A task rule: when every condition given matches, route to the alias `use` instead."""

    use: str
    min_prompt_tokens: int | None = Field(None, ge=0)
    max_prompt_tokens: int | None = Field(None, ge=0)
    tools: bool | None = None
    feature: str | None = None
    tier: str | None = None  # the tier the caller asks for with `x-keel-tier`


class SplitConfig(Model):
    """A model A/B test: `weight`% of the alias's callers (sticky per user, else session, else key) go
    to the alias `use` (another target set); the rest stay on this alias's own targets."""

    use: str
    weight: float = Field(gt=0, le=100)


class AliasCacheConfig(Model):
    """Per-alias changes to the `cache:` defaults; unset keys keep them."""

    enabled: bool | None = None
    ttl_s: float | None = Field(None, gt=0)
    nondeterministic: bool | None = None  # cache calls whose temperature is not 0
    semantic: bool | None = None
    threshold: float | None = Field(None, gt=0, le=1)
    with_tools: bool | None = None  # semantic matching for calls that carry tools


class SloConfig(Model):
    """An alias's objectives over a rolling window (README "SLOs"): availability, and optionally latency."""

    availability: float = Field(gt=0, lt=100)  # percent of calls that succeed, e.g. 99.9
    p95_ms: float | None = Field(None, gt=0)  # 95% of calls answer within this many milliseconds
    window_days: int = Field(30, ge=1, le=90)


class AliasConfig(Model):
    targets: list[TargetConfig] = Field(min_length=1)
    strategy: Literal["ordered", "weighted", "latency", "cost"] = "ordered"
    rules: list[RuleConfig] = []
    split: list[SplitConfig] = []  # A/B variants, before rules; the shares stack from bucket 0 like a rollout's
    classifier: str | None = None  # "module:function" returning an alias name or None
    fallbacks: list[str] = []  # degraded aliases, tried in order after this alias's own targets
    static_answer: str | None = None  # last level before a clean 503
    cache: AliasCacheConfig = AliasCacheConfig()
    # auto: a stream that breaks or stalls after content continues on the next target (prefill or
    # restart past the text already sent); off: it ends with an error event
    resume: Literal["auto", "off"] = "auto"
    slo: SloConfig | None = None  # objectives, burn-rate alerts, `keel slo`


def check(models: Mapping[str, AliasConfig], names: Collection[str]) -> list[ConfigIssue]:
    """Fallbacks and rules name other aliases (`names`: every alias the file declares); a classifier
    names a Python function."""
    issues: list[ConfigIssue] = []
    known = ", ".join(sorted(names))
    for alias, a in models.items():
        refs = [(f"models.{alias}.fallbacks[{i}]", name) for i, name in enumerate(a.fallbacks)]
        refs += [(f"models.{alias}.rules[{i}].use", r.use) for i, r in enumerate(a.rules)]
        refs += [(f"models.{alias}.split[{i}].use", v.use) for i, v in enumerate(a.split)]
        if sum(v.weight for v in a.split) > 100:
            issues.append(
                ConfigIssue(f"models.{alias}.split", "the split's weights add up to more than 100", "lower them")
            )
        for path, name in refs:
            if name not in names:
                issues.append(ConfigIssue(path, f"unknown alias '{name}'", f"use one of: {known}"))
            elif name == alias:
                issues.append(ConfigIssue(path, "an alias cannot fall back or route to itself", "name another alias"))
        if a.classifier is not None and not re.fullmatch(r"[\w.]+:\w+", a.classifier):
            fix = "write it as package.module:function"
            issues.append(ConfigIssue(f"models.{alias}.classifier", f"not a module:function: {a.classifier!r}", fix))
    return issues
