"""Build the configured providers: a catalog row picks the wire format, auth style and defaults."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping

from keel.catalog import CATALOG, CatalogRow
from keel.config import ProviderConfig
from keel.providers.base import Provider
from keel.providers.http import HttpProvider, Sessions
from keel.providers.simulated import SimulatedProvider
from keel.wire.base import Codec
from keel.wire.openai_chat import OpenAIChatCodec


def _anthropic(row: CatalogRow, cfg: ProviderConfig) -> Codec:
    from keel.wire.anthropic_messages import AnthropicCodec

    return AnthropicCodec(row.schema_models)


def _responses(row: CatalogRow, cfg: ProviderConfig) -> Codec:
    from keel.wire.openai_responses_upstream import OpenAIResponsesCodec

    return OpenAIResponsesCodec(row.quirks)


_CODECS: dict[str, Callable[[CatalogRow, ProviderConfig], Codec]] = {
    "openai_chat": lambda row, cfg: OpenAIChatCodec(row.quirks, cfg.api_version),
    "openai_responses": _responses,
    "anthropic_messages": _anthropic,
}

_AUTH: dict[str, Callable[[str], dict[str, str]]] = {
    "bearer": lambda key: {"authorization": f"Bearer {key}"},
    "api-key": lambda key: {"api-key": key},
    "x-api-key": lambda key: {"x-api-key": key},
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
        )
    key = cfg.api_key or (env.get(row.key_env, "") if row.key_env else "")
    headers = (_AUTH[row.auth](key) if key else {}) | dict(cfg.headers)
    if row.wire == "anthropic_messages":
        headers.setdefault("anthropic-version", "2023-06-01")
    base_url = cfg.base_url or row.base_url
    assert base_url is not None  # config checking refuses a row without one
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
    )
