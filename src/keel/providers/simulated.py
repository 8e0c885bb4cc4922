"""The simulated provider: a real in-process provider with deterministic answers.

It serves the embedded demo (no network, no keys), load tests and tests that need no HTTP.
Latency, time to first token and tokens per second are configurable; `faults` is a script of
outcomes cycled per request ("ok", or an ErrorKind value such as "overloaded"; "cut" ends a
stream half-way with a network error).

Given tools (and `tool_choice` not "none", and no tool result to answer), it calls the chosen tool (the
named one, else the first) with arguments that fit its parameters' schema; given a `response_format`,
its text is JSON: a value of the json_schema (keel.providers.schema_sample); for json_object, a value
of a schema quoted in the messages (as instructor's JSON mode sends it), else `{"answer": ...}`. All deterministic, so structured-output clients work on the demo alias.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import itertools
import json
import math
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import orjson

from keel.errors import ErrorKind, ProviderError
from keel.providers.schema_sample import sample
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
        rpm: int | None = None,
    ) -> None:
        self.name = name
        self.region = region
        self._latency = latency_ms / 1000
        self._ttft = ttft_ms / 1000
        self._token_gap = 1 / tokens_per_second if tokens_per_second else 0.0
        self._faults: Iterator[str] | None = itertools.cycle(faults) if faults else None
        self._count = 0
        self._rpm = rpm
        self._recent: collections.deque[float] = collections.deque()  # call times in the last minute, with rpm

    def _fault(self) -> str:
        return next(self._faults) if self._faults else "ok"

    def _over_rpm(self) -> float | None:
        """With `rpm`, the seconds until a slot frees when this minute's calls are all taken (a 429)."""
        if self._rpm is None:
            return None
        now = time.monotonic()
        while self._recent and now - self._recent[0] >= 60.0:
            self._recent.popleft()
        if len(self._recent) >= self._rpm:
            return 60.0 - (now - self._recent[0])
        self._recent.append(now)
        return None

    async def chat(self, request: ChatRequest, target: Target) -> AsyncIterator[ChatEvent]:
        wait = self._over_rpm()
        if wait is not None:
            raise ProviderError(
                ErrorKind.rate_limited, "simulated rate limit", provider=self.name, status=429, retry_after=wait
            )
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
        words = _answer(request).split(" ")
        finish = "stop"
        if request.max_tokens is not None and len(words) > request.max_tokens:
            words, finish = words[: request.max_tokens], "length"
        tool = _chosen_tool(request)
        if tool is not None:
            arguments = orjson.dumps(sample(tool.get("parameters") or {"type": "object"})).decode()
            yield ToolCallDelta(0, f"call_sim_{self._count}", str(tool.get("name", "tool")), arguments)
            yield Finish("tool_calls")
            yield UsageEvent(Usage(input_tokens=prompt_tokens, output_tokens=len(arguments) // 4 + 1))
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
        if request.tokens:  # token arrays: a vector per array, from its ids
            vectors = tuple(_vector(",".join(map(str, ids))) for ids in request.tokens)
            return EmbeddingResponse(target.model, vectors, Usage(input_tokens=sum(map(len, request.tokens))))
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


def _chosen_tool(request: ChatRequest) -> dict[str, Any] | None:
    """The function the simulated model calls: tool_choice's named one, else the first; None when it may
    not call one (no tools, tool_choice "none") or has a tool result to answer."""
    if not request.tools or request.tool_choice == "none" or request.messages[-1].role == "tool":
        return None
    functions = [t["function"] for t in request.tools if isinstance(t.get("function"), dict)]
    choice = request.tool_choice
    if isinstance(choice, dict):
        wanted = (choice.get("function") or {}).get("name") or choice.get("name")
        return next((f for f in functions if f.get("name") == wanted), functions[0] if functions else None)
    if choice in (None, "auto") and request.response_format is not None:
        return None  # asked for structured text, tools only optional: answer in the format
    return functions[0] if functions else None


def _answer(request: ChatRequest) -> str:
    """The answer as JSON fitting `response_format`: a json_schema's sample, or an object for json_object."""
    fmt = request.response_format or {}
    if fmt.get("type") == "json_schema":
        spec = fmt.get("json_schema") or {}
        return orjson.dumps(sample(spec.get("schema") or {"type": "object"})).decode()
    if fmt.get("type") == "json_object":
        schema = _schema_in(request)
        return orjson.dumps(sample(schema) if schema else {"answer": _reply(request)}).decode()
    return _reply(request)


def _schema_in(request: ChatRequest) -> dict[str, Any] | None:
    """A JSON schema quoted in the messages (instructor's JSON mode puts the model's schema in the system
    prompt): the first JSON object in a message's text that has `properties`."""
    decoder, tries = json.JSONDecoder(), 64  # bounded: a prompt full of braces costs little
    for message in request.messages:
        text = _text_of(message.content)
        start = text.find("{")
        while start >= 0 and tries:
            tries -= 1
            try:
                value, _ = decoder.raw_decode(text, start)
            except ValueError:
                value = None
            if isinstance(value, dict) and isinstance(value.get("properties"), dict):
                return value
            start = text.find("{", start + 1)
    return None


def _vector(text: str) -> tuple[float, ...]:
    digest = hashlib.sha512(text.encode()).digest()
    raw = [(b - 127.5) / 127.5 for b in digest[:_DIM]]
    norm = math.sqrt(sum(x * x for x in raw)) or 1.0
    return tuple(x / norm for x in raw)
