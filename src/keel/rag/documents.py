"""Documents: put (a new version, or nothing when unchanged), delete (tombstone, then a purge job), views.

`Library` is the one place the API and the CLI change documents: it checks fields (naming the one at
fault), writes the raw bytes to the blob store under a key derived from the content hash (so putting the
same bytes twice writes nothing new and a crash between blob and row leaves no row pointing nowhere),
writes the row as the next version in one transaction, and enqueues the version's ingestion job with an
idempotency key of (tenant, collection, id, version): a retried put never queues a version twice. A
document left without a job (a crash between row and job) is found by `Library.requeue_orphans`, which
the ingest builder runs as a worker, so no document stays `queued` silently.

Blocking (store and blob calls): the API runs it in a thread.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from keel.config import JobsConfig
from keel.errors import InvalidRequest, NotFound, RequestError
from keel.rag.collections import CollectionIn, new_row, same_spec
from keel.rag.parse import KINDS, kind_of
from keel.rag.rerank import RerankSpec
from keel.store.protocols import (
    FINAL_STATES,
    BlobStore,
    CollectionRow,
    DocumentIn,
    DocumentRow,
    DocUpdate,
    Job,
    JobSpec,
    PutResult,
    Store,
)

KIND_INGEST = "rag.ingest"
KIND_PURGE = "rag.purge"
KIND_RECHUNK = "rag.rechunk"
MAX_ID = 512
MAX_TITLE = 1000
MAX_SOURCE = 2048
MAX_METADATA_BYTES = 16 * 1024
MAX_PRINCIPALS = 1000  # users, groups per document
ORPHAN_AFTER_S = 60.0  # a working document without a live job this long is queued again


class Conflict(RequestError):
    status = 409
    code = "conflict"


@dataclass(frozen=True, slots=True)
class Fields:
    """What a caller says about a document beside its bytes."""

    title: str | None = None
    source: str | None = None
    kind: str | None = None  # the parser; default: by filename suffix or media type
    metadata: Mapping[str, Any] | None = None
    users: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    valid_until: float | None = None


def check_id(value: Any, field: str = "id") -> str:
    if not isinstance(value, str) or not 1 <= len(value) <= MAX_ID or any(ord(c) < 32 for c in value):
        raise InvalidRequest(f"'{field}' must be 1-{MAX_ID} characters with no control characters.", field)
    return value


def fields_from(body: Mapping[str, Any]) -> Fields:
    """Fields from a JSON body (or a multipart form's `metadata`/`users`/… parts, decoded)."""
    title = _text(body.get("title"), "title", MAX_TITLE)
    source = _text(body.get("source"), "source", MAX_SOURCE)
    kind = body.get("kind")
    if kind is not None and kind not in KINDS:
        raise InvalidRequest(f"'kind' must be one of {', '.join(KINDS)}.", "kind")
    metadata = body.get("metadata")
    if metadata is not None:
        if not isinstance(metadata, dict):
            raise InvalidRequest("'metadata' must be a JSON object.", "metadata")
        try:
            size = len(orjson.dumps(metadata))
        except TypeError:
            raise InvalidRequest("'metadata' must be JSON.", "metadata") from None
        if size > MAX_METADATA_BYTES:
            raise InvalidRequest(f"'metadata' is larger than {MAX_METADATA_BYTES} bytes as JSON.", "metadata")
    valid = body.get("valid_until")
    if valid is not None and (
        not isinstance(valid, int | float) or isinstance(valid, bool) or not math.isfinite(valid) or valid < 0
    ):
        raise InvalidRequest("'valid_until' must be a Unix time in seconds.", "valid_until")
    return Fields(
        title, source, kind, metadata, _names(body.get("users"), "users"), _names(body.get("groups"), "groups"),
        None if valid is None else float(valid),
    )  # fmt: skip


def _text(value: Any, field: str, most: int) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > most or "\x00" in value:
        raise InvalidRequest(f"'{field}' must be a string of at most {most} characters.", field)
    return value


def _names(value: Any, field: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if (
        not isinstance(value, list)
        or len(value) > MAX_PRINCIPALS
        or not all(isinstance(v, str) and 1 <= len(v) <= 256 and "\x00" not in v for v in value)
    ):
        raise InvalidRequest(f"'{field}' must be a list of at most {MAX_PRINCIPALS} names (1-256 characters).", field)
    return tuple(sorted(set(value)))


def _segment(*parts: str) -> str:
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:32]


def tenant_prefix(tenant: str) -> str:
    return f"rag/{_segment(tenant)}/"


def raw_key(tenant: str, collection: str, doc_id: str, content_hash: str, kind: str) -> str:
    return f"{tenant_prefix(tenant)}{_segment(tenant, collection, doc_id)}/{content_hash[:32]}.{kind}"


def parsed_key(raw: str) -> str:
    return raw + ".parsed.json"


class Library:
    def __init__(
        self, store: Store, blobs: BlobStore, jobs: JobsConfig, clock: Callable[[], float] = time.time
    ) -> None:
        self.store = store
        self.blobs = blobs
        self.jobs = jobs
        self.clock = clock

    # ---- collections -----------------------------------------------------------------------------

    def create_collection(self, tenant: str, c: CollectionIn, team: str | None = None) -> tuple[CollectionRow, bool]:
        """Make the collection (`team`'s; None: the tenant's), or find the same one made before."""
        row, created = self.store.create_collection(new_row(tenant, c, self.clock(), team))
        if not created and not same_spec(row, c):
            raise Conflict(
                f"Collection '{c.name}' exists with model '{row.model}' and chunking {dict(row.chunking)}:"
                " change them by re-indexing it, not by creating it again."
            )
        asked = c.rerank.json() if c.rerank is not None else None
        if not created and asked is not None and dict(row.rerank or {}) != asked:
            raise Conflict(
                f"Collection '{c.name}' exists with rerank {row.rerank}: set it with"
                f" PUT /api/rag/collections/{c.name}/rerank."
            )
        if not created and dict(row.freshness or {}) != dict(c.freshness or {}):
            raise Conflict(
                f"Collection '{c.name}' exists with freshness {dict(row.freshness or {})}: delete it to make it"
                " with other defaults, or override them per search request."
            )
        return row, created

    def set_rerank(self, tenant: str, name: str, rerank: RerankSpec | None) -> CollectionRow:
        row = self.store.set_collection_rerank(tenant, name, rerank.json() if rerank else None, self.clock())
        if row is None:
            raise NotFound(f"No collection '{name}'.")
        return row

    def collection(self, tenant: str, name: str) -> CollectionRow:
        row = self.store.get_collection(tenant, name)
        if row is None:
            raise NotFound(f"No collection '{name}'.")
        return row

    def counts(self, tenant: str, name: str) -> dict[str, int]:
        out: dict[str, int] = {}
        after = None
        while True:
            page = self.store.list_documents(tenant, name, after=after, limit=1000)
            for d in page:
                out[d.status] = out.get(d.status, 0) + 1
            if len(page) < 1000:
                return out
            after = page[-1].id

    # ---- documents -------------------------------------------------------------------------------

    def put(
        self, tenant: str, collection: str, doc_id: str, data: bytes, fields: Fields, *, filename: str | None = None,
        media_type: str | None = None,
    ) -> tuple[DocumentRow, PutResult]:  # fmt: skip
        """Store the bytes and the row; enqueue the new version's ingestion (unless it is unchanged)."""
        self.collection(tenant, collection)
        kind = fields.kind or kind_of(filename or doc_id, media_type)
        if kind is None:
            raise InvalidRequest(
                f"Cannot tell the document's kind from '{filename or doc_id}': name a file with a known suffix or"
                f" give 'kind' ({', '.join(KINDS)}).",
                "kind",
            )
        content_hash = hashlib.sha256(data).hexdigest()
        doc = DocumentIn(
            tenant, collection, doc_id, fields.title or _title(filename or doc_id), fields.source or doc_id,
            content_hash, kind, len(data), dict(fields.metadata or {}), fields.users, fields.groups,
            fields.valid_until,
        )  # fmt: skip
        key = raw_key(tenant, collection, doc_id, content_hash, kind)
        known = self.store.get_document(tenant, collection, doc_id)
        if known is None or known.content_hash != content_hash or known.content_type != kind:
            self.blobs.put(key, data)
        row, result = self.store.put_document(doc, key, self.clock())
        if result != "unchanged":
            self.enqueue_ingest(row)
        return row, result

    def enqueue_ingest(self, row: DocumentRow, *, again: str = "") -> Job:
        payload = {"tenant": row.tenant, "collection": row.collection, "id": row.id, "version": row.version}
        key = f"rag.ingest:{_segment(row.collection, row.id)}:v{row.version}{again}"
        job = self.enqueue(KIND_INGEST, payload, row.tenant, key)
        self.store.set_document_job(row.tenant, row.collection, row.id, row.version, job.id)
        return job

    def delete(self, tenant: str, collection: str, doc_id: str) -> DocumentRow:
        """Tombstone the document and enqueue its purge (index entries and blobs)."""
        row = self.store.tombstone_document(tenant, collection, doc_id, self.clock())
        if row is None:
            raise NotFound(f"No document '{doc_id}' in collection '{collection}'.")
        payload = {"tenant": tenant, "collection": collection, "id": doc_id}
        self.enqueue(KIND_PURGE, payload, tenant, f"rag.purge:{_segment(collection, doc_id)}:{row.deleted_at!r}")
        return row

    def enqueue(self, kind: str, payload: Any, tenant: str, key: str) -> Job:
        c = self.jobs
        per_kind = c.kinds.get(kind)
        spec = JobSpec(
            kind,
            payload,
            tenant=tenant,
            max_attempts=(per_kind and per_kind.max_attempts) or c.max_attempts,
            timeout_s=(per_kind and per_kind.timeout_s) or c.timeout_s,
            idempotency_key=key,
        )
        return self.store.enqueue_jobs([spec], self.clock())[0]

    def requeue_orphans(self, limit: int = 500) -> list[str]:
        """Working documents whose job is missing or finished while they still work: queued again (a job
        that died without marking its document marks it failed instead). Returns the ids touched."""
        now = self.clock()
        stale = self.store.working_documents(now - ORPHAN_AFTER_S, limit)
        return [d.id for d in stale if self._revive(d, now)]

    def _revive(self, d: DocumentRow, now: float) -> bool:
        job = self.store.get_job(d.job_id) if d.job_id else None
        if job is not None and job.state not in FINAL_STATES:
            return False
        if job is not None and job.state == "dead":
            reason = f"the ingestion job died: {job.error or 'no reason recorded'}"
            update = DocUpdate("failed", stage=d.status, error=reason)
            return self.store.update_document(d.tenant, d.collection, d.id, d.version, update, now)
        self.enqueue_ingest(d, again=f":{int(now)}")
        return True

    def purge_rows(self, tenant: str) -> dict[str, int]:
        """A whole tenant's collections, documents and their blobs (the index is purged by the caller)."""
        keys = [k for k, _ in self.blobs.list(tenant_prefix(tenant))]
        gone = self.blobs.delete(keys) if keys else 0
        return {**self.store.delete_rag_tenant(tenant), "rag_blobs": gone}

    def delete_blobs(self, tenant: str, collection: str, doc_id: str, keep: Sequence[str] = ()) -> int:
        keys = [k for k in self.store.blob_keys(tenant, collection, doc_id) if k not in keep]
        parsed = [parsed_key(k) for k in keys if not k.endswith(".parsed.json")]
        self.blobs.delete([*keys, *parsed])
        self.store.forget_blob_keys(tenant, collection, doc_id, keys)
        return len(keys)


def _title(name: str) -> str:
    base = name.rstrip("/").rsplit("/", 1)[-1]
    return base.rsplit(".", 1)[0] if "." in base else base


def document_view(d: DocumentRow, job: Job | None = None, stuck_after: int = 2) -> dict[str, Any]:
    view: dict[str, Any] = {
        "object": "rag.document",
        "id": d.id,
        "collection": d.collection,
        "version": d.version,
        "title": d.title,
        "source": d.source,
        "kind": d.content_type,
        "bytes": d.bytes,
        "content_hash": d.content_hash,
        "metadata": dict(d.metadata),
        "users": list(d.users),
        "groups": list(d.groups),
        "valid_until": d.valid_until,
        "status": d.status,
        "failed": None if d.status != "failed" else {"stage": d.stage, "reason": d.error},
        "last_error": d.error if d.status != "failed" else None,
        "progress": {"done": d.progress_done, "total": d.progress_total},
        "chunks": d.chunks,
        "indexed_version": d.indexed_version,
        "job_id": d.job_id,
        "created_at": d.created_at,
        "updated_at": d.updated_at,
        "deleted_at": d.deleted_at,
    }
    if job is not None:
        view["job"] = {"state": job.state, "attempts": job.attempts, "stuck": job.stuck(stuck_after)}
    return view
