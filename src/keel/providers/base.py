"""What the gateway calls: a Provider turns a request into events, over HTTP or in process."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

from keel.types import ChatEvent, ChatRequest, EmbeddingRequest, EmbeddingResponse, Target


class Provider(Protocol):
    name: str
    region: str | None

    def chat(self, request: ChatRequest, target: Target) -> AsyncIterator[ChatEvent]: ...

    async def embed(self, request: EmbeddingRequest, target: Target) -> EmbeddingResponse: ...

    async def aclose(self) -> None: ...
