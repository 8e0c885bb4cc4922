"""Ingestion as jobs: `rag.ingest` (one document version: parse → chunk → embed and index), `rag.purge`
(a tombstoned document out of the index and the blob store) and `rag.rechunk` (a collection's stored
parsed text re-chunked into a shadow build, then swapped in: the re-index for a chunking change).

Once and only once: a version's chunks reach the index in one `Index.replace`, atomic and idempotent per
(document, version), so an attempt killed anywhere (kill -9 included) leaves either the old version or
the new one, never part of one nor two copies; the next attempt redoes the version from its bytes. A
file that cannot be parsed, or yields no text, fails its document (status `failed`, with the stage and
the reason) and its job (dead, not retried); the index keeps serving the previous version, if any. Any
other failure is retried by the queue with backoff; the last attempt's failure fails the document.

Ordering: a job for a version that is no longer the document's (a newer put, a delete) does nothing.
One that finishes after its document changed under it checks again: a deleted document is removed from
the index, a newer version is queued again, so the latest always wins.

Pipelining: several ingestion jobs run at once (`jobs.kinds.rag.ingest.concurrency`); parsing and
chunking run in threads, embedding in the index model's own thread, so one document's parse overlaps
another's embedding and the embedder, the bottleneck, is kept busy.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import orjson

from keel.jobs.errors import Permanent
from keel.rag.chunk import ChunkingSpec, chunk
from keel.rag.collections import index_spec
from keel.rag.documents import Library, parsed_key
from keel.rag.index import ChunkIn, DocumentRef, Index, IndexSpec
from keel.rag.parse import Parsed, ParseError, parse
from keel.store.protocols import DocumentRow, DocUpdate, Job, JobContext

log = logging.getLogger("keel.rag")
PROGRESS_EVERY_S = 1.0


class Ingestor:
    def __init__(self, library: Library, index: Index) -> None:
        self.library = library
        self.index = index
        self.store = library.store

    async def _doc(self, payload: Any) -> DocumentRow | None:
        return await asyncio.to_thread(self.store.get_document, payload["tenant"], payload["collection"], payload["id"])

    async def _update(self, d: DocumentRow, update: DocUpdate) -> bool:
        s, now = self.store, self.library.clock()
        return await asyncio.to_thread(s.update_document, d.tenant, d.collection, d.id, d.version, update, now)

    # ---- rag.ingest --------------------------------------------------------------------------------

    async def ingest(self, job: Job, ctx: JobContext) -> dict[str, Any]:
        p = job.payload
        d = await self._doc(p)
        if d is None or d.deleted_at is not None or d.version != p["version"]:
            return {"skipped": "superseded"}
        try:
            chunks = await self._prepare(d, ctx)
            n = await self._index(d, chunks, ctx)
        except Permanent:
            raise
        except Exception as exc:
            if job.attempts >= job.max_attempts:
                stage = (await self._doc(p) or d).status
                await self._update(d, DocUpdate("failed", stage=stage, error=_describe(exc)))
            else:
                await self._update(d, DocUpdate((await self._doc(p) or d).status, error=f"retrying: {_describe(exc)}"))
            raise
        await self._update(d, DocUpdate("indexed", chunks=n, progress_done=n, progress_total=n, indexed=True,
                                        clear_error=True))  # fmt: skip
        await self._settle(d)
        return {"version": d.version, "chunks": n}

    async def _prepare(self, d: DocumentRow, ctx: JobContext) -> list[ChunkIn]:
        """Parse (or reuse the parse an earlier attempt stored) and chunk; ParseError fails the document."""
        await self._update(d, DocUpdate("parsing"))
        parsed = await asyncio.to_thread(self._parsed, d)
        if isinstance(parsed, str):
            await self._update(d, DocUpdate("failed", stage="parsing", error=parsed))
            raise Permanent(f"document '{d.id}' v{d.version}: {parsed}")
        await ctx.heartbeat()
        await self._update(d, DocUpdate("chunking"))
        collection = await asyncio.to_thread(self.store.get_collection, d.tenant, d.collection)
        if collection is None:
            raise Permanent(f"collection '{d.collection}' is gone")
        spec = ChunkingSpec.from_json(collection.chunking)
        chunks = await asyncio.to_thread(chunk, parsed, spec)
        if not chunks:
            await self._update(d, DocUpdate("failed", stage="chunking", error="no text to index"))
            raise Permanent(f"document '{d.id}' v{d.version}: no text to index")
        return chunks

    def _parsed(self, d: DocumentRow) -> Parsed | str:
        """The version's parse (stored beside its bytes), or why it cannot be parsed."""
        keys = self.store.blob_keys(d.tenant, d.collection, d.id)
        raw = next((k for k in reversed(keys) if k.endswith(f"{d.content_hash[:32]}.{d.content_type}")), None)
        if raw is None:
            return "the document's content is gone from the blob store"
        stored = self.library.blobs.get(parsed_key(raw))
        if stored is not None:
            return Parsed.from_json(orjson.loads(stored))
        data = self.library.blobs.get(raw)
        if data is None:
            return "the document's content is gone from the blob store"
        try:
            parsed = parse(data, d.content_type)
        except ParseError as exc:
            return str(exc)
        self.library.blobs.put(parsed_key(raw), orjson.dumps(parsed.json()))
        return parsed

    async def _index(self, d: DocumentRow, chunks: list[ChunkIn], ctx: JobContext) -> int:
        total = len(chunks)
        await self._update(d, DocUpdate("embedding", progress_done=0, progress_total=total))
        collection = await asyncio.to_thread(self.library.collection, d.tenant, d.collection)
        await self.index.ensure(d.tenant, d.collection, index_spec(collection))
        done = [0]
        reporter = asyncio.create_task(self._report(d, done, total, ctx))
        try:
            n = await self.index.replace(ref(d), chunks, progress=lambda k: done.__setitem__(0, k))
        finally:
            reporter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reporter
        return n

    async def _report(self, d: DocumentRow, done: list[int], total: int, ctx: JobContext) -> None:
        shown = 0
        while True:
            await asyncio.sleep(PROGRESS_EVERY_S)
            if done[0] != shown:
                shown = done[0]
                await self._update(d, DocUpdate("embedding", progress_done=shown, progress_total=total))
                await ctx.progress(shown, total, f"{d.collection}/{d.id} v{d.version}")

    async def _settle(self, d: DocumentRow) -> None:
        """After indexing: the document may have changed meanwhile; old versions' blobs go."""
        now = await self._doc({"tenant": d.tenant, "collection": d.collection, "id": d.id})
        if now is None or now.deleted_at is not None:
            await self.index.remove(d.tenant, d.collection, d.id)
            return
        if now.version != d.version:
            await asyncio.to_thread(self.library.enqueue_ingest, now, again=f":after-v{d.version}")
            return
        keys = await asyncio.to_thread(self.store.blob_keys, d.tenant, d.collection, d.id)
        current = [k for k in keys if k.endswith(f"{d.content_hash[:32]}.{d.content_type}")]
        await asyncio.to_thread(self.library.delete_blobs, d.tenant, d.collection, d.id, current)

    # ---- rag.purge ---------------------------------------------------------------------------------

    async def purge(self, job: Job, ctx: JobContext) -> dict[str, Any]:
        p = job.payload
        d = await self._doc(p)
        if d is not None and d.deleted_at is None:
            return {"skipped": "put again since its delete"}
        removed = await self.index.remove(p["tenant"], p["collection"], p["id"])
        blobs = await asyncio.to_thread(self.library.delete_blobs, p["tenant"], p["collection"], p["id"])
        return {"chunks_removed": removed, "blobs_deleted": blobs}

    async def purge_tenant(self, tenant: str) -> dict[str, int]:
        """Everything RAG holds of a tenant: index entries, collections, documents, blobs."""
        chunks = await self.index.purge(tenant)
        counts = await asyncio.to_thread(self.library.purge_rows, tenant)
        return {**counts, "rag_chunks": chunks}

    async def drop_collection(self, tenant: str, name: str) -> dict[str, int]:
        """A collection, its index and its documents' blobs."""
        chunks = await self.index.purge(tenant, name)
        library = self.library
        docs = await asyncio.to_thread(lambda: [d.id for d in _all(library, tenant, name)])
        blobs = 0
        for doc_id in docs:
            blobs += await asyncio.to_thread(library.delete_blobs, tenant, name, doc_id)
        rows = await asyncio.to_thread(self.store.delete_collection, tenant, name)
        return {"rag_chunks": chunks, "rag_blobs": blobs, "rows": rows}

    # ---- rag.rechunk -------------------------------------------------------------------------------

    async def rechunk(self, job: Job, ctx: JobContext) -> dict[str, Any]:
        """Payload {tenant, collection, chunking}: every indexed document re-chunked into a shadow build
        (its stored parse; no re-parse), then the build activated and the collection's spec changed."""
        p = job.payload
        tenant, name = p["tenant"], p["collection"]
        spec = ChunkingSpec.from_json(p["chunking"])
        collection = await asyncio.to_thread(self.library.collection, tenant, name)
        build = await self.index.open_shadow(tenant, name, IndexSpec(collection.model, spec.json()))
        docs = await asyncio.to_thread(_indexed, self.library, tenant, name)
        total = 0
        for i, d in enumerate(docs):
            parsed = await asyncio.to_thread(self._parsed, d)
            if isinstance(parsed, str):
                continue
            chunks = await asyncio.to_thread(chunk, parsed, spec)
            total += await self.index.replace(ref(d), chunks, build=build)
            await ctx.progress(i + 1, len(docs), f"{tenant}/{name}: re-chunked {i + 1} of {len(docs)}")
        await self.index.activate(tenant, name, build)
        await asyncio.to_thread(
            self.store.set_collection_spec, tenant, name, collection.model, spec.json(), self.library.clock()
        )
        return {"documents": len(docs), "chunks": total, "build": build}


def _indexed(library: Library, tenant: str, name: str) -> list[DocumentRow]:
    return _all(library, tenant, name, "indexed")


def _all(library: Library, tenant: str, name: str, status: str | None = None) -> list[DocumentRow]:
    out: list[DocumentRow] = []
    after = None
    while True:
        page = library.store.list_documents(tenant, name, status=status, after=after, limit=1000)
        out += page
        if len(page) < 1000:
            return out
        after = page[-1].id


def ref(d: DocumentRow) -> DocumentRef:
    return DocumentRef(
        tenant=d.tenant, collection=d.collection, document_id=d.id, version=d.version, title=d.title,
        metadata=dict(d.metadata), users=d.users, groups=d.groups, valid_until=d.valid_until,
        updated_at=d.updated_at, source=d.source,
    )  # fmt: skip


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
