"""RAG indexes: builds (one per collection and embedding model version), the documents they cite and
filter on, their chunks with vectors, and the candidate queries of hybrid search.

A build is `shadow` while it fills, `active` while it serves (at most one per collection), then
`retired`; `rag_activate` swaps the two in one transaction, so every search sees the old or the new
build, never a mix. A retired (or failed) build is dropped a grace after it ended (`rag_ended_builds`,
`rag_drop_build`), so searches that listed it before the swap still find it. Documents are per collection, shared by its builds; chunks are per build and
carry the document version they were cut from, so a chunk of an older version never matches.

The access filter is part of every candidate query (`Access`): the tenant, then the document's
access list (principals `*` for the whole tenant, `u:<user>`, `g:<group>`) against the caller's,
so a query never returns what it must then throw away. Synchronous and thread-safe like every SQL
store (decision 0001): keel.rag calls it off the event loop.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

BuildState = Literal["shadow", "active", "retired", "failed"]
FilterOp = Literal["eq", "ne", "in", "nin", "gt", "gte", "lt", "lte", "exists"]


class BuildsChanged(RuntimeError):
    """A write for "every build" met another set of active and shadow builds than it embedded for."""


_WORD = re.compile(r"[^\W_]+")
_MAX_TERMS = 32
_STOPWORDS = frozenset(
    [
        "a",
        "an",
        "the",
        "and",
        "or",
        "but",
        "if",
        "of",
        "in",
        "on",
        "at",
        "to",
        "from",
        "by",
        "for",
        "with",
        "as",
        "is",
        "are",
        "was",
        "were",
        "be",
        "been",
        "being",
        "this",
        "that",
        "these",
        "those",
        "it",
        "its",
        "do",
        "does",
        "did",
        "have",
        "has",
        "had",
        "what",
        "which",
        "who",
        "whom",
        "when",
        "where",
        "why",
        "how",
        "there",
        "here",
        "than",
        "so",
        "into",
        "about",
        "can",
        "will",
        "i",
        "me",
        "my",
        "you",
        "your",
        "we",
        "our",
        "they",
        "them",
        "their",
        "he",
        "she",
        "his",
        "her",
        "not",
        "no",
    ]
)


def query_terms(text: str) -> list[str]:
    """The words of a query that full text looks for: lower-cased, no stopwords, each once, at most 32."""
    seen: dict[str, None] = {}
    for word in _WORD.findall(text.lower()):
        if word not in _STOPWORDS and len(word) < 64:
            seen.setdefault(word, None)
    terms = list(seen)[:_MAX_TERMS]
    return terms or [w for w in dict.fromkeys(_WORD.findall(text.lower())) if len(w) < 64][:_MAX_TERMS]


@dataclass(frozen=True, slots=True)
class BuildRow:
    id: str
    tenant: str
    collection: str
    model: str  # the embedding model's id with its version (e.g. all-MiniLM-L6-v2@53aa51172d14)
    spec: str  # the IndexSpec as canonical JSON: model as asked for, and chunking
    state: BuildState
    created_at: float
    dim: int | None = None  # set by the first vectors written
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Access:
    """Who searches: a tenant, and within it a user and groups. `everything` (admin) skips the access
    list but never the tenant."""

    tenant: str
    user: str | None = None
    groups: tuple[str, ...] = ()
    everything: bool = False

    def principals(self) -> list[str]:
        names = ["*"]
        if self.user:
            names.append("u:" + self.user)
        names.extend("g:" + g for g in self.groups)
        return names


@dataclass(frozen=True, slots=True)
class Filter:
    """One condition on a document: a metadata key (or `updated_at`, `source`, `document_id`)."""

    key: str
    op: FilterOp
    value: object


@dataclass(frozen=True, slots=True)
class DocRow:
    tenant: str
    collection: str
    document_id: str
    version: int
    title: str
    metadata: Mapping[str, object]
    users: tuple[str, ...]
    groups: tuple[str, ...]
    valid_until: float | None
    updated_at: float
    source: str


@dataclass(frozen=True, slots=True)
class ChunkRow:
    ordinal: int
    text: str
    heading_path: tuple[str, ...]
    content_hash: str
    tokens: int
    embedding: bytes  # float32, unit length


@dataclass(frozen=True, slots=True)
class ChunkView:
    """A chunk as search returns it: its text and the document it cites."""

    id: int
    build: str
    ordinal: int
    text: str
    heading_path: tuple[str, ...]
    doc: DocRow


@dataclass(frozen=True, slots=True)
class VectorRows:
    """A build's chunk vectors with id > some id, in id order: what an in-process index loads."""

    ids: Sequence[int]
    docs: Sequence[int]  # the document's row id
    versions: Sequence[int]
    embeddings: Sequence[bytes]
    texts: Sequence[str] = ()  # the chunks' texts, for full text in process (empty: not read)


@dataclass(frozen=True, slots=True)
class Candidates:
    """Ranked chunk ids with their scores (higher is better), best first."""

    ids: Sequence[int]
    scores: Sequence[float]


