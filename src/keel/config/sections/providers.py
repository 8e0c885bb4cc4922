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
    rpm: int | None = Field(None, ge=1)  # simulated: answers 429 beyond this many calls a minute (a rate limit)
    # self-hosted servers that start cold (keel.gateway.warmth; README "Self-hosted targets that start cold")
    readiness: bool | str | None = None  # true: the type's health URL; or a URL, or a /path on the server
    readiness_interval_s: float = Field(1.0, gt=0)  # poll period while the server is not ready
    warmup: int = Field(0, ge=0, le=100)  # one-token chat calls per model each time the server becomes ready
    cold_start_wait_s: float = Field(0.0, ge=0)  # how long a call may be held for the server to be ready
    wake_url: str | None = None  # POSTed once per cold period when traffic meets the server not ready

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
    return issues + _check_cold_start(name, p, row.wire)


_COLD_KEYS = ("warmup", "cold_start_wait_s", "wake_url")


def _check_cold_start(name: str, p: ProviderConfig, wire: str) -> list[ConfigIssue]:
    """The cold-start keys need `readiness` (nothing else says when the server is ready); URLs are http(s)."""
    path = f"providers.{name}"
    if p.readiness in (None, False):
        set_keys = [k for k in _COLD_KEYS if getattr(p, k) not in (0, 0.0, None)]
        fix = "add readiness: true (polls the type's health URL) or readiness: <URL or /path>, or remove {}"
        return [
            ConfigIssue(f"{path}.{k}", "needs readiness to know when the server is ready", fix.format(k))
            for k in set_keys
        ]
    if wire == "simulated":
        fix = "remove readiness (and the other cold-start keys) from this provider"
        return [ConfigIssue(f"{path}.readiness", "a simulated provider is always ready", fix)]
    issues = []
    if isinstance(p.readiness, str) and not p.readiness.startswith(("http://", "https://", "/")):
        fix = "use true, a path from the server's root (/health) or a full URL (http://host:port/health)"
        issues.append(ConfigIssue(f"{path}.readiness", f"not a URL or /path: {p.readiness!r}", fix))
    if p.wake_url is not None and not p.wake_url.startswith(("http://", "https://")):
        fix = "use the http(s) URL your scaler takes a POST on, e.g. https://scaler/wake/llama"
        issues.append(ConfigIssue(f"{path}.wake_url", f"not an http(s) URL: {p.wake_url!r}", fix))
    return issues
