"""`POST /api/rag/collections/{collection}/search`: hybrid search over HTTP, hits with their document,
scores per stage (lexical, vector, fused, rerank) and why each was kept.

Body: `{"query", "top_k"?, "filters"?, "mode"?, "candidates"?, "freshness"?: {"half_life_days"?, "exclude_expired"?}, "rerank"?}`
(freshness fields override the collection's defaults one by one; `rerank`: fields overriding the collection's
reranking, or false; keel.rag.rerank). With a
virtual key the search runs as that key (its tenant, its user, its groups: keel.rag.acl); the body cannot
name anyone else. A person (an operator, or a user holding `rag.search`) names the `tenant` (a user: only their own, the default),
and may name `user` and `groups` to search as them, or `"all": true` for the tenant's every document,
and `build` to search a shadow build.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from keel.api.bounds import Bounds
from keel.api.guard import Guard
from keel.api.openai import JSON_TYPE, read_json
from keel.errors import InvalidRequest, KeelError, NotFound, PermissionDenied
from keel.rag.collections import FreshnessDefaults
from keel.rag.index import Index, NoIndex
from keel.rag.rerank import Reranker
from keel.rag.retrieve import KeyGroups
from keel.rag.search import (
    MAX_CANDIDATES,
    MAX_QUERY_CHARS,
    MAX_TOP_K,
    BadSearch,
    SearchQuery,
    SearchResult,
    parse_filters,
    parse_freshness,
    resolve_freshness,
)
from keel.runtime.components import Runtime
from keel.tenancy.actor import Actor

_FIELDS = {
    "query", "top_k", "filters", "mode", "candidates", "freshness", "tenant", "user", "groups", "all", "build", "rerank",
}  # fmt: skip
_ADMIN_ONLY = ("tenant", "user", "groups", "all", "build")


class RagSearchEdge:
    def __init__(self, runtime: Runtime, guard: Guard) -> None:
        self._rt = runtime
        self._index = runtime.find(Index)  # absent when a runtime is built without keel.rag.builder
        self._groups = runtime.find(KeyGroups)
        self._reranker = runtime.find(Reranker)
        self._defaults = runtime.find(FreshnessDefaults)
        self._guard = guard
        self._bounds = Bounds.of(runtime.config.server)

    def routes(self) -> list[Route]:
        if self._index is None:
            return []
        path = "/api/rag/collections/{collection}/search"  # a read: no audit entry
        return [self._guard.route(path, self.search, ["POST"], "rag.search", audit=False, translate=_translate)]

    async def search(self, request: Request, actor: Actor) -> Response:
        body = await read_json(request, self._bounds)
        if not isinstance(body, dict):
            raise InvalidRequest("The request body must be a JSON object.", None)
        collection = request.path_params["collection"]
        query = await self._query(actor, body, collection)
        assert self._index is not None and self._reranker is not None
        try:
            rerank, who = body.get("rerank"), actor.principal
            result = await self._reranker.search(self._index, query, rerank, "rerank", who, actor.models)
        except NoIndex:
            raise NotFound(f"Collection '{collection}' has no index in tenant '{query.tenant}'.") from None
        return Response(orjson.dumps(result_json(collection, result)), 200, media_type=JSON_TYPE)

    async def _query(self, actor: Actor, body: dict[str, Any], collection: str) -> SearchQuery:
        unknown = sorted(set(body) - _FIELDS)
        if unknown:
            raise InvalidRequest(f"Unknown field '{unknown[0]}'.", unknown[0])
        if "\x00" in collection or len(collection) > 128:
            raise InvalidRequest("The collection name is at most 128 characters, no NUL.", "collection")
        text = body.get("query")
        if not isinstance(text, str) or not text.strip() or len(text) > MAX_QUERY_CHARS:
            raise InvalidRequest(f"'query' must be text of 1..{MAX_QUERY_CHARS} characters.", "query")
        top_k = _int(body, "top_k", 10, MAX_TOP_K)
        candidates = _int(body, "candidates", 100, MAX_CANDIDATES)
        mode = body.get("mode", "hybrid")
        if mode not in ("hybrid", "lexical", "vector"):
            raise InvalidRequest("'mode' must be hybrid, lexical or vector.", "mode")
        filters = parse_filters(body.get("filters"))
        freshness = parse_freshness(body.get("freshness"))
        principal = actor.principal
        if principal is None:
            tenant, user, groups, everything, build = _as_admin(body)
            tenant = actor.tenant_for(tenant, "collections")
        else:
            named = next((f for f in _ADMIN_ONLY if f in body), None)
            if named is not None:
                raise PermissionDenied(f"'{named}' is for people, not keys: a key searches as itself.")
            tenant, user, everything, build = principal.tenant, principal.user, False, None
            assert self._groups is not None
            groups = await self._groups.of(principal.key_id)
        assert self._defaults is not None  # offered with the Index
        half_life, exclude_expired = resolve_freshness(await self._defaults.of(tenant, collection), freshness)
        return SearchQuery(tenant, collection, text, top_k, user, groups, everything, filters, mode, candidates,
                           build=build, half_life_days=half_life, exclude_expired=exclude_expired)  # fmt: skip


def _int(body: dict[str, Any], name: str, default: int, most: int) -> int:
    value = body.get(name, default)
    if type(value) is not int or not 1 <= value <= most:
        raise InvalidRequest(f"'{name}' must be an integer within 1..{most}.", name)
    return value


def _translate(err: Exception) -> KeelError | None:
    return InvalidRequest(str(err), err.param) if isinstance(err, BadSearch) else None


def _as_admin(body: dict[str, Any]) -> tuple[str | None, str | None, tuple[str, ...], bool, str | None]:
    tenant = body.get("tenant")
    if tenant is not None and (not isinstance(tenant, str) or not tenant or len(tenant) > 256):
        raise InvalidRequest("Name the tenant: 'tenant' in the body.", "tenant")
    user = body.get("user")
    if user is not None and (not isinstance(user, str) or len(user) > 256):
        raise InvalidRequest("'user' must be a user id.", "user")
    groups = body.get("groups", [])
    if not isinstance(groups, list) or len(groups) > 64 or not all(isinstance(g, str) and g for g in groups):
        raise InvalidRequest("'groups' must be a list of at most 64 group names.", "groups")
    everything = body.get("all", False)
    if not isinstance(everything, bool):
        raise InvalidRequest("'all' must be true or false.", "all")
    build = body.get("build")
    if build is not None and not isinstance(build, str):
        raise InvalidRequest("'build' must be a build id.", "build")
    return tenant, user, tuple(groups), everything, build


def result_json(collection: str, result: SearchResult) -> dict[str, Any]:
    return {
        "object": "list",
        "collection": collection,
        "build": result.build,
        "model": result.model,
        "mode": result.mode,
        "fusion": result.fusion,
        "candidates": dict(result.candidates),
        "searched": result.searched,
        "timings_ms": dict(result.ms),
        "rerank": dict(result.rerank) if result.rerank is not None else None,
        "data": [
            {
                "document": {
                    "id": h.document_id, "title": h.title, "version": h.version, "source": h.source,
                    "metadata": dict(h.metadata), "updated_at": h.updated_at,
                },
                "chunk": {"id": h.chunk_id, "ordinal": h.ordinal, "heading_path": list(h.heading_path), "text": h.text},
                "scores": dict(h.scores),
                "ranks": dict(h.ranks),
                "why": h.why,
            }
            for h in result.hits
        ],
    }  # fmt: skip
