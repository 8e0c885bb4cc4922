"""`online_evals:`: monitors on the online scores, scheduled drift checks, and how scoring runs.

The online rules themselves are data (`/api/evals/online-rules`, stored), not config: they change with
the prompts they watch. Monitors and drift checks alert through a signed webhook: this section's,
else `alerts.webhook`, else `limits.webhook` (the root checks that one is there).
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from keel.config.parts import Model, Outline, WebhookConfig
from keel.errors import ConfigIssue

_DURATION = re.compile(r"([1-9][0-9]*)([smhd])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
MonitorBy = Literal["none", "feature", "model", "alias", "prompt_version"]


def seconds(text: str) -> int:
    m = _DURATION.fullmatch(text)
    if m is None:
        raise ValueError("must be a duration like 30s, 15m, 1h, 1d")
    return int(m.group(1)) * _UNITS[m.group(2)]


class MonitorConfig(Model):
    """Fire once when a scorer's mean (or pass rate) over `window` is below `below`, or fell by `drop` or
    more against the window before it; resolve once when that no longer holds."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.:-]+$")
    scorer: str  # the assertion's metric name, else its type (e.g. icontains, llm-rubric)
    rule: str | None = None  # only this online rule's scores
    metric: Literal["mean", "pass_rate"] = "mean"
    below: float | None = Field(None, ge=0, le=1)
    drop: float | None = Field(None, gt=0, le=1)
    window: str = "1h"
    by: MonitorBy = "none"  # one episode per value of this dimension
    min_samples: int = Field(20, ge=1)  # a window with fewer scores gives no verdict

    @field_validator("window")
    @classmethod
    def _window(cls, v: str) -> str:
        if seconds(v) > 31 * 86400:
            raise ValueError("must be at most 31d")
        return v

    @model_validator(mode="after")
    def _condition(self) -> MonitorConfig:
        if self.below is None and self.drop is None:
            raise ValueError("give below (e.g. 0.8) or drop (e.g. 0.1), or both")
        return self

    @property
    def window_s(self) -> int:
        return seconds(self.window)


class DriftCheckConfig(Model):
    """Every `every` compare the last `since` of a feature's (or alias's) calls with `reference`."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.:-]+$")
    feature: str | None = None
    alias: str | None = None
    tenant: str | None = None
    since: str = "1d"
    reference: str = "7d..1d"
    every: str = "1h"
    alpha: float = Field(0.01, gt=0, lt=1)
    max_samples: int = Field(500, ge=10, le=2000)

    @model_validator(mode="after")
    def _target(self) -> DriftCheckConfig:
        if (self.feature is None) == (self.alias is None):
            raise ValueError("name one of feature or alias")
        seconds(self.every)
        return self


class OnlineEvalsConfig(Model):
    webhook: WebhookConfig | None = None  # default: alerts.webhook, then limits.webhook
    evaluate_every_s: float = Field(30.0, gt=0, le=3600)  # monitors' tick
    rules_refresh_s: float = Field(2.0, gt=0, le=300)  # a rule written by another process applies within this
    flush_ms: int = Field(200, ge=1, le=60_000)  # selected calls become scoring jobs in batches this often
    max_pending: int = Field(10_000, ge=1)  # selected calls waiting to become jobs; beyond it new ones are dropped
    batch_size: int = Field(50, ge=1, le=1000)  # calls per scoring job
    queue: str = "default"  # the jobs queue scoring runs on
    judge: str | None = None  # the alias judges (llm-rubric, …) call when a scorer names no provider
    monitors: list[MonitorConfig] = []
    drift: list[DriftCheckConfig] = []


def check(section: OnlineEvalsConfig, outline: Outline) -> list[ConfigIssue]:
    """Unique monitor and drift check names."""
    issues: list[ConfigIssue] = []
    lists: list[tuple[str, list[str]]] = [
        ("monitors", [m.name for m in section.monitors]),
        ("drift", [d.name for d in section.drift]),
    ]
    for kind, names in lists:
        seen: set[str] = set()
        for i, name in enumerate(names):
            if name in seen:
                path = f"online_evals.{kind}[{i}].name"
                issues.append(ConfigIssue(path, f"duplicate name {name!r}", "give each one its own name"))
            seen.add(name)
    return issues
