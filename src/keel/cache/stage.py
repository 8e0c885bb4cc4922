"""The cache stage: answer from the tenant's cache, keep new answers, and serve stale ones on error.

Between limits and failover. For a chat call that may use the cache (cache.py `cacheable`): an exact
hit, else (semantic on) the nearest earlier last-user-turn in the same partition, served when the pair
judge (keel/cache/pair.py: `verify`, then cosine plus lexical evidence) scores it at or over the alias's
threshold (without a judge: the cosine alone); on a miss the call goes on and its answer is kept when it ends complete (finished, not
cut, not resumed, not from a fallback alias or a static answer). When every target fails, an expired
entry may answer instead (`stale`, before the static answer). `/v1/embeddings` vectors are kept per (model,
input text): known texts cost nothing, unknown ones go upstream in one call. A cache store that
fails is a miss, counted; it never fails a call, nor holds it: a read that takes longer than
`read_timeout` is a miss, and after a failure the store is left alone (reads miss, answers are not
kept) for `HOLD_OFF_S`, so a database outage costs a call at most one bounded wait. Hits bill
nothing: the trace records zero tokens and cost, and what the answer cost once as
`cache_saved_usd`; the response carries the original usage.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol, TypeVar

from keel.cache.policy import (
    CachePolicy,
    cacheable,
    decode_answer,
    decode_vector,
    embedding_key,
    encode_answer,
    encode_vector,
    exact_key,
    last_user_text,
    partition,
)
from keel.errors import ErrorKind, KeelError, ProviderError, UpstreamError
from keel.gateway.call import Call, Outcome, Reply, no_events
from keel.gateway.directives import Directives
from keel.gateway.pipeline import Handler
from keel.gateway.stages.failover import FailoverState
from keel.store.protocols import CacheEntry, CacheStore, VectorIndex
from keel.types import (
    ChatEvent,
    ChatRequest,
    ChatResponse,
    EmbeddingRequest,
    EmbeddingResponse,
    Finish,
    Reasoning,
    Start,
    Text,
    ToolCallDelta,
    Usage,
    UsageEvent,
)

log = logging.getLogger("keel.cache")
_CHUNK = 64  # characters per streamed chunk of a cached answer
_NO_STALE = frozenset({ErrorKind.bad_request, ErrorKind.content_filter, ErrorKind.context_length})
HOLD_OFF_S = 1.0  # after a store failure, leave it alone this long
T = TypeVar("T")


class TextEmbedder(Protocol):
    """Turns a last user turn into a unit vector; `model_id` names the model and its version."""

    model_id: str

    async def embed(self, text: str) -> Sequence[float]: ...


@dataclass
class CacheCounts:
    hits: int = 0
    semantic_hits: int = 0
    stale: int = 0
    misses: int = 0
    stored: int = 0
    store_errors: int = 0
    store_skipped: int = 0  # reads and writes not tried: the store failed within HOLD_OFF_S
    verify_rejects: int = 0  # semantic neighbours the pair judge turned down


Judge = Callable[[str, str, float], float | None]  # (kept question, new question, cosine) → score, None: never
_NO_DIRECTIVES = Directives()


@dataclass(slots=True)
class CacheState:
    """The cache slot's per-call state (`call.state(CacheState)`): what the caller asks of the cache
    (`x-keel-cache-control`, set by the edge when the header is present; an admin replay skips the cache)."""

    directives: Directives = field(default=_NO_DIRECTIVES)


def directives(call: Call) -> Directives:
    state = call.find(CacheState)
    return _NO_DIRECTIVES if state is None else state.directives


class CacheStage:
    def __init__(
        self,
        store: CacheStore,
        policies: Mapping[str, CachePolicy],
        default: CachePolicy,
        *,
        vectors: VectorIndex | None = None,
        embedder: TextEmbedder | None = None,
        judge: Judge | None = None,
        search_margin: float = 0.0,
        read_timeout: float | None = None,
    ) -> None:
        self._store = store
        self._read_timeout = read_timeout  # None: stores in this process's memory, which cannot hang
        self._skip_until = 0.0  # monotonic
        self._policies = dict(policies)
        self._default = default
        self._vectors = vectors
        self._embedder = embedder
        self._judge = judge
        self._margin = search_margin  # the judge may score a pair this much over its cosine
        self.counts = CacheCounts()
        self._pending: set[asyncio.Task[Any]] = set()

    @property
    def stores(self) -> tuple[CacheStore, VectorIndex | None]:
        """The exact cache and the vector index, for purges (drain first: writes may be in flight)."""
        return self._store, self._vectors

    def policy(self, alias: str) -> CachePolicy:
        return self._policies.get(alias, self._default)

    async def __call__(self, call: Call, next: Handler) -> Reply:
        assert call.principal is not None and call.plan is not None
        policy = self.policy(call.plan.alias)
        request = call.request
        if isinstance(request, EmbeddingRequest):
            if policy.enabled and policy.embeddings and request.inputs:  # token-array inputs are not cached
                return await self._embeddings(call, request, policy, next)
            return await next(call)
        if not cacheable(request, policy, directives(call)):
            if policy.enabled:
                call.trace.tags["keel.cache"] = "bypass"
            return await next(call)
        return await self._chat(call, request, policy, next)

    # ---- chat -------------------------------------------------------------------------------------

    async def _chat(self, call: Call, request: ChatRequest, policy: CachePolicy, next: Handler) -> Reply:
        assert call.principal is not None
        tenant, asked, now = call.principal.tenant, directives(call), time.time()
        key = exact_key(tenant, request)
        entry = await self._get(tenant, key, now)
        if entry is not None and asked.read and _fresh(entry, now, asked):
            return self._hit(call, entry, "hit")
        semantic = self._semantic_query(request, policy, tenant)
        vector: Sequence[float] | None = None
        if semantic is not None and self._embedder is not None:
            vector = await self._embed(semantic[1])
            if vector is not None and asked.read:
                found = await self._nearest(call, tenant, semantic, vector, policy, now, asked)
                if found is not None:
                    return found
        stale = entry is not None and policy.stale_s > 0
        if stale:
            call.state(FailoverState).stale_held = True  # it, not the static answer, follows the targets
        try:
            reply = await next(call)
        except UpstreamError as err:
            if entry is None or not stale or _request_at_fault(err):
                raise
            self.counts.stale += 1
            call.trace.fallback = "stale"
            log.info("all targets failed; answering from an expired cache entry (trace %s)", call.trace.id)
            return self._hit(call, entry, "stale")
        self.counts.misses += 1
        call.trace.cache = "miss"
        if asked.write:
            where = None if semantic is None or vector is None else (semantic[0], vector)
            question = last_user_text(request)
            reply.on_done(lambda outcome: self._keep(call, key, policy, where, question, outcome))
        return reply

    def _semantic_query(self, request: ChatRequest, policy: CachePolicy, tenant: str) -> tuple[str, str] | None:
        if not policy.semantic or self._vectors is None or (request.tools and not policy.with_tools):
            return None
        text = last_user_text(request)
        return None if text is None or not text.strip() else (partition(tenant, request), text)

    async def _nearest(
        self,
        call: Call,
        tenant: str,
        semantic: tuple[str, str],
        vector: Sequence[float],
        policy: CachePolicy,
        now: float,
        asked: Directives,
    ) -> Reply | None:
        assert self._vectors is not None and self._embedder is not None
        part, text = semantic
        floor = policy.threshold - self._margin if self._judge is not None else policy.threshold
        try:
            near = await self._read(self._vectors.nearest(tenant, part, self._embedder.model_id, vector, floor, now))
        except Exception as exc:
            self._store_failed(exc)
            return None
        if near is None:
            return None
        entry = await self._get(tenant, near.key, now)
        if entry is None or not _fresh(entry, now, asked):
            return None
        if self._judge is not None:
            kept = decode_answer(entry.value).question
            score = None if kept is None else self._judge(kept, text, near.similarity)
            if score is None or score < policy.threshold:
                self.counts.verify_rejects += 1
                call.trace.tags["keel.cache_rejected"] = round(near.similarity, 4)
                if score is not None:
                    call.trace.tags["keel.cache_score"] = round(score, 4)
                return None
            call.trace.tags["keel.cache_score"] = round(score, 4)
        call.trace.tags["keel.cache_similarity"] = round(near.similarity, 4)
        return self._hit(call, entry, "semantic")

    def _hit(self, call: Call, entry: CacheEntry, kind: str) -> Reply:
        answer = decode_answer(entry.value)
        response, provider = answer.response, answer.provider
        record = call.trace
        record.cache, record.cache_saved_usd = kind, entry.cost_usd or 0.0
        record.provider, record.model = f"cache:{provider or ''}", response.model
        record.tags["keel.cache_age_s"] = round(time.time() - entry.created_at, 3)
        if kind == "hit":
            self.counts.hits += 1
        elif kind == "semantic":
            self.counts.semantic_hits += 1
        reply = Reply(_replay(response), call.t0)
        reply.cost_usd = 0.0  # a hit bills nothing
        return reply

    def _keep(
        self,
        call: Call,
        key: str,
        policy: CachePolicy,
        where: tuple[str, Sequence[float]] | None,
        question: str | None,
        outcome: Outcome,
    ) -> None:
        complete = outcome.status == "ok" and outcome.response.finish_reason in ("stop", "length", "tool_calls")
        failover = call.find(FailoverState)
        notes = outcome.notes
        if (
            not complete
            or (failover is not None and failover.degraded is not None)
            or "keel.usage" in notes
            or "keel.resumed" in notes
        ):
            return  # a cut, degraded, static, estimated or stitched answer is not worth repeating
        if self._holding_off():
            return
        assert call.principal is not None
        now = time.time()
        entry = CacheEntry(
            call.principal.tenant,
            key,
            encode_answer(outcome.response, call.target.provider if call.target is not None else None, question),
            now,
            now + policy.ttl_s,
            now + policy.ttl_s + policy.stale_s,
            outcome.cost_usd,
            call.user,
        )
        self._spawn(self._put(entry, where))

    async def _put(self, entry: CacheEntry, where: tuple[str, Sequence[float]] | None) -> None:
        try:
            await self._store.put(entry)
            if where is not None and self._vectors is not None and self._embedder is not None:
                part, vector = where
                await self._vectors.add(
                    entry.tenant, part, self._embedder.model_id, entry.key, vector, entry.stale_until, entry.user
                )
            self.counts.stored += 1
        except Exception as exc:
            self._store_failed(exc)

    # ---- embeddings -------------------------------------------------------------------------------

    async def _embeddings(self, call: Call, request: EmbeddingRequest, policy: CachePolicy, next: Handler) -> Reply:
        assert call.principal is not None and call.plan is not None
        asked, now, tenant = directives(call), time.time(), call.principal.tenant
        primary = call.plan.targets[0].key
        keys = [embedding_key(tenant, primary, request, text) for text in request.inputs]
        known: dict[int, tuple[float, ...]] = {}
        if asked.read:
            for i, key in enumerate(keys):
                entry = await self._get(tenant, key, now)
                if entry is not None and _fresh(entry, now, asked):
                    known[i] = decode_vector(entry.value)
        missing = [i for i in range(len(keys)) if i not in known]
        if not missing:
            self.counts.hits += 1
            record = call.trace
            record.cache, record.cache_saved_usd = "hit", 0.0
            model = call.plan.targets[0].model
            record.provider, record.model = "cache", model
            vectors = tuple(known[i] for i in range(len(keys)))
            reply = Reply(no_events(), call.t0, embedding=EmbeddingResponse(model, vectors, Usage()))
            reply.cost_usd = 0.0
            return reply
        call.request = replace(request, inputs=tuple(request.inputs[i] for i in missing)) if known else request
        try:
            reply = await next(call)
        finally:
            call.request = request
        assert reply.embedding is not None
        fresh = reply.embedding.vectors
        call.trace.cache = "miss" if not known else "partial"
        if asked.write and call.target is not None and call.target.key == primary and not self._holding_off():
            expires = now + policy.ttl_s  # the alias's TTL; a vector is never served stale
            self._spawn(self._keep_vectors(tenant, [keys[i] for i in missing], fresh, call.user, now, expires))
        if known:
            merged = dict(known) | dict(zip(missing, fresh, strict=True))
            reply.embedding = replace(reply.embedding, vectors=tuple(merged[i] for i in range(len(keys))))
        self.counts.misses += 1
        return reply

    async def _keep_vectors(
        self,
        tenant: str,
        keys: list[str],
        vectors: Sequence[Sequence[float]],
        user: str | None,
        now: float,
        expires: float,
    ) -> None:
        for key, vector in zip(keys, vectors, strict=True):
            entry = CacheEntry(tenant, key, encode_vector(vector), now, expires, expires, 0.0, user)
            try:
                await self._store.put(entry)
            except Exception as exc:
                self._store_failed(exc)
                return

    # ---- plumbing ---------------------------------------------------------------------------------

    async def _get(self, tenant: str, key: str, now: float) -> CacheEntry | None:
        try:
            return await self._read(self._store.get(tenant, key, now))
        except Exception as exc:
            self._store_failed(exc)
            return None

    async def _read(self, read: Coroutine[Any, Any, T]) -> T | None:
        """A store read on the request path: None (a miss) if the store is held off; TimeoutError past `read_timeout`."""
        if self._read_timeout is None:
            return await read
        if self._holding_off():
            read.close()
            return None
        task = asyncio.ensure_future(read)
        done, _ = await asyncio.wait((task,), timeout=self._read_timeout)
        if not done:
            task.cancel()  # it ends in its own time: waiting for a cancelled database read can take seconds
            task.add_done_callback(_retrieve)
            raise TimeoutError(f"no answer within {self._read_timeout:g} s")
        return task.result()

    def _holding_off(self) -> bool:
        if time.monotonic() < self._skip_until:
            self.counts.store_skipped += 1
            return True
        return False

    async def _embed(self, text: str) -> Sequence[float] | None:
        assert self._embedder is not None
        try:
            return await self._embedder.embed(text)
        except Exception as exc:
            self._store_failed(exc, hold_off=False)
            return None

    def _store_failed(self, exc: Exception, *, hold_off: bool = True) -> None:
        if hold_off:
            self._skip_until = time.monotonic() + HOLD_OFF_S
        self.counts.store_errors += 1
        if self.counts.store_errors == 1 or self.counts.store_errors % 1000 == 0:
            log.warning("cache unavailable (%s: %s); answering as a miss", type(exc).__name__, exc)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def drain(self) -> None:
        """Wait for answers still being written (shutdown, tests)."""
        while self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)

    async def aclose(self) -> None:
        await self.drain()
        await self._store.aclose()
        if self._vectors is not None:
            await self._vectors.aclose()


def _fresh(entry: CacheEntry, now: float, directives: Directives) -> bool:
    if now >= entry.expires_at:
        return False
    return directives.max_age_s is None or now - entry.created_at <= directives.max_age_s


def _request_at_fault(err: KeelError) -> bool:
    return isinstance(err, ProviderError) and err.error_kind in _NO_STALE


async def _replay(response: ChatResponse) -> AsyncIterator[ChatEvent]:
    """A kept answer as the events a provider would yield: streamed calls get it as a stream."""
    yield Start(response.id, response.model)
    for block in response.reasoning:  # thinking, signed as it was
        if block.get("type") == "redacted_thinking":
            yield Reasoning(redacted=str(block.get("data") or ""))
        else:
            yield Reasoning(str(block.get("thinking") or ""), str(block.get("signature") or "") or None)
    text = response.content or ""
    for i in range(0, len(text), _CHUNK):
        yield Text(text[i : i + _CHUNK])
    for index, c in enumerate(response.tool_calls):
        yield ToolCallDelta(index, c.id, c.name, c.arguments)
    yield Finish(response.finish_reason or "stop")
    yield UsageEvent(response.usage or Usage())


def _retrieve(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()  # a read given up on: its failure is already counted as a timeout
