"""The ingestion side of RAG as a capability: the `Library` (collections, documents) and the `Ingestor`
offered to the edges, its job kinds (`rag.ingest`, `rag.purge`, `rag.rechunk`) and two workers: one
that re-queues documents left without a live job (no document stays queued or half-way silently) and
one that removes tombstones past their retention (their index entries and blobs went at delete time).

Runs after the index builder (keel.rag.builder), whose `Index` it finds with `ctx.get(Index)`.
"""

from __future__ import annotations

import asyncio
import logging
import time

from keel.gateway.capability import Context, Contribution, Worker
from keel.rag.documents import KIND_INGEST, KIND_PURGE, KIND_RECHUNK, Library
from keel.rag.index import Index
from keel.rag.ingest import Ingestor
from keel.store.protocols import BlobStore

log = logging.getLogger("keel.rag")
ORPHANS_EVERY_S = 30.0
TOMBSTONES_EVERY_S = 3600.0
TOMBSTONE_DAYS = 7.0  # a deleted document's row (status `deleted`) is kept this long, then removed
_BATCH = 500


def build(ctx: Context) -> Contribution:
    blobs = ctx.get(BlobStore)  # type: ignore[type-abstract]
    library = Library(ctx.store, blobs, ctx.config.jobs)
    ingestor = Ingestor(library, ctx.get(Index))
    ctx.add(library)
    ctx.add(ingestor)

    async def orphans() -> None:
        touched = await asyncio.to_thread(library.requeue_orphans)
        if touched:
            log.warning("rag: %d document(s) without a live ingestion job, queued again or failed: %s",
                        len(touched), ", ".join(touched[:20]))  # fmt: skip

    async def tombstones() -> None:
        await expire_tombstones(ingestor, time.time() - TOMBSTONE_DAYS * 86400)

    return Contribution(
        workers=[
            Worker("rag-orphans", orphans, every_s=ORPHANS_EVERY_S),
            Worker("rag-tombstones", tombstones, every_s=TOMBSTONES_EVERY_S, first_s=120.0),
        ],
        jobs={KIND_INGEST: ingestor.ingest, KIND_PURGE: ingestor.purge, KIND_RECHUNK: ingestor.rechunk},
    )


async def expire_tombstones(ingestor: Ingestor, before: float) -> int:
    """Tombstones deleted before `before`: out of the index (again: idempotent), blobs and rows gone."""
    library, total = ingestor.library, 0
    while True:
        found = await asyncio.to_thread(library.store.expired_tombstones, before, _BATCH)
        for tenant, collection, doc_id in found:
            await ingestor.index.remove(tenant, collection, doc_id)
            await asyncio.to_thread(library.delete_blobs, tenant, collection, doc_id)
            await asyncio.to_thread(library.store.delete_documents, tenant, collection, [doc_id])
        total += len(found)
        if len(found) < _BATCH:
            return total
