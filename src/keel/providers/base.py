"""The two provider interfaces.

`Codec` is pure: it turns Keel's types into one wire format's bytes and back, and classifies that
format's errors. It does no I/O, so it is tested on recorded payloads. `Provider` is what the
gateway calls; `HttpProvider` pairs a codec with the one pooled HTTP client for its host.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Protocol

from keel.errors import ProviderError
from keel.types import ChatEvent, ChatRequest, EmbeddingRequest, EmbeddingResponse, Target


@dataclass(frozen=True, slots=True)
class Outbound:
    """An HTTP request a codec wants sent: path relative to the provider's base URL."""

    path: str
    body: bytes


class StreamDecoder(Protocol):
    done: bool  # the wire format's own end marker was seen ([DONE], message_stop)

    def feed(self, data: bytes) -> list[ChatEvent]:
        """Decode one SSE `data` payload into zero or more events."""
        ...


class Codec(Protocol):
    def encode_chat(self, request: ChatRequest, target: Target, stream: bool) -> Outbound: ...

    def decode_chat(self, body: bytes) -> list[ChatEvent]: ...

    def stream_decoder(self) -> StreamDecoder: ...

    def encode_embed(self, request: EmbeddingRequest, target: Target) -> Outbound: ...

    def decode_embed(self, body: bytes) -> EmbeddingResponse: ...

    def classify(self, status: int, body: bytes, headers: Mapping[str, str]) -> ProviderError:
        """Turn a non-2xx upstream answer into a ProviderError with the right ErrorKind."""
        ...


class Provider(Protocol):
    name: str
    region: str | None

    def chat(self, request: ChatRequest, target: Target) -> AsyncIterator[ChatEvent]: ...

    async def embed(self, request: EmbeddingRequest, target: Target) -> EmbeddingResponse: ...

    async def aclose(self) -> None: ...


def retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds from `retry-after-ms` or `retry-after` (seconds or an HTTP date)."""
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return float(ms) / 1000
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        from email.utils import parsedate_to_datetime
        from time import time

        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time())
        except (TypeError, ValueError):
            return None
