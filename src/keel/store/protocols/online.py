"""Online evals: the rules that pick live traces to score, and the scores they gave.

A rule (`OnlineRule`) is stored whole as JSON under its name; gateways hold the rules in memory and
read them again every few seconds. A score (`ScoreRow`) is one scorer's verdict on one trace under
one rule, keyed (trace_id, rule, scorer): a scoring job that runs twice (execution is at least once)
writes each score once. Scores carry the trace's attribution, so they roll up per feature, model,
alias and prompt version without a join (`score_rollup`, bounded windows only).

`OnlineEvalStore` is synchronous and thread-safe like every SQL store (decision 0001).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

ScoreDimension = Literal["none", "rule", "feature", "model", "alias", "prompt_version", "tenant"]
SCORE_DIMENSIONS: tuple[ScoreDimension, ...] = ("none", "rule", "feature", "model", "alias", "prompt_version", "tenant")


@dataclass(frozen=True, slots=True)
class OnlineRule:
    """Score `rate` of the calls that match every filter given, `delay_s` after they end."""

    name: str
    rate: float  # 0..1
    scorers: tuple[dict[str, Any], ...]  # assertion objects, as a suite writes them (no expected output)
    tenant: str | None = None
    alias: str | None = None
    feature: str | None = None
    prompt_version: str | None = None
    tags: tuple[tuple[str, str], ...] = ()  # each must be on the call
    delay_s: float = 0.0
    enabled: bool = True
    updated_at: float = 0.0

    def json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "rate": self.rate,
            "scorers": list(self.scorers),
            "tenant": self.tenant,
            "alias": self.alias,
            "feature": self.feature,
            "prompt_version": self.prompt_version,
            "tags": dict(self.tags),
            "delay_s": self.delay_s,
            "enabled": self.enabled,
            "updated_at": self.updated_at,
        }


@dataclass(frozen=True, slots=True)
class ScoreRow:
    trace_id: str
    rule: str
    scorer: str  # the assertion's metric name, else its type
    at: float  # when the scored call started (windows are over calls, not over scoring times)
    value: float  # 0..1
    passed: bool
    tenant: str | None = None
    feature: str | None = None
    alias: str | None = None
    model: str | None = None
    prompt_version: str | None = None


@dataclass(frozen=True, slots=True)
class ScoreQuery:
    """Scores of calls in [since, until), optionally of one rule/scorer/feature/alias/tenant."""

    since: float
    until: float
    by: ScoreDimension = "none"
    rule: str | None = None
    scorer: str | None = None
    feature: str | None = None
    alias: str | None = None
    tenant: str | None = None
    limit: int = 1000


@dataclass(frozen=True, slots=True)
class ScoreGroup:
    scorer: str
    group: str | None  # the `by` dimension's value; None for by="none" or calls without it
    count: int
    mean: float
    passed: int

    @property
    def pass_rate(self) -> float:
        return self.passed / self.count if self.count else 0.0


class OnlineEvalStore(Protocol):
    def put_online_rule(self, rule: OnlineRule) -> None:
        """Create or replace the rule of that name."""
        ...

    def list_online_rules(self) -> list[OnlineRule]:
        """Every rule, by name."""
        ...

    def delete_online_rule(self, name: str) -> bool: ...

    def add_scores(self, rows: Sequence[ScoreRow]) -> int:
        """Insert in one transaction, skipping (trace_id, rule, scorer) already there; how many went in."""
        ...

    def score_rollup(self, query: ScoreQuery) -> list[ScoreGroup]:
        """Count, mean and passes per (scorer, `by` value), most scored first, at most `limit` groups."""
        ...

    def list_scores(self, query: ScoreQuery) -> list[ScoreRow]:
        """The newest `limit` scores matching the query (`by` is ignored)."""
        ...


__all__ = [
    "SCORE_DIMENSIONS",
    "OnlineEvalStore",
    "OnlineRule",
    "ScoreDimension",
    "ScoreGroup",
    "ScoreQuery",
    "ScoreRow",
]
