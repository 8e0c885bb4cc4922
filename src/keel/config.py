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


class AliasConfig(_Model):
    targets: list[TargetConfig] = Field(min_length=1)
    strategy: Literal["ordered", "weighted", "latency", "cost"] = "ordered"
    rules: list[RuleConfig] = []
    classifier: str | None = None  # "module:function" returning an alias name or None
    fallbacks: list[str] = []  # degraded aliases, tried in order after this alias's own targets
    static_answer: str | None = None  # last level before a clean 503


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
    ttft_timeout_s: float = Field(30.0, gt=0)  # until the first content event
    idle_timeout_s: float = Field(30.0, gt=0)  # between stream events
    total_timeout_s: float = Field(120.0, gt=0)  # per request across all attempts
    max_total_timeout_s: float = Field(600.0, gt=0)  # the most `x-keel-timeout` may ask for
    breaker: BreakerConfig = BreakerConfig()


class PriceConfig(_Model):
    input: float = Field(ge=0)
    output: float = Field(ge=0)
    cached_input: float | None = Field(None, ge=0)
    cache_write: float | None = Field(None, ge=0)
    reasoning: float | None = Field(None, ge=0)


class StorageConfig(_Model):
    url: str = "sqlite:///keel.db"

    @field_validator("url")
    @classmethod
    def _scheme(cls, v: str) -> str:
        if not v.startswith(("sqlite:///", "postgresql://", "postgres://")):
            raise ValueError("must start with sqlite:///, postgresql:// or postgres://")
        return v


class TracesConfig(_Model):
    queue_size: int = Field(10_000, ge=1)
    batch_size: int = Field(2000, ge=1)  # a full batch shares rollup rows: fewer upserts per record
    flush_interval_ms: int = Field(50, ge=1)
    spill_dir: str = ".keel/spill"
    store_payloads: bool = True


class ServerConfig(_Model):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    key_cache_ttl_s: float = Field(30.0, gt=0)
    revocation_poll_s: float = Field(0.5, gt=0, le=1.0)


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


class RedisConfig(_Model):
    url: str | None = None  # redis://host:6379/0 — shared breaker state across processes

    @field_validator("url")
    @classmethod
    def _scheme(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss:// or unix://")
        return v


class Config(_Model):
    server: ServerConfig = ServerConfig()
    resilience: ResilienceConfig = ResilienceConfig()
    redis: RedisConfig = RedisConfig()
    limits: LimitsConfig = LimitsConfig()
    admin_token: str | None = None
    storage: StorageConfig = StorageConfig()
    traces: TracesConfig = TracesConfig()
    providers: dict[str, ProviderConfig] = {}
    models: dict[str, AliasConfig] = {}
    prices: dict[str, PriceConfig] = {}


def demo_config(base: Config) -> Config:
    """With no provider configured, a simulated provider answers so Keel works offline."""
    sim = ProviderConfig(type="simulated", latency_ms=0, ttft_ms=0)
    models = {"demo": AliasConfig(targets=[TargetConfig(provider="simulated", model="simulated-1")])}
    models["demo-embed"] = AliasConfig(targets=[TargetConfig(provider="simulated", model="simulated-embed-1")])
    return base.model_copy(update={"providers": {"simulated": sim}, "models": models})


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
    later.extend(_cross_check(expanded))
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


def _check_alias_references(models: dict[Any, Any]) -> list[ConfigIssue]:
    """Fallbacks and rules name other aliases; a classifier names a Python function."""
    issues: list[ConfigIssue] = []
    known = ", ".join(sorted(map(str, models)))
    for alias, a in models.items():
        spec = _mapping(a)
        refs = [(f"models.{alias}.fallbacks[{i}]", name) for i, name in enumerate(spec.get("fallbacks") or [])]
        rules = spec.get("rules") or []
        refs += [(f"models.{alias}.rules[{i}].use", _mapping(r).get("use")) for i, r in enumerate(rules)]
        for path, name in refs:
            if isinstance(name, str) and name not in models:
                issues.append(ConfigIssue(path, f"unknown alias '{name}'", f"use one of: {known}"))
            elif name == alias:
                issues.append(ConfigIssue(path, "an alias cannot fall back or route to itself", "name another alias"))
        classifier = spec.get("classifier")
        if isinstance(classifier, str) and not re.fullmatch(r"[\w.]+:\w+", classifier):
            fix = "write it as package.module:function"
            issues.append(ConfigIssue(f"models.{alias}.classifier", f"not a module:function: {classifier!r}", fix))
    return issues


def _cross_check(raw: dict[str, Any]) -> list[ConfigIssue]:
    """Checks across sections. They read the expanded mapping, so they run beside schema errors too."""
    providers = _mapping(raw.get("providers"))
    issues = [issue for name, p in providers.items() for issue in _check_provider(name, _mapping(p))]
    known = ", ".join(sorted(map(str, providers))) or "(none configured)"
    for alias, a in _mapping(raw.get("models")).items():
        targets = _mapping(a).get("targets")
        for i, t in enumerate(targets if isinstance(targets, list) else []):
            name = _mapping(t).get("provider")
            if isinstance(name, str) and name not in providers:
                path = f"models.{alias}.targets[{i}].provider"
                issues.append(ConfigIssue(path, f"unknown provider '{name}'", f"use one of: {known}"))
    issues.extend(_check_alias_references(_mapping(raw.get("models"))))
    if providers and not raw.get("models"):
        fix = "add an alias under models: with its targets"
        issues.append(ConfigIssue("models", "providers are configured but no model alias is", fix))
    return issues


def _check_provider(name: str, p: dict[str, Any]) -> list[ConfigIssue]:
    from keel.catalog import CATALOG

    kind, base_url = p.get("type"), p.get("base_url")
    if not isinstance(kind, str):
        return []  # the schema check reports it
    row = CATALOG.get(kind)
    if row is None:
        close = difflib.get_close_matches(kind, list(CATALOG), n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        known = ", ".join(sorted(CATALOG))
        return [ConfigIssue(f"providers.{name}.type", f"unknown provider type '{kind}'", f"{hint}use one of: {known}")]
    path, issues = f"providers.{name}.base_url", []
    if row.wire != "simulated" and not (base_url or row.base_url):
        issues.append(ConfigIssue(path, "required for this provider type", "set base_url to the server's /v1 URL"))
    if isinstance(base_url, str) and base_url and not base_url.startswith(("http://", "https://")):
        issues.append(ConfigIssue(path, f"not an http(s) URL: {base_url!r}", "use http://host:port/v1 or https://..."))
    return issues


def _mapping(node: Any) -> dict[str, Any]:
    return node if isinstance(node, dict) else {}


STARTER = """\
# keel.yaml — Keel's one config file. Secrets come from the environment: ${VAR} or ${VAR:-default}.
# Check it with `keel config check`; unknown keys are refused.

server:
  host: 127.0.0.1
  port: 8080

# Guards the admin API (/api/...). Leave unset to disable the admin API.
admin_token: ${KEEL_ADMIN_TOKEN:-}

storage:
  url: sqlite:///keel.db            # or postgresql://user@host:5432/db

traces:
  queue_size: 10000                 # bounded; overflow spills to spill_dir, never silently dropped
  spill_dir: .keel/spill

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
