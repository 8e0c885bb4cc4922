"""`limits:`: rate limits, quotas and budgets on scopes and their combinations, and where warnings go."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from keel.config.parts import Model, WebhookConfig

LimitScope = Literal["tenant", "key", "user", "feature", "alias", "team"]


class LimitRule(Model):
    """Limits on one scope, or a combination (e.g. [tenant, feature]: each tenant's each feature)."""

    scope: list[LimitScope] = Field(min_length=1)
    rpm: int | None = Field(None, ge=1)  # requests per sliding minute
    tpm: int | None = Field(None, ge=1)  # tokens (input + output) per sliding minute
    concurrency: int | None = Field(None, ge=1)  # requests in flight
    tokens_day: int | None = Field(None, ge=1)  # UTC calendar day
    tokens_month: int | None = Field(None, ge=1)  # UTC calendar month
    usd_day: float | None = Field(None, gt=0)
    usd_month: float | None = Field(None, gt=0)
    usd_total: float | None = Field(None, gt=0)


class LimitsConfig(Model):
    defaults: list[LimitRule] = []
    on_store_error: Literal["open", "closed"] = "open"  # when Redis is unreachable; per tenant overridable
    soft_thresholds: list[float] = [0.8]  # share of a quota or budget that warns (header + one webhook call)
    webhook: WebhookConfig | None = None
    default_output_tokens: int = Field(1024, ge=1)  # admission estimate when a call sets no max_tokens

    @field_validator("soft_thresholds")
    @classmethod
    def _shares(cls, v: list[float]) -> list[float]:
        if any(not 0 < t < 1 for t in v):
            raise ValueError("each threshold must be a share between 0 and 1, e.g. 0.8")
        return sorted(v)
