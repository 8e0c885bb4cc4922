"""Collections: a tenant's named sets of documents, each tied to one embedding model and chunking spec.

`collection_in` checks what a caller sends (`POST /api/rag/collections`, `keel rag ingest --create`) and
names the field at fault; the store keeps the row (keel.store.protocols.rag_docs). Creating a collection
that exists with the same spec returns it; with another spec it is refused (a spec changes by re-index).
A collection may state search defaults for freshness (`{half_life_days?, exclude_expired?}`), which each
search request may override field by field (keel.rag.search.resolve_freshness); `FreshnessDefaults` reads them.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from keel.rag.chunk import ChunkingSpec
from keel.rag.index import IndexSpec
from keel.rag.rerank import RerankSpec, parse_spec
from keel.rag.search import BadSearch, Freshness, parse_freshness
from keel.store.protocols import CollectionRow, RagDocStore

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
DEFAULT_MODEL = "local"  # the bundled all-MiniLM-L6-v2 (keel.rag.index_models)
MAX_DESCRIPTION = 2000


class SpecError(ValueError):
    """A collection's fields are wrong: `field` names the one, the message says what it takes."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True, slots=True)
class CollectionIn:
    name: str
    model: str
    chunking: ChunkingSpec
    description: str | None
    rerank: RerankSpec | None = None
    freshness: Freshness | None = None


class FreshnessDefaults:
    """A collection's freshness defaults for search, read from its row (one key lookup, in the caller's
    threads) at each search, so a collection made again with others is served with its own at once."""

    def __init__(self, store: RagDocStore, run: Callable[..., Awaitable[Any]]) -> None:
        self._store = store
        self._run = run

    async def of(self, tenant: str, name: str) -> Freshness | None:
        row: CollectionRow | None = await self._run(self._store.get_collection, tenant, name)
        return None if row is None or row.freshness is None else dict(row.freshness)


def check_name(name: Any, field: str = "name") -> str:
    if not isinstance(name, str) or NAME.fullmatch(name) is None:
        raise SpecError(
            f"'{field}' must be a collection name: 1-64 letters, digits, '.', '_' or '-', starting with a letter"
            " or digit.",
            field,
        )
    return name


def collection_in(body: Mapping[str, Any]) -> CollectionIn:
    """A collection from a request body {name, model?, chunking?, description?, rerank?, freshness?}."""
    unknown = set(body) - {"name", "model", "chunking", "description", "tenant", "rerank", "freshness", "team"}
    if unknown:
        key = sorted(unknown)[0]
        raise SpecError(f"Unknown field '{key}': use name, model, chunking, description, rerank, freshness.", key)
    name = check_name(body.get("name"))
    model = body.get("model", DEFAULT_MODEL)
    if not isinstance(model, str) or not 1 <= len(model) <= 256 or "\x00" in model:
        raise SpecError("'model' must be an embedding model: 'local', 'hash:<dim>' or 'alias:<name>'.", "model")
    try:
        chunking = ChunkingSpec.from_json(body.get("chunking"))
    except ValueError as exc:
        field = str(exc).split(":", 1)[0]
        raise SpecError(str(exc), field) from None
    description = body.get("description")
    if description is not None and (
        not isinstance(description, str) or len(description) > MAX_DESCRIPTION or "\x00" in description
    ):  # NUL: PostgreSQL refuses it in text
        raise SpecError(
            f"'description' must be a string of at most {MAX_DESCRIPTION} characters, without NUL.", "description"
        )
    try:
        freshness = parse_freshness(body.get("freshness"))
    except BadSearch as exc:
        raise SpecError(str(exc), exc.param) from None
    return CollectionIn(name, model, chunking, description, rerank_in(body.get("rerank")), freshness)


def rerank_in(raw: Any, param: str = "rerank") -> RerankSpec | None:
    """A collection's reranking setting (keel.rag.rerank) from a body; None (or absent): none."""
    if raw is None:
        return None
    try:
        return parse_spec(raw, param)
    except BadSearch as err:
        raise SpecError(str(err), err.param) from None


def new_row(tenant: str, c: CollectionIn, now: float | None = None, team: str | None = None) -> CollectionRow:
    at = time.time() if now is None else now
    rerank = c.rerank.json() if c.rerank is not None else None
    return CollectionRow(tenant, c.name, c.model, c.chunking.json(), c.description, at, at, rerank, c.freshness, team)


def same_spec(row: CollectionRow, c: CollectionIn) -> bool:
    return row.model == c.model and ChunkingSpec.from_json(row.chunking) == c.chunking


def index_spec(row: CollectionRow) -> IndexSpec:
    return IndexSpec(row.model, dict(row.chunking))


def collection_view(row: CollectionRow, counts: Mapping[str, int] | None = None) -> dict[str, Any]:
    view: dict[str, Any] = {
        "object": "rag.collection",
        "tenant": row.tenant,
        "name": row.name,
        "model": row.model,
        "chunking": dict(row.chunking),
        "description": row.description,
        "created_at": row.created_at,
        "updated_at": row.updated_at,
        "rerank": dict(row.rerank) if row.rerank is not None else None,
        "freshness": None if row.freshness is None else dict(row.freshness),
        "team": row.team,
    }
    if counts is not None:
        view["documents"] = dict(counts)
    return view
