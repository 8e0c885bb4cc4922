"""Re-index a collection for a model change: a shadow build filled from the active one, then the swap.

The active build's chunks are read document by document, embedded again with the new model and copied
into a shadow build; meanwhile ingestion's writes (`Index.replace` with no build) go into both builds and
win over the copy (`rag_copy` skips a document the shadow already has or whose version moved on). When
every document is copied it is activated in one transaction: searches switch from one build to the
other between two queries. Any failure marks the shadow failed and leaves the old build serving.
A chunking change needs the documents' parsed text, so ingestion (keel.rag.ingest) re-chunks instead.

Searches keep their latency meanwhile (issue 17: none slower than twice the p99 before; decisions 0060,
0067):
- where the index knows the store's URL, a niced subprocess reads, embeds (when it can build the model
  itself) and writes each page (keel.rag.index_copy): this process only says which page is next. Else,
  or when that process fails, the reading and copying run here in the index's re-index thread, niced
  (`Index.run_background`), from where the copy had got to (`rag_copy` skips documents already copied);
- the shadow's in-process index (vectors and postings: seconds of Python at 100,000 chunks) is built by
  a subprocess once the shadow is filled and handed over as arrays (keel.rag.index_export), so the swap
  finds it warm and this process never tokenizes the build. Without the store's URL (or when the
  subprocess fails) it is loaded here instead, in the re-index thread: batch by batch as the shadow
  fills, or at the end;
- after each batch the re-index pauses `PAUSE` times what the batch took, so queries get the GIL and
  the cores at least half the time; and while it runs the interpreter switches threads every
  `SWITCH_S` (not 5 ms), so a query waiting for the GIL behind the re-index thread waits less.
If the shadow vanishes midway (a purge, or another re-index failed it: `BuildGone`), the re-index starts
again from a new shadow, at most `RESTARTS` times.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from keel.rag.index import Index, IndexSpec, NoIndex, embed_text
from keel.rag.index_copy import Copier, CopyFailed, SourceRow, copy_page
from keel.rag.index_export import ExportFailed, build_elsewhere
from keel.rag.index_models import IndexModel, embed_rows
from keel.store.protocols.rag_index import BuildRow

DOCS_PER_READ = 64
PAUSE = 1.0  # the pause after a batch, as a share of the time the batch took
SWITCH_S = 0.001  # the interpreter's thread switch interval while a re-index runs
RESTARTS = 3
log = logging.getLogger("keel.rag")


@dataclass(frozen=True, slots=True)
class Rebuilt:
    build: str
    previous: str
    model: str
    chunks: int  # in the new build just before the swap, as its store counts them (ingestion's writes too)
    documents: int


class BuildGone(RuntimeError):
    """The shadow being filled is no longer a shadow (purged, or failed by someone else)."""


Progress = Callable[[int, int], None]  # chunks done, chunks in the old build
_switching = [0, sys.getswitchinterval()]  # re-indexes running, the interval to restore


@contextmanager
def _short_switches() -> Iterator[None]:
    if _switching[0] == 0:
        _switching[1] = sys.getswitchinterval()
        sys.setswitchinterval(min(SWITCH_S, _switching[1]))
    _switching[0] += 1
    try:
        yield
    finally:
        _switching[0] -= 1
        if _switching[0] == 0:
            sys.setswitchinterval(_switching[1])


async def reindex(
    index: Index, tenant: str, collection: str, spec: IndexSpec, *, progress: Progress | None = None
) -> Rebuilt:
    with _short_switches():
        for attempt in range(RESTARTS + 1):
            try:
                return await _rebuild(index, tenant, collection, spec, progress)
            except BuildGone:
                if attempt == RESTARTS:
                    raise
    raise AssertionError("unreachable")


async def _rebuild(index: Index, tenant: str, collection: str, spec: IndexSpec, progress: Progress | None) -> Rebuilt:
    active = await index.active(tenant, collection)
    if active is None:
        raise NoIndex(f"collection {collection!r} has no index to rebuild")
    model = await index.models.get(spec.model)
    shadow = await index.open_shadow(tenant, collection, spec)
    total = await index.run_background(index.store.rag_count, active.id)
    done = after = 0
    copier = await _start_copier(index, active.id, shadow, spec.model, model)
    try:
        while True:
            started = time.perf_counter()
            await _shadow_row(index, tenant, collection, shadow)  # BuildGone before copying into it
            if copier is not None:
                try:
                    page = await _copy_elsewhere(index, copier, model, after)
                except CopyFailed as exc:
                    log.warning("re-index of %s/%s: its copy goes on in this process: %s", tenant, collection, exc)
                    await index.run_background(copier.close)
                    copier = None
                    continue
            else:
                page = await _copy_here(index, tenant, collection, active.id, shadow, model, after)
            if page is None:
                break
            rows, after = page
            done += rows
            if progress is not None:
                progress(done, total)
            await asyncio.sleep(PAUSE * (time.perf_counter() - started))
        await _warm(index, tenant, collection, shadow, active.id)
        # counted, not summed per page: a page a failed copy process had written (it died before answering)
        # is copied again here, and `rag_copy` skips (counts 0 for) the documents it had written
        chunks = await index.run_background(index.store.rag_count, shadow)
        documents = await index.run_background(index.store.rag_count_documents, shadow)
        await index.activate(tenant, collection, shadow)
    except BaseException as exc:
        if not isinstance(exc, BuildGone):
            await index.fail(shadow, f"{type(exc).__name__}: {exc}")
        else:
            index.vectors.let_go(shadow)
        raise
    finally:
        if copier is not None:
            await index.run_background(copier.close)
    return Rebuilt(shadow, active.id, model.model_id, chunks, documents)


Page = tuple[int, int]  # rows read, the last document


async def _start_copier(index: Index, source: str, shadow: str, name: str, model: IndexModel) -> Copier | None:
    """The copy process, where the index knows the store's URL (None: the copy runs here)."""
    if index.url is None:
        return None
    start = functools.partial(Copier, index.url, source, shadow, name, model.model_id, DOCS_PER_READ)
    try:
        return await index.run_background(start)
    except (CopyFailed, OSError) as exc:
        log.warning("re-index of build %s: its copy runs in this process: %s", source, exc)
        return None


