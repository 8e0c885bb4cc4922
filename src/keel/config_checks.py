"""Checks across keel.yaml's sections that one field's schema cannot make: names that must exist
elsewhere (providers, aliases, embedders), settings that need another (a semantic cache needs the
cache, alert rules a webhook, a preset its credentials). They read the expanded mapping, not the
parsed models, so they report beside schema errors in one list. `warnings` reads a valid config for
settings that are allowed but defeat themselves: reported, never fatal.
"""

from __future__ import annotations

import difflib
import re
from typing import Any

from keel.errors import ConfigIssue


def warnings(cfg: dict[str, Any]) -> list[ConfigIssue]:
    """Valid settings that defeat themselves, in a parsed config's mapping (defaults filled in)."""
    r = _mapping(cfg.get("resilience"))
    ttft, total = r.get("ttft_timeout_s"), r.get("total_timeout_s")
    models = {alias: _mapping(a) for alias, a in _mapping(cfg.get("models")).items()}
    falling_back = [str(alias) for alias, a in models.items() if a.get("fallbacks") or len(a.get("targets") or ()) > 1]
    issues: list[ConfigIssue] = []
    if falling_back and isinstance(ttft, int | float) and isinstance(total, int | float) and ttft >= total:
        message = (
            f"{ttft:g} s is not below total_timeout_s ({total:g} s): after a first-token timeout no time"
            f" is left for the fallbacks of {', '.join(falling_back)}"
        )
        fix = "set resilience.ttft_timeout_s well below total_timeout_s (e.g. 10 and 120)"
        issues.append(ConfigIssue("resilience.ttft_timeout_s", message, fix))
    return issues


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


def cross_check(raw: dict[str, Any]) -> list[ConfigIssue]:
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
    issues.extend(_check_cache(_mapping(raw.get("cache")), _mapping(raw.get("models"))))
    issues.extend(_check_otel(_mapping(raw.get("otel"))))
    issues.extend(_check_alert_rules(_mapping(raw.get("alerts")), _mapping(raw.get("limits"))))
    if _mapping(raw.get("metrics")).get("require_token") is True and not raw.get("admin_token"):
        fix = "set admin_token (scrapers send it as a bearer token), or set metrics.require_token: false"
        issues.append(ConfigIssue("metrics.require_token", "needs an admin_token to check", fix))
    issues.extend(_check_blobs(_mapping(raw.get("traces"))))
    if providers and not raw.get("models"):
        fix = "add an alias under models: with its targets"
        issues.append(ConfigIssue("models", "providers are configured but no model alias is", fix))
    return issues


def _check_cache(cache: dict[str, Any], models: dict[Any, Any]) -> list[ConfigIssue]:
    """The semantic cache needs the cache on, and its embedder is `local` or an alias."""
    issues: list[ConfigIssue] = []
    semantic = _mapping(cache.get("semantic"))
    wants_semantic = semantic.get("enabled") is True or any(
        _mapping(_mapping(a).get("cache")).get("semantic") is True for a in models.values()
    )
    enabled = cache.get("enabled") is True or any(
        _mapping(_mapping(a).get("cache")).get("enabled") is True for a in models.values()
    )
    if wants_semantic and not enabled:
        fix = "set cache.enabled: true (semantic matches answer from the same cache)"
        issues.append(ConfigIssue("cache.semantic.enabled", "the semantic cache is on but the cache is off", fix))
    embedder = semantic.get("embedder", "local")
    if isinstance(embedder, str) and embedder != "local" and embedder not in models:
        known = ", ".join(sorted(map(str, models))) or "(none configured)"
        fix = f"use local (the bundled all-MiniLM-L6-v2) or an embeddings alias: {known}"
        issues.append(ConfigIssue("cache.semantic.embedder", f"unknown alias '{embedder}'", fix))
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


def _check_alert_rules(alerts: dict[str, Any], limits: dict[str, Any]) -> list[ConfigIssue]:
    """Rules need a webhook, unique names, and a `match`/`tenant` that makes sense for their scope."""
    rules = alerts.get("rules")
    rules = rules if isinstance(rules, list) else []
    issues: list[ConfigIssue] = []
    if rules and not alerts.get("webhook") and not limits.get("webhook"):
        fix = "set alerts.webhook: {url: https://..., secret: ${KEEL_ALERT_SECRET}} (or limits.webhook)"
        issues.append(ConfigIssue("alerts.webhook", "alert rules are configured but no webhook to send them to", fix))
    seen: set[Any] = set()
    for i, r in enumerate(_mapping(r) for r in rules):
        path, scope = f"alerts.rules[{i}]", r.get("scope", "global")
        if r.get("name") in seen:
            issues.append(
                ConfigIssue(f"{path}.name", f"duplicate rule name {r['name']!r}", "give each rule its own name")
            )
        seen.add(r.get("name"))
        if scope == "global" and r.get("match") is not None:
            fix = "remove match, or set scope: tenant, feature or alias"
            issues.append(ConfigIssue(f"{path}.match", "a global rule has no value to match", fix))
        if scope == "tenant" and r.get("tenant") is not None:
            issues.append(
                ConfigIssue(
                    f"{path}.tenant",
                    "a tenant-scoped rule picks its tenant with match",
                    "write match: <tenant> instead",
                )
            )
        threshold = r.get("threshold")
        if r.get("metric") == "error_rate" and isinstance(threshold, int | float) and threshold > 1:
            fix = "write the share of failed calls, e.g. 0.05 for 5%"
            issues.append(ConfigIssue(f"{path}.threshold", f"an error rate is at most 1 (got {threshold})", fix))
    return issues


