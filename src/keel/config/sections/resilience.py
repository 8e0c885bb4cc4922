"""`resilience:`: the failover stage's retries, backoff, deadlines and circuit breakers."""

from __future__ import annotations

from pydantic import Field

from keel.config.parts import Model


class BreakerConfig(Model):
    failures: int = Field(5, ge=1)  # consecutive failures that open the breaker
    error_rate: float = Field(0.5, gt=0, le=1)  # or this share of failures among the last `window` calls
    window: int = Field(20, ge=2)
    min_calls: int = Field(10, ge=1)
    cooldown_s: float = Field(30.0, gt=0)  # open → half-open after this long


class ResilienceConfig(Model):
    retries_per_target: int = Field(1, ge=0)  # extra tries of one target for transient kinds
    max_attempts: int = Field(6, ge=1)  # across all targets and fallbacks
    backoff_ms: float = Field(100.0, ge=0)  # base of exponential backoff with full jitter
    backoff_max_ms: float = Field(2000.0, ge=0)
    retry_after_cap_s: float = Field(2.0, ge=0)  # honour Retry-After up to this, else move on
    # a 429 without Retry-After is retried after at least this (the shortest wait a Retry-After can say)
    rate_limit_floor_ms: float = Field(1000.0, ge=0)
    ttft_timeout_s: float = Field(30.0, gt=0)  # until the first content event
    idle_timeout_s: float = Field(30.0, gt=0)  # between stream events
    total_timeout_s: float = Field(120.0, gt=0)  # per request across all attempts
    max_total_timeout_s: float = Field(600.0, gt=0)  # the most `x-keel-timeout` may ask for
    breaker: BreakerConfig = BreakerConfig()