async def _copy_elsewhere(index: Index, copier: Copier, model: IndexModel, after: int) -> Page | None:
    """One page copied by the copy process; embedded here first when it cannot build the model itself."""
    page = await index.run_background(copier.page, after)
    if not page["rows"]:
        return None
    if "texts" in page:
        blob = b"".join(await embed_rows(model, page["texts"]))
        page = {**page, **await index.run_background(copier.vectors, blob)}
    return int(page["rows"]), int(page["last"])


async def _copy_here(
    index: Index, tenant: str, collection: str, source: str, shadow: str, model: IndexModel, after: int
) -> Page | None:
    rows = await index.run_background(index.store.rag_source_chunks, source, after, DOCS_PER_READ)
    if not rows:
        return None
    await _copy(index, shadow, model, rows)
    if index.url is None:  # no other process can read the store: load here as the shadow fills
        await _load(index, tenant, collection, shadow)
    return len(rows), rows[-1][0]


async def _copy(index: Index, shadow: str, model: IndexModel, rows: list[SourceRow]) -> None:
    """Embed one page of the old build's chunks with the new model and copy them, document by document,
    into the shadow (as the copy process does)."""
    blobs = await embed_rows(model, [embed_text(title, chunk) for _, _, title, chunk in rows])
    await index.run_background(copy_page, index.store, shadow, rows, blobs)


async def _load(index: Index, tenant: str, collection: str, shadow: str) -> None:
    """Load the shadow's new rows into this process's in-process index (none where the database searches
    vectors), in the re-index thread; BuildGone when the shadow is no longer one."""
    built = await _shadow_row(index, tenant, collection, shadow)
    if built.dim is not None and not await index.searches_in_database(built.dim):
        await index.vectors.current(shadow, built.dim, run=index.run_background)


async def _warm(index: Index, tenant: str, collection: str, shadow: str, old: str) -> None:
    """The shadow's in-process index, complete before the swap: built by a subprocess and handed over as
    arrays where the index knows the store's URL, then the rows written since (ingestion's) read here.
    Where the database could search it (pgvector), only if the old build was searched in process here and
    the new one fits the budget beside it: else the swap lands in the database, as the old one was."""
    built = await _shadow_row(index, tenant, collection, shadow)
    if built.dim is None:
        return
    if await index.searches_in_database(built.dim):
        rows = await index.run_background(index.store.rag_count, shadow)
        if not (index.vectors.holds(old) and index.fits(rows, built.dim)):
            return
    if index.url is not None:
        try:
            handed = await index.run_background(build_elsewhere, index.url, shadow, built.dim)
        except (ExportFailed, OSError, subprocess.TimeoutExpired) as exc:
            log.warning("re-index of %s/%s: its new build is loaded in this process: %s", tenant, collection, exc)
        else:
            await index.vectors.adopt(shadow, handed)
    await index.vectors.current(shadow, built.dim, run=index.run_background)


async def _shadow_row(index: Index, tenant: str, collection: str, shadow: str) -> BuildRow:
    built = next(
        (b for b in await index.run_background(index.store.rag_builds, tenant, collection) if b.id == shadow), None
    )
    if built is None or built.state != "shadow":
        raise BuildGone(f"build {shadow} of {tenant}/{collection} is {built.state if built else 'gone'}, not a shadow")
    return built
