"""The simulated provider: a real in-process provider with deterministic answers.

It serves the embedded demo (no network, no keys), load tests and tests that need no HTTP.
Latency, time to first token and tokens per second are configurable; `faults` is a script of
outcomes cycled per request ("ok", or an ErrorKind value such as "overloaded"; "cut" ends a
stream half-way with a network error).
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import math
from collections.abc import AsyncIterator, Iterator

from keel.errors import ErrorKind, ProviderError
from keel.types import (
    ChatEvent,
    ChatRequest,
    EmbeddingRequest,
    EmbeddingResponse,
    Finish,
    Start,
    Target,
    Text,
    ToolCallDelta,
    Usage,
    UsageEvent,
)

_DIM = 64


class SimulatedProvider:
    def __init__(
        self,
        name: str,
        *,
        region: str | None = None,
        latency_ms: float = 0.0,
        ttft_ms: float = 0.0,
        tokens_per_second: float = 0.0,
        faults: list[str] | None = None,
    ) -> None:
        self.name = name
        self.region = region
        self._latency = latency_ms / 1000
        self._ttft = ttft_ms / 1000
        self._token_gap = 1 / tokens_per_second if tokens_per_second else 0.0
        self._faults: Iterator[str] | None = itertools.cycle(faults) if faults else None
        self._count = 0

    def _fault(self) -> str:
        return next(self._faults) if self._faults else "ok"

    async def chat(self, request: ChatRequest, target: Target) -> AsyncIterator[ChatEvent]:
        fault = self._fault()
        self._count += 1
        if self._latency:
            await asyncio.sleep(self._latency)
        if fault not in ("ok", "cut"):
            raise ProviderError(ErrorKind(fault), f"simulated {fault}", provider=self.name, status=None)
        if self._ttft:
            await asyncio.sleep(self._ttft)
        yield Start(f"sim-{self._count}", target.model)
        prompt_tokens = _prompt_tokens(request)
        words = _reply(request).split(" ")
        finish = "stop"
        if request.max_tokens is not None and len(words) > request.max_tokens:
            words, finish = words[: request.max_tokens], "length"
        if request.tools and request.tool_choice != "none" and request.messages[-1].role != "tool":
            name = request.tools[0]["function"]["name"]
            yield ToolCallDelta(0, f"call_sim_{self._count}", name, '{"input": "simulated"}')
            yield Finish("tool_calls")
            yield UsageEvent(Usage(input_tokens=prompt_tokens, output_tokens=8))
            return
        for i, word in enumerate(words):
            if fault == "cut" and i == len(words) // 2:
                raise ProviderError(ErrorKind.network, "simulated stream cut", provider=self.name)
            if self._token_gap and i:
                await asyncio.sleep(self._token_gap)
            yield Text(word if i == 0 else " " + word)
        yield Finish(finish)
        yield UsageEvent(Usage(input_tokens=prompt_tokens, output_tokens=len(words)))

    async def embed(self, request: EmbeddingRequest, target: Target) -> EmbeddingResponse:
        if self._latency:
            await asyncio.sleep(self._latency)
        vectors = tuple(_vector(text) for text in request.inputs)
        tokens = sum(len(t) // 4 + 1 for t in request.inputs)
        return EmbeddingResponse(target.model, vectors, Usage(input_tokens=tokens))

    async def aclose(self) -> None:
        return None


def _text_of(content: object) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return ""


def _prompt_tokens(request: ChatRequest) -> int:
    return sum(len(_text_of(m.content)) for m in request.messages) // 4 + len(request.messages) * 3 + 1


def _reply(request: ChatRequest) -> str:
    last = next((m for m in reversed(request.messages) if m.role in ("user", "tool")), request.messages[-1])
    words = _text_of(last.content).split()[:12]
    return "Simulated answer to: " + " ".join(words) if words else "Simulated answer."


def _vector(text: str) -> tuple[float, ...]:
    digest = hashlib.sha512(text.encode()).digest()
    raw = [(b - 127.5) / 127.5 for b in digest[:_DIM]]
    norm = math.sqrt(sum(x * x for x in raw)) or 1.0
    return tuple(x / norm for x in raw)
