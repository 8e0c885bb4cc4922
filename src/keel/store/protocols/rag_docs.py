"""RAG collections and documents: what a tenant put in, its versions and its ingestion status.

A collection (per tenant) names its embedding model and chunking spec. A document (per collection,
keyed by the caller's id) is one row holding its latest version: content hash, title, metadata, access
list, status through ingestion (`queued → parsing → chunking → embedding → indexed`, or `failed` with
the stage and reason) and which version the index serves (`indexed_version`: an older one keeps serving
while a newer one is ingested or after it failed). Putting content whose hash, title, metadata and access
list are all unchanged is a no-op; anything else is the next version. Deleting leaves a tombstone
(`deleted`) that the purge job empties and retention removes.

Synchronous and thread-safe like every SQL store (decision 0001); keel.rag calls it off the event loop.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

DocStatus = Literal["queued", "parsing", "chunking", "embedding", "indexed", "failed", "deleted"]
DOC_STATUSES: tuple[DocStatus, ...] = ("queued", "parsing", "chunking", "embedding", "indexed", "failed", "deleted")
WORKING: frozenset[str] = frozenset({"queued", "parsing", "chunking", "embedding"})


@dataclass(frozen=True, slots=True)
class CollectionRow:
    tenant: str
    name: str
    model: str  # the embedding model id, or "alias:<name>" through the gateway
    chunking: Mapping[str, Any]  # {max_tokens, overlap, strategy}
    description: str | None
    created_at: float
    updated_at: float
    rerank: Mapping[str, Any] | None = None  # {model, top_n, weight, timeout_s} (keel.rag.rerank); None: off
    freshness: Mapping[str, Any] | None = None  # search defaults {half_life_days?, exclude_expired?}; None: none
    team: str | None = None  # the tenant's team it belongs to; None: the whole tenant's (decision 0064)


@dataclass(frozen=True, slots=True)
class DocumentIn:
    """What a caller puts: the content is in the blob store already (under `blob_key`)."""

    tenant: str
    collection: str
    id: str
    title: str
    source: str  # path, URL or the caller's id
    content_hash: str  # sha256 of the raw bytes
    content_type: str  # txt | md | html | pdf | docx | jsonl | csv
    bytes: int
    metadata: Mapping[str, Any] = field(default_factory=dict)
    users: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()  # both empty: the whole tenant may read it
    valid_until: float | None = None


@dataclass(frozen=True, slots=True)
class DocumentRow:
    tenant: str
    collection: str
    id: str
    version: int
    title: str
    source: str
    content_hash: str
    content_type: str
    bytes: int
    metadata: Mapping[str, Any]
    users: tuple[str, ...]
    groups: tuple[str, ...]
    valid_until: float | None
    status: DocStatus
    stage: str | None  # failed: the stage it failed in
    error: str | None  # failed: why; while working: the last retried error
    progress_done: int | None  # chunks embedded so far (of progress_total)
    progress_total: int | None
    chunks: int | None  # chunks the indexed version has
    indexed_version: int | None  # the version the index serves (None: none yet)
    job_id: str | None  # the ingestion (or purge) job of the current version
    created_at: float
    updated_at: float
    deleted_at: float | None = None


PutResult = Literal["created", "updated", "unchanged"]


@dataclass(frozen=True, slots=True)
class DocUpdate:
    """A status change of one version (fields left None are kept)."""

    status: DocStatus
    stage: str | None = None
    error: str | None = None
    progress_done: int | None = None
    progress_total: int | None = None
    chunks: int | None = None
    indexed: bool = False  # this version is now what the index serves
    clear_error: bool = False


class RagDocStore(Protocol):
    def create_collection(self, row: CollectionRow) -> tuple[CollectionRow, bool]:
        """Insert the collection; when (tenant, name) exists: that row, unchanged, and False."""
        ...

    def get_collection(self, tenant: str, name: str) -> CollectionRow | None: ...

    def list_collections(self, tenant: str | None) -> list[CollectionRow]:
        """Of one tenant (None: every tenant's), by tenant then name."""
        ...

    def set_collection_spec(
        self, tenant: str, name: str, model: str, chunking: Mapping[str, Any], now: float
    ) -> CollectionRow | None:
        """A new spec, once its index is rebuilt (re-index); None when there is no such collection."""
        ...

    def set_collection_rerank(
        self, tenant: str, name: str, rerank: Mapping[str, Any] | None, now: float
    ) -> CollectionRow | None:
        """The collection's reranking setting (None: off); None when there is no such collection."""
        ...

    def delete_collection(self, tenant: str, name: str) -> int:
        """The collection and its document rows; how many rows went."""
        ...

    def set_collection_team(self, tenant: str, name: str, team: str | None) -> CollectionRow | None:
        """Give the collection to `team` (None: the whole tenant); None when there is no such collection."""
        ...

    def put_document(self, doc: DocumentIn, blob_key: str, now: float) -> tuple[DocumentRow, PutResult]:
        """Store `doc` as the next version (queued), or find it unchanged (same hash, title, metadata,
        access list and validity, not deleted). A tombstoned document comes back as its next version.
        `blob_key` is where the version's raw bytes are."""
        ...

    def set_document_job(self, tenant: str, collection: str, id: str, version: int, job_id: str) -> bool: ...

    def update_document(
        self, tenant: str, collection: str, id: str, version: int, update: DocUpdate, now: float
    ) -> bool:
        """Apply `update` when the document is still at `version` and not deleted; False otherwise
        (a newer version or a delete superseded this one)."""
        ...

    def get_document(self, tenant: str, collection: str, id: str) -> DocumentRow | None: ...

    def list_documents(
        self,
        tenant: str,
        collection: str,
        *,
        status: str | None = None,
        after: str | None = None,
        limit: int = 100,
    ) -> list[DocumentRow]:
        """By id; `after`: the page after that id. Tombstones included (status `deleted`)."""
        ...

    def document_hashes(self, tenant: str, collection: str) -> dict[str, tuple[str, int, bool]]:
        """Every document's id → (content hash, version, tombstoned): what a sync compares against."""
        ...

    def tombstone_document(self, tenant: str, collection: str, id: str, now: float) -> DocumentRow | None:
        """Mark it deleted (status `deleted`, `deleted_at`); None when there is no such document. A
        tombstone stays a tombstone (its `deleted_at` is kept)."""
        ...

    def blob_keys(self, tenant: str, collection: str, id: str) -> list[str]:
        """Blob keys recorded for the document's versions (raw and parsed)."""
        ...

    def add_blob_key(self, tenant: str, collection: str, id: str, version: int, key: str) -> None: ...

    def forget_blob_keys(self, tenant: str, collection: str, id: str, keys: Sequence[str]) -> None: ...

    def delete_documents(self, tenant: str, collection: str, ids: Sequence[str]) -> int:
        """Delete the rows (tombstones after their purge); how many went."""
        ...

    def working_documents(self, before: float, limit: int) -> list[DocumentRow]:
        """Up to `limit` documents still being ingested (queued … embedding) not updated since `before`,
        oldest first: the sweep checks their jobs."""
        ...

    def expired_tombstones(self, before: float, limit: int) -> list[tuple[str, str, str]]:
        """(tenant, collection, id) of up to `limit` documents tombstoned before `before`."""
        ...

    def delete_rag_tenant(self, tenant: str) -> dict[str, int]:
        """Every collection, document and blob-key row of `tenant`; counts per kind."""
        ...


__all__ = [
    "DOC_STATUSES",
    "WORKING",
    "CollectionRow",
    "DocStatus",
    "DocUpdate",
    "DocumentIn",
    "DocumentRow",
    "PutResult",
    "RagDocStore",
]