def _check_blobs(traces: dict[str, Any]) -> list[ConfigIssue]:
    """An s3:// blob store needs credentials; its endpoint is an http(s) URL."""
    url, s3 = traces.get("blobs_url"), _mapping(traces.get("s3"))
    issues: list[ConfigIssue] = []
    if isinstance(url, str) and url.startswith("s3://"):
        for key in ("access_key_id", "secret_access_key"):
            if not s3.get(key):
                fix = f"set traces.s3.{key}, e.g. ${{AWS_{key.upper()}}}"
                issues.append(ConfigIssue(f"traces.s3.{key}", "required by an s3:// blobs_url", fix))
    endpoint = s3.get("endpoint")
    if isinstance(endpoint, str) and not endpoint.startswith(("http://", "https://")):
        fix = "use http://host:9000 or https://..., the S3-compatible server's base URL"
        issues.append(ConfigIssue("traces.s3.endpoint", f"not an http(s) URL: {endpoint!r}", fix))
    return issues


# Each preset's credential fields: (key, required, where to find it).
OTEL_CREDENTIALS: dict[str, tuple[tuple[str, bool, str], ...]] = {
    "langfuse": (
        ("public_key", True, "the project's public key (pk-lf-...), e.g. ${LANGFUSE_PUBLIC_KEY}"),
        ("secret_key", True, "the project's secret key (sk-lf-...), e.g. ${LANGFUSE_SECRET_KEY}"),
    ),
    "phoenix": (("api_key", False, "the Phoenix API key, e.g. ${PHOENIX_API_KEY}"),),
    "mlflow": (("experiment_id", True, "the MLflow experiment id the traces belong to, e.g. '0'"),),
}


def _check_otel(otel: dict[str, Any]) -> list[ConfigIssue]:
    """A preset's credentials are present, and no credential is set that the preset would ignore."""
    issues: list[ConfigIssue] = []
    endpoint = otel.get("endpoint")
    if isinstance(endpoint, str) and not endpoint.startswith(("http://", "https://")):
        fix = "use http://host:4318 or https://host/..., the collector's OTLP/HTTP base URL"
        issues.append(ConfigIssue("otel.endpoint", f"not an http(s) URL: {endpoint!r}", fix))
    issues += _check_otel_headers(otel)
    preset = otel.get("preset")
    if preset is not None and preset not in OTEL_CREDENTIALS:
        return issues  # the schema check names the choices
    fields = OTEL_CREDENTIALS.get(preset, ()) if isinstance(preset, str) else ()
    for key, required, what in fields:
        if required and not otel.get(key):
            issues.append(ConfigIssue(f"otel.{key}", f"required by preset '{preset}'", f"set otel.{key}: {what}"))
    used = {key for key, _, _ in fields}
    for key in sorted({k for creds in OTEL_CREDENTIALS.values() for k, _, _ in creds} - used):
        if otel.get(key) is not None:
            users = " or ".join(p for p, creds in OTEL_CREDENTIALS.items() if key in {k for k, _, _ in creds})
            fix = f"remove it, or set otel.preset: {users}"
            why = f"not used by preset '{preset}'" if preset else "only used with a preset"
            issues.append(ConfigIssue(f"otel.{key}", why, fix))
    return issues


_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


def _check_otel_headers(otel: dict[str, Any]) -> list[ConfigIssue]:
    """Values sent as HTTP headers must be sendable: no line breaks, Latin-1 only. A value is never
    echoed back: it is usually a secret."""
    values: list[tuple[str, str | None, Any]]
    values = [(f"otel.headers.{k}", k, v) for k, v in _mapping(otel.get("headers")).items()]
    values += [(f"otel.{k}", None, otel.get(k)) for k in ("api_key", "experiment_id")]
    issues = []
    for path, name, value in values:
        if name is not None and not _HEADER_NAME.fullmatch(str(name)):
            issues.append(ConfigIssue(path, "not a valid HTTP header name", "use letters, digits and - only"))
        if isinstance(value, str) and not _sendable(value):
            why = "holds a line break, NUL or a non-Latin-1 character, which an HTTP header cannot carry"
            fix = "remove it (a token read from a file often ends with a newline)"
            issues.append(ConfigIssue(path, why, fix))
    return issues


def _sendable(value: str) -> bool:
    try:
        value.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return not any(c in value for c in "\r\n\x00")


def _mapping(node: Any) -> dict[str, Any]:
    return node if isinstance(node, dict) else {}
