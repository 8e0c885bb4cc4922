"""What the response cache keys on, when a call may use it, and how an answer is kept.

Exact keys hash the tenant with everything that changes a call's output: the alias, every message
(with its extra fields), tools, tool choice, response format, sampling parameters and unknown
fields; never `user`, `metadata` or `stream`, which change who asked or how the answer travels, not
the answer. A semantic match compares only the last user turn, and only within a partition: the
hash of the tenant and the same call minus that turn (system prompt, tools, conversation prefix,
parameters); a matched vector points at the exact key of the call that stored it. Both hashes start from the tenant, so no two tenants can ever share an entry, whatever
the backend. Everything here is pure; the cache stage (gateway/caching.py) does the I/O.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from keel.config import AliasCacheConfig, CacheConfig
from keel.gateway.directives import Directives
from keel.types import ChatRequest, ChatResponse, EmbeddingRequest, Message, ToolCall, Usage

_NOT_OUTPUT = frozenset({"user", "metadata", "stream_options", "store"})  # extra fields that change no answer


@dataclass(frozen=True, slots=True)
class CachePolicy:
    """The cache settings for one alias: the `cache:` defaults with the alias's changes applied."""

    enabled: bool
    ttl_s: float
    stale_s: float
    nondeterministic: bool
    semantic: bool
    threshold: float
    with_tools: bool
    embeddings: bool

    @classmethod
    def resolve(cls, base: CacheConfig, alias: AliasCacheConfig) -> CachePolicy:
        def pick(value: Any, default: Any) -> Any:
            return default if value is None else value

        return cls(
            enabled=pick(alias.enabled, base.enabled),
            ttl_s=pick(alias.ttl_s, base.ttl_s),
            stale_s=base.stale_s,
            nondeterministic=pick(alias.nondeterministic, base.nondeterministic),
            semantic=pick(alias.semantic, base.semantic.enabled),
            threshold=pick(alias.threshold, base.semantic.served_threshold),
            with_tools=pick(alias.with_tools, base.semantic.with_tools),
            embeddings=base.embeddings,
        )


def cacheable(request: ChatRequest, policy: CachePolicy, directives: Directives) -> bool:
    """Deterministic enough to cache: temperature 0, or allowed for the alias or by the call."""
    if not policy.enabled or not (directives.read or directives.write):
        return False
    return request.temperature == 0 or policy.nondeterministic or directives.allow


def _message(m: Message) -> list[Any]:
    calls = [[c.id, c.name, c.arguments] for c in m.tool_calls]
    return [m.role, m.content, m.name, calls, m.tool_call_id, m.extra]


def _parameters(r: ChatRequest) -> list[Any]:
    extra = {k: v for k, v in r.extra.items() if k not in _NOT_OUTPUT}
    return [
        r.model,
        r.max_tokens,
        r.temperature,
        r.top_p,
        list(r.stop),
        list(r.tools),
        r.tool_choice,
        r.response_format,
        extra,
    ]


def _digest(kind: str, tenant: str, body: Any) -> str:
    blob = orjson.dumps([kind, tenant, body], option=orjson.OPT_SORT_KEYS)
    return f"{kind}:{hashlib.sha256(blob).hexdigest()}"


def exact_key(tenant: str, request: ChatRequest) -> str:
    return _digest("x", tenant, [_parameters(request), [_message(m) for m in request.messages]])


def last_user_text(request: ChatRequest) -> str | None:
    """The text of the final turn when it is a user's and holds only text; else None (no semantic match)."""
    if not request.messages or request.messages[-1].role != "user":
        return None
    content = request.messages[-1].content
    if isinstance(content, str):
        return content
    texts = []
    for part in content or ():
        if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
            return None  # an image or audio part: the words alone do not say what was asked
        texts.append(part["text"])
    return "\n".join(texts) if texts else None


def partition(tenant: str, request: ChatRequest) -> str:
    """Everything but the last user turn: calls match semantically only within one partition."""
    prefix = [_message(m) for m in request.messages[:-1]]
    last = request.messages[-1]
    return _digest("p", tenant, [_parameters(request), prefix, [last.role, last.name, last.extra]])


def embedding_key(tenant: str, target: str, request: EmbeddingRequest, text: str) -> str:
    """One vector per (tenant, serving model, input text, output-changing options such as dimensions)."""
    extra = {k: v for k, v in request.extra.items() if k not in _NOT_OUTPUT | {"encoding_format"}}
    return _digest("e", tenant, [target, extra, text])


def encode_answer(response: ChatResponse, provider: str | None, question: str | None = None) -> bytes:
    """The answer as kept; `question` (the last user turn) lets a later semantic match be verified."""
    u = response.usage or Usage()
    return orjson.dumps(
        {
            "question": question,
            "id": response.id,
            "model": response.model,
            "provider": provider,
            "content": response.content,
            "tool_calls": [[c.id, c.name, c.arguments] for c in response.tool_calls],
            "finish_reason": response.finish_reason,
            "usage": [u.input_tokens, u.output_tokens, u.cached_input_tokens, u.cache_write_tokens, u.reasoning_tokens],
            "reasoning": list(response.reasoning),
        }
    )


@dataclass(frozen=True, slots=True)
class Answer:
    response: ChatResponse
    provider: str | None
    question: str | None  # the last user turn that asked it, when it was kept with one


def decode_answer(value: bytes) -> Answer:
    d = orjson.loads(value)
    calls = tuple(ToolCall(*c) for c in d["tool_calls"])
    usage = Usage(*d["usage"])
    reasoning = tuple(d.get("reasoning") or ())  # answers kept before thinking was carried have none
    response = ChatResponse(d["id"], d["model"], d["content"], calls, d["finish_reason"], usage, reasoning)
    return Answer(response, d["provider"], d.get("question"))


def encode_vector(vector: Sequence[float]) -> bytes:
    return struct.pack(f"<{len(vector)}d", *vector)  # float64: the same vector back, bit for bit


def decode_vector(value: bytes) -> tuple[float, ...]:
    return struct.unpack(f"<{len(value) // 8}d", value)
