"""`alerts:`: threshold rules on cost, error rate and latency, evaluated from the usage rollups.

`check` holds the rules to unique names and a `match`/`tenant` that makes sense for their scope;
whether a webhook is there to send them to spans sections and is checked in the root.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator

from keel.config.parts import Model, Outline, WebhookConfig
from keel.errors import ConfigIssue

AlertMetric = Literal["cost_usd", "error_rate", "p95_latency_ms"]
AlertScope = Literal["global", "tenant", "feature", "alias"]
_WINDOW = re.compile(r"([1-9][0-9]*)([mhd])")
_WINDOW_UNITS = {"m": 60, "h": 3600, "d": 86400}


class AlertRuleConfig(Model):
    """Fire once when `metric` over the last `window` reaches `threshold`, per value of `scope`."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.:-]+$")
    metric: AlertMetric
    threshold: float = Field(gt=0)  # USD, a share of calls (0.05 = 5%), or milliseconds
    window: str = "5m"
    scope: AlertScope = "global"
    match: str | None = None  # only this tenant, feature or alias; unset: each one on its own
    tenant: str | None = None  # only this tenant's calls (global, feature and alias scopes)
    min_calls: int = Field(10, ge=1)  # error_rate and p95_latency_ms judge no fewer calls than this

    @field_validator("window")
    @classmethod
    def _window(cls, v: str) -> str:
        m = _WINDOW.fullmatch(v)
        if m is None or int(m.group(1)) * _WINDOW_UNITS[m.group(2)] > 31 * 86400:
            raise ValueError("must be a duration in whole minutes, hours or days up to 31d, e.g. 5m, 1h, 1d")
        return v

    @property
    def window_s(self) -> int:
        m = _WINDOW.fullmatch(self.window)
        assert m is not None
        return int(m.group(1)) * _WINDOW_UNITS[m.group(2)]


class AlertsConfig(Model):
    """Threshold rules evaluated from the usage rollups, off the request path; see README "Alert rules"."""

    evaluate_every_s: float = Field(20.0, gt=0, le=3600)
    webhook: WebhookConfig | None = None  # default: limits.webhook
    rules: list[AlertRuleConfig] = []
    public_url: str | None = Field(None, pattern=r"^https?://")  # the gateway as approvers reach it (approval links)


def check(alerts: AlertsConfig, outline: Outline) -> list[ConfigIssue]:
    """Unique names, and a `match`/`tenant` that makes sense for each rule's scope."""
    issues: list[ConfigIssue] = []
    seen: set[str] = set()
    for i, r in enumerate(alerts.rules):
        path = f"alerts.rules[{i}]"
        if r.name in seen:
            issues.append(ConfigIssue(f"{path}.name", f"duplicate rule name {r.name!r}", "give each rule its own name"))
        seen.add(r.name)
        if f"{path}.scope" in outline.rejected:
            continue  # the schema names the scopes
        if r.scope == "global" and r.match is not None:
            fix = "remove match, or set scope: tenant, feature or alias"
            issues.append(ConfigIssue(f"{path}.match", "a global rule has no value to match", fix))
        if r.scope == "tenant" and r.tenant is not None:
            fix = "write match: <tenant> instead"
            issues.append(ConfigIssue(f"{path}.tenant", "a tenant-scoped rule picks its tenant with match", fix))
        if r.metric == "error_rate" and r.threshold > 1:
            fix = "write the share of failed calls, e.g. 0.05 for 5%"
            got = int(r.threshold) if r.threshold.is_integer() else r.threshold  # as written: 2, not 2.0
            issues.append(ConfigIssue(f"{path}.threshold", f"an error rate is at most 1 (got {got})", fix))
    return issues
