"""Build the configured providers: a catalog row picks the wire format, auth style and defaults.

AWS-signed rows (Bedrock) get a per-request SigV4 `Signer` (keel.sigv4) unless an API key is given,
which goes as a bearer token; their base URL names the region (`{region}` in the row).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping

from keel.catalog import CATALOG, CatalogRow
from keel.config import ProviderConfig
from keel.errors import ConfigError, ConfigIssue
from keel.providers.base import Provider
from keel.providers.http import Framing, HttpProvider, Sessions, Signer
from keel.providers.simulated import SimulatedProvider
from keel.sigv4 import Credentials, sign
from keel.wire.base import Codec
from keel.wire.openai_chat import OpenAIChatCodec


def _anthropic(row: CatalogRow, cfg: ProviderConfig) -> Codec:
    from keel.wire.anthropic_messages import AnthropicCodec

    return AnthropicCodec(row.schema_models)


def _gemini(row: CatalogRow, cfg: ProviderConfig) -> Codec:
    from keel.wire.gemini import GeminiCodec

    return GeminiCodec()


def _bedrock(row: CatalogRow, cfg: ProviderConfig) -> Codec:
    from keel.wire.bedrock import BedrockCodec

    return BedrockCodec()


def _responses(row: CatalogRow, cfg: ProviderConfig) -> Codec:
    from keel.wire.openai_responses_upstream import OpenAIResponsesCodec

    return OpenAIResponsesCodec(row.quirks)


_CODECS: dict[str, Callable[[CatalogRow, ProviderConfig], Codec]] = {
    "openai_chat": lambda row, cfg: OpenAIChatCodec(row.quirks, cfg.api_version),
    "openai_responses": _responses,
    "anthropic_messages": _anthropic,
    "gemini": _gemini,
    "bedrock_converse": _bedrock,
}
_FRAMING: dict[str, Framing] = {"bedrock_converse": "aws_eventstream"}  # every other wire streams SSE

_AUTH: dict[str, Callable[[str], dict[str, str]]] = {
    "bearer": lambda key: {"authorization": f"Bearer {key}"},
    "api-key": lambda key: {"api-key": key},
    "x-api-key": lambda key: {"x-api-key": key},
    "x-goog-api-key": lambda key: {"x-goog-api-key": key},
    "aws-sigv4": lambda key: {"authorization": f"Bearer {key}"},  # a Bedrock API key; else requests are signed
    "none": lambda key: {},
}


def build_provider(
    name: str,
    cfg: ProviderConfig,
    sessions: Sessions,
    env: Mapping[str, str] = os.environ,
    *,
    redact: Callable[[str], str],
) -> Provider:
    """`redact` cleans the upstream's error text of credentials (the runtime passes the redactor's)."""
    row = CATALOG[cfg.type]
    if row.wire == "simulated":
        return SimulatedProvider(
            name,
            region=cfg.region,
            latency_ms=cfg.latency_ms,
            ttft_ms=cfg.ttft_ms,
            tokens_per_second=cfg.tokens_per_second,
            faults=list(cfg.faults),
            rpm=cfg.rpm,
        )
    headers = upstream_headers(cfg, env)
    if row.wire == "anthropic_messages":
        headers.setdefault("anthropic-version", "2023-06-01")
    base_url = cfg.base_url or row.base_url
    assert base_url is not None  # config checking refuses a row without one
    signer: Signer | None = None
    if row.auth == "aws-sigv4":
        region = cfg.aws_region or env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or ""
        if "{region}" in base_url:
            base_url = base_url.replace("{region}", region or _missing(name, "aws_region", "AWS_REGION"))
        if not _key(cfg, row, env):
            signer = aws_signer(
                base_url, region or _missing(name, "aws_region", "AWS_REGION"), _aws_keys(name, cfg, env)
            )
    codec = _CODECS[row.wire](row, cfg)
    return HttpProvider(
        name,
        codec,
        base_url,
        headers,
        sessions,
        region=cfg.region,
        connect_timeout=cfg.connect_timeout_s,
        timeout=cfg.timeout_s,
        redact=redact,
        max_response_bytes=cfg.max_response_bytes,
        max_stream_bytes=cfg.max_stream_bytes,
        overrun_tokens=cfg.overrun_tokens,
        signer=signer,
        framing=_FRAMING.get(row.wire, "sse"),
    )


def aws_signer(base_url: str, region: str, credentials: Credentials, service: str = "bedrock") -> Signer:
    """SigV4 headers for each request to `base_url`: its path (as sent) and body are signed."""
    from urllib.parse import urlsplit

    host = urlsplit(base_url).netloc.rpartition("@")[2]

    def signer(path: str, body: bytes) -> dict[str, str]:
        path, _, query = path.partition("?")
        headers = {"content-type": "application/json"}
        signed = sign(
            "POST", host, path, query, headers, body,
            service=service, region=region, credentials=credentials, escape_path=True,
        )  # fmt: skip
        del signed["host"], signed["content-type"]  # HttpProvider writes both, with these values
        return signed

    return signer


def _aws_keys(name: str, cfg: ProviderConfig, env: Mapping[str, str]) -> Credentials:
    key_id = cfg.aws_access_key_id or env.get("AWS_ACCESS_KEY_ID")
    secret = cfg.aws_secret_access_key or env.get("AWS_SECRET_ACCESS_KEY")
    if not key_id or not secret:
        fix = "set aws_access_key_id and aws_secret_access_key (or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY), "
        fix += "or api_key (or AWS_BEARER_TOKEN_BEDROCK) for a Bedrock API key"
        raise ConfigError([ConfigIssue(f"providers.{name}.aws_access_key_id", "no AWS credentials", fix)])
    token = cfg.aws_session_token or (env.get("AWS_SESSION_TOKEN") if not cfg.aws_access_key_id else None)
    return Credentials(key_id, secret, token or None)


def _missing(name: str, key: str, variable: str) -> str:
    issue = ConfigIssue(f"providers.{name}.{key}", "required for this provider type", f"set it or {variable}")
    raise ConfigError([issue])


def upstream_headers(cfg: ProviderConfig, env: Mapping[str, str] = os.environ) -> dict[str, str]:
    """What every request to the provider's server carries: its credentials, then the configured headers."""
    row = CATALOG[cfg.type]
    key = _key(cfg, row, env)
    return (_AUTH[row.auth](key) if key else {}) | dict(cfg.headers)


def _key(cfg: ProviderConfig, row: CatalogRow, env: Mapping[str, str]) -> str:
    return cfg.api_key or (env.get(row.key_env, "") if row.key_env else "")
