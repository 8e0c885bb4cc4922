"""The `retrieve` slot: a chat call with `rag: {collection, top_k, filters, mode, template, freshness, rerank}`
(extra_body) is answered over the collection's chunks that its caller may read.

The caller is the virtual key's: its tenant, its user (the key's, never the body's `user`, which any key
holder could set) and its groups (`keel rag groups KEY --set a,b`; keel.rag.acl). The query is the last
user turn. The hits go into a system message built by a versioned context template (`TEMPLATES`; the
call may name one, default the newest), numbered so the model can cite [n]; the response carries
`citations` (document id, title, chunk, score, n) and the retrieval is a `retrieval` span of the call's
trace, with what was retrieved and why. `rerank` overrides the collection's reranking (keel.rag.rerank:
an object of fields to change, or false); the reranking call runs as the same key. No hit: the template says so, and citations are [].
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping
from typing import Any

from keel.errors import InvalidRequest, NotFound
from keel.gateway.call import Call, Reply, ResponseFields
from keel.gateway.pipeline import Handler
from keel.rag.collections import FreshnessDefaults
from keel.rag.index import Index, NoIndex
from keel.rag.rerank import Reranker
from keel.rag.search import (
    MAX_TOP_K,
    BadSearch,
    Freshness,
    Hit,
    SearchQuery,
    SearchResult,
    parse_filters,
    parse_freshness,
    resolve_freshness,
)
from keel.store.protocols.rag_index import RagIndexStore
from keel.traces.spans import child_span
from keel.types import ChatRequest, Message, Span

DEFAULT_TOP_K = 5
MAX_CONTEXT_CHARS = 24_000  # the context message's bound: hits past it are left out (and not cited)
GROUPS_TTL_S = 30.0
TEMPLATES: Mapping[str, str] = {
    "v1": (
        "Answer from the numbered sources below. Cite each source you use as [n]. If they do not hold "
        "the answer, say that you do not know.\n\n{sources}"
    ),
}
LATEST = "v1"
NO_SOURCES = "(no source matched the question)"


class KeyGroups:
    """The groups each key searches as, read from the store and kept for `GROUPS_TTL_S`."""

    def __init__(self, store: RagIndexStore, run: Callable[..., Any]) -> None:
        self._store = store
        self._run = run
        self._known: dict[str, tuple[float, tuple[str, ...]]] = {}

    async def of(self, key_id: str) -> tuple[str, ...]:
        found = self._known.get(key_id)
        now = time.monotonic()
        if found is not None and found[0] > now:
            return found[1]
        groups: tuple[str, ...] = await self._run(self._store.rag_key_groups, key_id)
        if len(self._known) > 10_000:
            self._known.clear()
        self._known[key_id] = (now + GROUPS_TTL_S, groups)
        return groups

    def forget(self, key_id: str) -> None:
        self._known.pop(key_id, None)


class RetrieveStage:
    def __init__(
        self,
        index: Index,
        groups: KeyGroups,
        defaults: FreshnessDefaults,
        put_span: Callable[[Span], None],
        reranker: Reranker,
    ) -> None:
        self._index = index
        self._groups = groups
        self._defaults = defaults
        self._put_span = put_span
        self._reranker = reranker

    async def __call__(self, call: Call, next: Handler) -> Reply:
        request = call.request
        if isinstance(request, ChatRequest) and "rag" in request.extra:
            await self._retrieve(call, request)
        return await next(call)

    async def _retrieve(self, call: Call, request: ChatRequest) -> None:
        assert call.principal is not None  # the auth slot runs first
        rag = request.extra["rag"]
        collection, top_k, filters, mode, template, freshness = _options(rag)
        text = _question(request)
        principal = call.principal
        groups = await self._groups.of(principal.key_id)
        half_life, exclude_expired = resolve_freshness(await self._defaults.of(principal.tenant, collection), freshness)
        query = SearchQuery(
            principal.tenant,
            collection,
            text,
            top_k,
            principal.user,
            groups,
            filters=filters,
            mode=mode,
            half_life_days=half_life,
            exclude_expired=exclude_expired,
        )
        started = time.time()
        try:
            rerank = rag.get("rerank")
            result = await self._reranker.search(self._index, query, rerank, "rag.rerank", principal, call.allowed)
        except NoIndex:
            raise NotFound(f"RAG collection '{collection}' has no index in this tenant.") from None
        except BadSearch as err:
            raise InvalidRequest(str(err), err.param) from None
        hits = _bounded(result.hits)
        context = Message("system", TEMPLATES[template].format(sources=_sources(hits) or NO_SOURCES))
        at = next((i for i, m in enumerate(request.messages) if m.role not in ("system", "developer")), 0)
        messages = (*request.messages[:at], context, *request.messages[at:])
        extra = {k: v for k, v in request.extra.items() if k != "rag"}
        call.request = dataclasses.replace(request, messages=messages, extra=extra)
        call.state(ResponseFields).fields["citations"] = [_citation(n, h) for n, h in enumerate(hits, 1)]
        tags = call.trace.tags
        tags["keel.rag.collection"] = collection
        tags["keel.rag.template"] = template
        self._put_span(child_span(call.trace, "retrieval", _span_name(collection, hits), started, time.time(),
                                  attributes=_span_attributes(query, result, hits, template, groups)))  # fmt: skip


def _options(raw: Any) -> tuple[str, int, Any, Any, str, Freshness | None]:
    if not isinstance(raw, dict):
        raise InvalidRequest(
            "'rag' must be an object: {collection, top_k, filters, mode, template, freshness, rerank}.", "rag"
        )
    unknown = set(raw) - {"collection", "top_k", "filters", "mode", "template", "freshness", "rerank"}
    if unknown:
        raise InvalidRequest(f"Unknown field 'rag.{sorted(unknown)[0]}'.", f"rag.{sorted(unknown)[0]}")
    collection = raw.get("collection")
    if not isinstance(collection, str) or not collection or len(collection) > 128:
        raise InvalidRequest("'rag.collection' must be a collection name.", "rag.collection")
    top_k = raw.get("top_k", DEFAULT_TOP_K)
    if type(top_k) is not int or not 1 <= top_k <= MAX_TOP_K:
        raise InvalidRequest(f"'rag.top_k' must be an integer within 1..{MAX_TOP_K}.", "rag.top_k")
    mode = raw.get("mode", "hybrid")
    if mode not in ("hybrid", "lexical", "vector"):
        raise InvalidRequest("'rag.mode' must be hybrid, lexical or vector.", "rag.mode")
    template = raw.get("template", LATEST)
    if template not in TEMPLATES:
        raise InvalidRequest(f"'rag.template' must be one of {', '.join(TEMPLATES)}.", "rag.template")
    try:
        filters = parse_filters(raw.get("filters"), "rag.filters")
        freshness = parse_freshness(raw.get("freshness"), "rag.freshness")
    except BadSearch as err:
        raise InvalidRequest(str(err), err.param) from None
    return collection, top_k, filters, mode, template, freshness


def _question(request: ChatRequest) -> str:
    for m in reversed(request.messages):
        if m.role == "user":
            if isinstance(m.content, str):
                text = m.content
            else:
                parts = m.content or []
                text = " ".join(
                    str(p.get("text", "")) for p in parts if isinstance(p, dict) and p.get("type") == "text"
                )
            if text.strip():
                return text[:4000]
    raise InvalidRequest("A 'rag' call needs a user message with text to search for.", "messages")


def _bounded(hits: tuple[Hit, ...]) -> list[Hit]:
    kept: list[Hit] = []
    size = 0
    for h in hits:
        size += len(h.text) + len(h.title) + 64
        if size > MAX_CONTEXT_CHARS and kept:
            break
        kept.append(h)
    return kept


def _sources(hits: list[Hit]) -> str:
    return "\n\n".join(f"[{n}] {h.title or h.document_id} ({h.document_id})\n{h.text}" for n, h in enumerate(hits, 1))


def _citation(n: int, h: Hit) -> dict[str, Any]:
    return {
        "n": n,
        "document_id": h.document_id,
        "title": h.title,
        "version": h.version,
        "source": h.source,
        "chunk": {"id": h.chunk_id, "ordinal": h.ordinal, "heading_path": list(h.heading_path), "text": h.text},
        "score": h.scores.get("final", h.scores["fused"]),  # reranked: the blended score the order follows
    }


def _span_name(collection: str, hits: list[Hit]) -> str:
    """What `keel traces show` prints of the retrieval: the collection and the documents cited, bounded."""
    docs = ", ".join(dict.fromkeys(h.document_id for h in hits))
    name = f"rag {collection}: {len(hits)} chunk(s) from {docs}" if hits else f"rag {collection}: no match"
    return name if len(name) <= 200 else name[:199] + "…"


def _span_attributes(
    q: SearchQuery, result: SearchResult, hits: list[Hit], template: str, groups: tuple[str, ...]
) -> dict[str, Any]:
    return {
        "collection": q.collection,
        "query": q.text[:500],
        "build": result.build,
        "model": result.model,
        "mode": result.mode,
        "fusion": result.fusion,
        "half_life_days": q.half_life_days,
        "template": template,
        "caller": {"user": q.user, "groups": list(groups)},
        "candidates": dict(result.candidates),
        "searched": result.searched,
        "ms": dict(result.ms),
        "rerank": dict(result.rerank) if result.rerank is not None else None,
        "hits": [
            {"n": n, "document_id": h.document_id, "chunk": h.ordinal, "scores": dict(h.scores), "why": h.why}
            for n, h in enumerate(hits, 1)
        ],
    }