class RagIndexStore(Protocol):
    def rag_builds(self, tenant: str, collection: str | None = None) -> list[BuildRow]: ...

    def rag_add_build(self, build: BuildRow) -> BuildRow:
        """Insert a build; an `active` one only when the collection has none (else that one is returned)."""
        ...

    def rag_set_state(self, build: str, state: BuildState, error: str | None = None) -> None: ...

    def rag_activate(self, tenant: str, collection: str, build: str) -> None:
        """Make `build` (a shadow of this collection) the active one and retire the old, in one transaction."""
        ...

    def rag_ended_builds(self, before: float, limit: int = 100) -> list[BuildRow]:
        """Retired and failed builds of every tenant that ended (were retired or failed) before `before`,
        the oldest first: what `rag_drop_build` is for."""
        ...

    def rag_prepare(self, build: str) -> None:
        """Before a shadow is activated: whatever the database needs to search it fast (pgvector: the
        build's HNSW index, made only now so that filling a shadow inserts no vector into one)."""
        ...

    def rag_drop_build(self, build: str) -> int:
        """Delete a retired or failed build: its chunks (a page a transaction), its vectors and its row;
        the chunks removed. 0 when there is no such build; ValueError when it is shadow or active."""
        ...

    def rag_write(self, doc: DocRow, builds: Mapping[str, Sequence[ChunkRow]], *, every: bool = False) -> int:
        """Record `doc` and replace its chunks in each build by the given ones, atomically; the chunks written.
        Nothing changes (0) when the document already has this version and chunks in every build.
        `every`: the builds must be exactly the collection's active and shadow ones at commit, else
        `BuildsChanged` (a shadow opened or a swap happened meanwhile: embed for the new set and retry)."""
        ...

    def rag_copy(self, build: str, docs: Sequence[tuple[int, int, Sequence[ChunkRow]]]) -> int:
        """A re-index writes documents' chunks into `build`, (document row, version, chunks) each, in one
        transaction: each only while it is still at its version and the build has none of its chunks (a
        concurrent write won). The chunks written."""
        ...

    def rag_remove(self, tenant: str, collection: str, document_id: str) -> int:
        """Forget a document and its chunks in every build; the chunks removed."""
        ...

    def rag_purge(self, tenant: str, collection: str | None = None) -> int:
        """Delete builds, documents and chunks of a tenant (or one collection); the chunks removed."""
        ...

    def rag_source_chunks(self, build: str, after: int, limit: int) -> list[tuple[int, int, str, ChunkRow]]:
        """(doc row id, version, title, chunk) of the next `limit` documents of `build` whose row id > after,
        every chunk of each, in (document, ordinal) order: what a re-index reads."""
        ...

    def rag_count(self, build: str) -> int: ...

    def rag_count_documents(self, build: str) -> int:
        """The documents with chunks in `build`."""
        ...

    def rag_vectors(self, build: str, after: int) -> VectorRows: ...

    def rag_allowed(
        self, tenant: str, collection: str, access: Access, filters: Sequence[Filter], now: float | None
    ) -> list[tuple[int, int]]:
        """(doc row id, version) of every document the caller may see that passes the filters and is valid at
        `now` (None: expired ones too; so for every candidate query's `now`)."""
        ...

    def rag_lexical(
        self,
        build: str,
        collection: str,
        text: str,
        access: Access,
        filters: Sequence[Filter],
        now: float | None,
        limit: int,
    ) -> Candidates:
        """Full-text candidates of `build` by `ts_rank` in the database (PostgreSQL), access and filters inside.
        Called only where `rag_searches_vectors` is true; SQLite keeps no full-text table (migration 0026)
        and raises NotImplementedError: BM25 runs in process there (keel.rag.index_terms)."""
        ...

    def rag_vector_search(
        self,
        build: str,
        collection: str,
        vector: bytes,
        access: Access,
        filters: Sequence[Filter],
        now: float | None,
        limit: int,
    ) -> Candidates | None:
        """Nearest chunks by cosine similarity inside the database (pgvector), access and filters inside;
        None when this backend searches vectors in process (`rag_vectors`)."""
        ...

    def rag_searches_vectors(self, dim: int) -> bool:
        """Does this backend search vectors of `dim` (and full text) in the database (pgvector)? Else the
        index searches both in process over `rag_vectors` rows (keel.rag.index_vectors, index_terms)."""
        ...

    def rag_embeddings(self, ids: Sequence[int]) -> VectorRows:
        """The vectors of the given chunks (those that exist), in id order."""
        ...

    def rag_chunks(self, ids: Sequence[int]) -> list[ChunkView]: ...

    def rag_key_groups(self, key_id: str) -> tuple[str, ...]:
        """The groups a virtual key searches as (none when never set)."""
        ...

    def rag_set_key_groups(self, tenant: str, key_id: str, groups: Sequence[str], now: float) -> None: ...


__all__ = [
    "Access",
    "BuildRow",
    "BuildState",
    "BuildsChanged",
    "Candidates",
    "ChunkRow",
    "ChunkView",
    "DocRow",
    "Filter",
    "FilterOp",
    "RagIndexStore",
    "VectorRows",
    "query_terms",
]
