"""Reading `keel.yaml`: parse, expand `${ENV}`, validate whole, and return a `Config` or raise one
`ConfigError` listing every problem with its key path and fix.

Schema problems come from the root model's validation; the checks beyond it (`root.cross_check`) read
typed sections, of the config or, when the schema rejected part of the file, of a `draft` without
that part, so both kinds come in one list. An unset `${VAR}` is one problem, not also a bad value.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from keel.config.draft import draft, path_of
from keel.config.parts import Outline
from keel.config.root import Config, cross_check
from keel.config.sections.providers import ProviderConfig
from keel.config.sections.routing import AliasConfig, TargetConfig
from keel.errors import ConfigError, ConfigIssue

DEFAULT_PATH = "keel.yaml"
_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def demo_config(base: Config) -> Config:
    """With no provider configured, a simulated provider answers so Keel works offline."""
    sim = ProviderConfig(type="simulated", latency_ms=0, ttft_ms=0)
    models = {"demo": AliasConfig(targets=[TargetConfig(provider="simulated", model="simulated-1")])}
    models["demo-embed"] = AliasConfig(targets=[TargetConfig(provider="simulated", model="simulated-embed-1")])
    return base.model_copy(update={"providers": {"simulated": sim}, "models": models})


def load(path: str | Path | None = None, env: dict[str, str] | None = None) -> Config:
    """Read, expand and check a config file. Raise ConfigError listing every problem."""
    import yaml  # only a command that reads the file pays for it

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
        partial = draft(expanded, exc.errors())
        outline = Outline.of(expanded, partial.rejected)
        later.extend(partial.renumber(cross_check(partial.config, outline)))
    else:
        later.extend(cross_check(cfg, Outline.of(expanded)))
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
    path = path_of(loc)
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


def _suggest(loc: tuple[str | int, ...]) -> str | None:
    import difflib

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
