"""`providers:` (upstreams, each a catalog row plus its settings) and `prices:` (per-model overrides).

`check` holds a provider to its catalog row: a known type, and a base URL where the row has none.
"""

from __future__ import annotations

from pydantic import Field, field_validator

from keel.config.parts import Model, Outline
from keel.errors import ConfigIssue, ErrorKind


class ProviderConfig(Model):
    type: str = Field(description="catalog entry: openai, azure, anthropic, groq, vllm, ollama, simulated, ...")
    base_url: str | None = None
    api_key: str | None = None
    region: str | None = None
    api_version: str | None = None  # Azure OpenAI
    # bedrock only: SigV4 credentials (else AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN)
    # and the AWS region (else AWS_REGION, AWS_DEFAULT_REGION); `api_key` (a Bedrock API key) instead
    # of signing
    aws_region: str | None = None
    aws_access_key_id: str | None = None
    aws_secret_access_key: str | None = None
    aws_session_token: str | None = None
    headers: dict[str, str] = {}
    connect_timeout_s: float = Field(5.0, gt=0)
    timeout_s: float = Field(600.0, gt=0)
    max_connections: int = Field(1000, ge=1)
    # bounds on what an upstream may send: beyond them the answer is cut as a protocol error
    max_response_bytes: int = Field(32 * 2**20, ge=1024)  # a non-streamed body
    max_stream_bytes: int = Field(16 * 2**20, ge=1024)  # a stream's body
    overrun_tokens: int = Field(1024, ge=0)  # streamed tokens beyond the request's max_tokens
    # simulated only
    latency_ms: float = Field(0.0, ge=0)
    ttft_ms: float = Field(0.0, ge=0)
    tokens_per_second: float = Field(0.0, ge=0)
    faults: list[str] = []

    @field_validator("faults")
    @classmethod
    def _faults(cls, v: list[str]) -> list[str]:
        known = {"ok", "cut", *(k.value for k in ErrorKind)}
        bad = [f for f in v if f not in known]
        if bad:
            raise ValueError(f"unknown fault(s) {bad}; use: {', '.join(sorted(known))}")
        return v


class PriceConfig(Model):
    """USD per million tokens: finite, 0 to 100,000 (keel.providers.prices.MAX_PRICE)."""

    input: float = Field(ge=0, le=100_000, allow_inf_nan=False)
    output: float = Field(ge=0, le=100_000, allow_inf_nan=False)
    cached_input: float | None = Field(None, ge=0, le=100_000, allow_inf_nan=False)
    cache_write: float | None = Field(None, ge=0, le=100_000, allow_inf_nan=False)
    reasoning: float | None = Field(None, ge=0, le=100_000, allow_inf_nan=False)


def check(name: str, p: ProviderConfig, outline: Outline) -> list[ConfigIssue]:
    """A known catalog type, and a base URL that is an http(s) URL, required where the row has none."""
    import difflib

    from keel.catalog import CATALOG  # the catalog's rows are only needed once a provider is configured

    row = CATALOG.get(p.type)
    if row is None:
        close = difflib.get_close_matches(p.type, list(CATALOG), n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        known = ", ".join(sorted(CATALOG))
        why = f"unknown provider type '{p.type}'"
        return [ConfigIssue(f"providers.{name}.type", why, f"{hint}use one of: {known}")]
    path, issues = f"providers.{name}.base_url", []
    if path in outline.rejected:
        return []  # the schema reports it
    if row.wire != "simulated" and not (p.base_url or row.base_url):
        issues.append(ConfigIssue(path, "required for this provider type", "set base_url to the server's /v1 URL"))
    if p.base_url and not p.base_url.startswith(("http://", "https://")):
        issues.append(
            ConfigIssue(path, f"not an http(s) URL: {p.base_url!r}", "use http://host:port/v1 or https://...")
        )
    return issues
