"""Re-index a collection for a model change: a shadow build filled from the active one, then the swap.

The active build's chunks are read document by document, embedded again with the new model and copied
into a shadow build; meanwhile ingestion's writes (`Index.replace` with no build) go into both builds and
win over the copy (`rag_copy` skips a document the shadow already has or whose version moved on). When
every document is copied the shadow is activated in one transaction: searches switch from one build to
the other between two queries. Any failure marks the shadow failed and leaves the old build serving.
A chunking change needs the documents' parsed text, so ingestion (keel.rag.ingest) re-chunks instead.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

from keel.rag.index import Index, IndexSpec, NoIndex, embed_text
from keel.rag.index_models import BATCH
from keel.store.protocols.rag_index import ChunkRow

DOCS_PER_READ = 64


@dataclass(frozen=True, slots=True)
class Rebuilt:
    build: str
    previous: str
    model: str
    chunks: int  # chunks copied (documents written meanwhile by ingestion are not counted)
    documents: int


Progress = Callable[[int, int], None]  # chunks done, chunks in the old build


async def reindex(
    index: Index, tenant: str, collection: str, spec: IndexSpec, *, progress: Progress | None = None
) -> Rebuilt:
    active = await index.active(tenant, collection)
    if active is None:
        raise NoIndex(f"collection {collection!r} has no index to rebuild")
    model = await index.models.get(spec.model)
    shadow = await index.open_shadow(tenant, collection, spec)
    store = index.store
    total = await index.run(store.rag_count, active.id)
    done = copied = documents = 0
    after = 0
    try:
        while rows := await index.run(store.rag_source_chunks, active.id, after, DOCS_PER_READ):
            texts = [embed_text(title, chunk) for _, _, title, chunk in rows]
            blobs: list[bytes] = []
            for i in range(0, len(texts), BATCH):
                matrix = await model.embed(texts[i : i + BATCH])
                blobs.extend(row.tobytes() for row in matrix)
            by_doc: dict[tuple[int, int], list[ChunkRow]] = {}
            for (doc, version, _, c), blob in zip(rows, blobs, strict=True):
                by_doc.setdefault((doc, version), []).append(
                    ChunkRow(c.ordinal, c.text, c.heading_path, c.content_hash, c.tokens, blob)
                )
            for (doc, version), chunks in by_doc.items():
                n = await index.run(functools.partial(store.rag_copy, shadow, doc, version, chunks))
                copied += n
                documents += n > 0
            after = rows[-1][0]
            done += len(rows)
            if progress is not None:
                progress(done, total)
        await index.activate(tenant, collection, shadow)
    except BaseException as exc:
        await index.fail(shadow, f"{type(exc).__name__}: {exc}")
        raise
    return Rebuilt(shadow, active.id, model.model_id, copied, documents)
