"""`keel.yaml`: parsed, `${ENV}`-expanded and checked whole before anything starts.

Every problem is reported at once as a `ConfigIssue(path, message, fix)`; unknown keys are refused.
Pydantic lives here and at the HTTP edge only; the rest of Keel reads these frozen models.
"""

from __future__ import annotations

import difflib
import os
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from keel.errors import ConfigError, ConfigIssue

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


class TargetConfig(_Model):
    provider: str
    model: str


class AliasConfig(_Model):
    targets: list[TargetConfig] = Field(min_length=1)


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
    batch_size: int = Field(500, ge=1)
    flush_interval_ms: int = Field(50, ge=1)
    spill_dir: str = ".keel/spill"
    store_payloads: bool = True


class ServerConfig(_Model):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    key_cache_ttl_s: float = Field(30.0, gt=0)
    revocation_poll_s: float = Field(0.5, gt=0, le=1.0)


class Config(_Model):
    server: ServerConfig = ServerConfig()
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
    source = Path(path or os.environ.get("KEEL_CONFIG", DEFAULT_PATH))
    env = dict(os.environ) if env is None else env
    if not source.exists():
        if path is not None:
            fix = "create it with `keel init`, or pass an existing file with --config"
            raise ConfigError([ConfigIssue(str(source), "file not found", fix)], str(source))
        return demo_config(Config())
    try:
        raw = yaml.safe_load(source.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError([ConfigIssue("(file)", f"not valid YAML: {exc}", "fix the YAML syntax")], str(source)) from exc
    return parse(raw, env, str(source))


def parse(raw: Any, env: dict[str, str], source: str = DEFAULT_PATH) -> Config:
    issues: list[ConfigIssue] = []
    if not isinstance(raw, dict):
        raise ConfigError([ConfigIssue("(top level)", "must be a mapping", "start from `keel init`")], source)
    expanded = _expand(raw, env, "", issues)
    try:
        cfg = Config.model_validate(expanded)
    except ValidationError as exc:
        issues.extend(_issue_from(err) for err in exc.errors())
        raise ConfigError(issues, source) from None
    issues.extend(_cross_check(cfg))
    if issues:
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
        issues.append(ConfigIssue(path, f"environment variable {name} is not set", f"export {name}=... before starting"))
        return ""

    return _ENV.sub(sub, node)


def _issue_from(err: Any) -> ConfigIssue:
    loc = [str(p) for p in err["loc"]]
    path = ".".join(loc)
    kind = err["type"]
    if kind == "extra_forbidden":
        allowed = _allowed_keys(loc[:-1])
        close = difflib.get_close_matches(loc[-1], allowed, n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        return ConfigIssue(path, "unknown key", f"{hint}remove it; allowed here: {', '.join(sorted(allowed))}")
    if kind == "missing":
        return ConfigIssue(path, "required key is missing", f"add '{loc[-1]}'")
    msg = err["msg"].removeprefix("Value error, ")
    return ConfigIssue(path, f"{msg} (got {err.get('input')!r})", "set a valid value; see `keel init` for an example")


def _allowed_keys(loc: list[str]) -> list[str]:
    model: Any = Config
    for part in loc:
        field = model.model_fields.get(part) if hasattr(model, "model_fields") else None
        if field is None:  # a dict key such as a provider name: step into the value type
            continue
        ann = field.annotation
        args = getattr(ann, "__args__", ())
        model = args[-1] if args else ann
    return list(getattr(model, "model_fields", {}).keys())


def _cross_check(cfg: Config) -> list[ConfigIssue]:
    from keel.catalog import CATALOG

    issues: list[ConfigIssue] = []
    for name, p in cfg.providers.items():
        row = CATALOG.get(p.type)
        if row is None:
            close = difflib.get_close_matches(p.type, list(CATALOG), n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            known = ", ".join(sorted(CATALOG))
            issues.append(ConfigIssue(f"providers.{name}.type", f"unknown provider type '{p.type}'", f"{hint}use one of: {known}"))
            continue
        if row.wire != "simulated" and not (p.base_url or row.base_url):
            issues.append(ConfigIssue(f"providers.{name}.base_url", "required for this provider type", "set base_url to the server's /v1 URL"))
        if p.base_url and not p.base_url.startswith(("http://", "https://")):
            issues.append(ConfigIssue(f"providers.{name}.base_url", f"not an http(s) URL: {p.base_url!r}", "use http://host:port/v1 or https://..."))
    for alias, a in cfg.models.items():
        for i, t in enumerate(a.targets):
            if t.provider not in cfg.providers:
                known = ", ".join(sorted(cfg.providers)) or "(none configured)"
                issues.append(ConfigIssue(f"models.{alias}.targets[{i}].provider", f"unknown provider '{t.provider}'", f"use one of: {known}"))
    if cfg.providers and not cfg.models:
        issues.append(ConfigIssue("models", "providers are configured but no model alias is", "add an alias under models: with its targets"))
    return issues


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
