"""The RAG index: one build per (collection, embedding model version), written by ingestion and searched
hybrid (full text + vectors, fused), with the access filter inside both candidate queries.

This is the contract with ingestion (keel.rag.ingest): `ensure` gives a collection's active build,
`replace` embeds a document's chunks and writes them atomically into the active build and any shadow
being built (idempotent per document version), `remove` forgets a document, `open_shadow` + `activate`
re-index and swap in one transaction, `purge` deletes a tenant's (or a collection's) index, `search`
answers a `SearchQuery`. Store calls run in the index's own threads, never on the event loop.

A search reads the active build once, so it is answered wholly from the old build or wholly from the
new one across a swap. Vectors are searched in the database where the backend can (pgvector), else in
process (index_vectors.py); either way only over the documents the caller may see.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import os
import secrets
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson

from keel.rag.acl import admitted_because
from keel.rag.fusion import DEFAULT, Fused, Fusion, fuse
from keel.rag.index_models import Models, embed_rows
from keel.rag.index_vectors import BuildVectors, LetGo, VectorCache
from keel.rag.search import Hit, SearchQuery, SearchResult
from keel.store.protocols.rag_index import (
    Access,
    BuildRow,
    BuildsChanged,
    Candidates,
    ChunkRow,
    ChunkView,
    DocRow,
    RagIndexStore,
    query_terms,
)

__all__ = ["ChunkIn", "DocumentRef", "Index", "IndexSpec", "NoIndex", "SearchQuery", "SearchResult"]
T = TypeVar("T")
WRITE_TRIES = 5
SEARCH_TRIES = 3
ROW_TERMS_BYTES = 1024  # a row's full text in process, as guessed before a build loads (~85 tokens)
ENDED_GRACE_S = 60.0  # a retired build stays this long after its swap, for searches that listed it before
RETRY_S = 60.0  # a build that did not fit the in-process budget, or failed to load, is tried again after this
log = logging.getLogger("keel.rag")


@dataclass(frozen=True, slots=True)
class DocumentRef:
    """What the index keeps of a document, to filter and to cite."""

    tenant: str
    collection: str
    document_id: str
    version: int
    title: str
    metadata: Mapping[str, object]
    users: tuple[str, ...]  # users and groups both empty: the whole tenant may read it
    groups: tuple[str, ...]
    valid_until: float | None
    updated_at: float
    source: str


@dataclass(frozen=True, slots=True)
class ChunkIn:
    ordinal: int
    text: str
    heading_path: tuple[str, ...]
    content_hash: str
    tokens: int


@dataclass(frozen=True, slots=True)
class IndexSpec:
    model: str  # keel.rag.index_models: "local", "hash:<dim>", "alias:<name>"
    chunking: Mapping[str, object]

    def json(self) -> str:
        return orjson.dumps(
            {"model": self.model, "chunking": dict(self.chunking)}, option=orjson.OPT_SORT_KEYS
        ).decode()


class NoIndex(LookupError):
    """The collection has no active build (nothing was ever indexed into it)."""


def embed_text(title: str, chunk: ChunkIn | ChunkRow) -> str:
    """What a chunk's vector is computed from: its document title and heading path, then its text."""
    context = " > ".join(p for p in (title, *chunk.heading_path) if p)
    return f"{context}\n{chunk.text}" if context else chunk.text


class Index:
    def __init__(
        self,
        store: RagIndexStore,
        models: Models | None = None,
        *,
        fusion: Fusion = DEFAULT,
        threads: int = 4,
        clock: Callable[[], float] = time.time,
        url: str | None = None,
        in_process_mb: int = 0,
    ) -> None:
        self.store = store
        self.url = url  # the store's: a re-index loads its new build in a subprocess (keel.rag.index_export)
        # where the database can search a build (pgvector), the memory this process may give to searching
        # builds in process instead (decision 0068; `rag.in_process_mb`); 0: always in the database there
        self.in_process_bytes = in_process_mb * 2**20
        self.models = models or Models()
        self.fusion = fusion
        self._clock = clock
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="keel-rag-index")
        # re-index work (keel.rag.index_rebuild): one thread at a lower OS priority than the searches'
        self._background = ThreadPoolExecutor(1, thread_name_prefix="keel-rag-rebuild", initializer=_lower_priority)
        self.vectors = VectorCache(self.run, store.rag_vectors, store.rag_count)
        self._inside: dict[int, bool] = {}  # vector width -> searched in the database (pgvector)?
        self._loading: dict[str, asyncio.Task[None]] = {}  # builds being loaded to be searched in process
        self._not_before: dict[str, float] = {}  # build -> when to try loading it again (too big, or failed)
        self._owners: dict[str, tuple[str, str]] = {}  # held or just searched build -> (tenant, collection)
        # builds this process searched in the database for good (not while loading) -> (tenant, collection)
        self._database_searched: dict[str, tuple[str, str]] = {}

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a store call in the index's threads."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    async def run_background(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a call in the re-index thread (niced: searches' threads go first when the cores are busy)."""
        return await asyncio.get_running_loop().run_in_executor(self._background, fn, *args)

    async def aclose(self) -> None:
        for task in list(self._loading.values()):
            task.cancel()
        self._pool.shutdown(wait=False)
        self._background.shutdown(wait=False)

    async def searches_in_database(self, dim: int) -> bool:
        """Can vectors of `dim` (and full text) be searched in the database (pgvector)? Then a build is
        searched in process only while it fits `in_process_bytes` (`searched_here`)."""
        inside = self._inside.get(dim)
        if inside is None:  # asked once per width: the answer is the backend's, not the build's
            inside = self._inside[dim] = await self.run(self.store.rag_searches_vectors, dim)
        return inside

    def fits(self, rows: int, dim: int) -> bool:
        """Would a build of `rows` chunks fit the in-process budget beside the builds loaded now?"""
        return self.vectors.nbytes + rows * (dim * 4 + 24 + ROW_TERMS_BYTES) <= self.in_process_bytes

    def searched_here(self, build: BuildRow) -> bool:
        """Is `build`, which the database could search, searched in process? Only once loaded whole within
        the budget: its first search starts the load in the background (in a subprocess where the store's
        URL is known, so searches keep the GIL) and the database answers meanwhile; a build that outgrew
        the budget goes back to the database."""
        if self.in_process_bytes <= 0 or build.dim is None:
            return False
        if build.id in self._loading or self.vectors.let_go_lately(build.id):  # let go: the database answers
            return False
        if self.vectors.holds(build.id):
            if self.vectors.nbytes <= self.in_process_bytes:
                return True
            log.info("RAG build %s no longer fits rag.in_process_mb: searched in the database", build.id)
            self.vectors.forget(build.id)
            self._not_before[build.id] = time.monotonic() + RETRY_S
            return False
        if self._not_before.get(build.id, 0.0) <= time.monotonic():
            self._loading[build.id] = asyncio.get_running_loop().create_task(self._load(build.id, build.dim))
        return False

    async def _load(self, build: str, dim: int) -> None:
        try:
            rows = await self.run_background(self.store.rag_count, build)
            if not self.fits(rows, dim):
                self._not_before[build] = time.monotonic() + RETRY_S
                return
            if self.url is not None:
                from keel.rag.index_export import ExportFailed, build_elsewhere

                try:
                    handed = await self.run_background(build_elsewhere, self.url, build, dim)
                except (ExportFailed, OSError, subprocess.TimeoutExpired) as exc:
                    log.warning("RAG build %s is loaded in this process: %s", build, exc)
                else:
                    await self.vectors.adopt(build, handed)
            await self.vectors.current(build, dim, run=self.run_background)
        except Exception:
            log.exception("RAG build %s could not be loaded: searched in the database", build)
            self.vectors.forget(build)
            self._not_before[build] = time.monotonic() + RETRY_S
        finally:
            self._loading.pop(build, None)

    async def hold(self, tenant: str, collection: str) -> bool:
        """Load the collection's active build to be searched in process now, if the budget allows (where
        the database could search it); True when it is searched in process."""
        build = await self.active(tenant, collection)
        if build is None or build.dim is None:
            return False
        if not await self.searches_in_database(build.dim):
            return True
        self.searched_here(build)
        task = self._loading.get(build.id)
        if task is not None:
            await asyncio.shield(task)
        return self.searched_here(build)

    # ---- builds ------------------------------------------------------------------------------

    async def builds(self, tenant: str, collection: str) -> list[BuildRow]:
        return await self.run(self.store.rag_builds, tenant, collection)

    async def active(self, tenant: str, collection: str) -> BuildRow | None:
        return next((b for b in await self.builds(tenant, collection) if b.state == "active"), None)

    async def ensure(self, tenant: str, collection: str, spec: IndexSpec) -> str:
        """The collection's active build, made (empty) under `spec` when it has none."""
        found = await self.active(tenant, collection)
        if found is not None:
            return found.id
        return (await self._new_build(tenant, collection, spec, "active")).id

    async def open_shadow(self, tenant: str, collection: str, spec: IndexSpec) -> str:
        """A new build that every `replace` also writes until it is activated (or fails)."""
        return (await self._new_build(tenant, collection, spec, "shadow")).id

    async def _new_build(self, tenant: str, collection: str, spec: IndexSpec, state: str) -> BuildRow:
        model = await self.models.get(spec.model)
        row = BuildRow(
            "b_" + secrets.token_hex(8), tenant, collection, model.model_id, spec.json(), state,  # type: ignore[arg-type]
            self._clock(),
        )  # fmt: skip
        return await self.run(self.store.rag_add_build, row)

    async def activate(self, tenant: str, collection: str, build: str) -> None:
        """Swap `build` in and retire the old build, which `drop_ended` drops a grace later. A build this
        process will not search in process is first made ready for the database to search (pgvector's HNSW
        index, in one pass); one held here is not: the index is made when a process searches the build in
        the database (`make_database_indexes`), where it fits nobody's budget or for a replica set to 0
        (decision 0070: the index build beside the searches was most of a re-index's slow queries)."""
        if not self.vectors.holds(build):
            await self.run_background(self.store.rag_prepare, build)
        old = await self.active(tenant, collection)
        await self.run(self.store.rag_activate, tenant, collection, build)
        if old is not None and old.id != build:
            self.vectors.let_go(old.id)

    async def fail(self, build: str, error: str) -> None:
        await self.run(self.store.rag_set_state, build, "failed", error[:2000])
        self.vectors.let_go(build)

    async def make_database_indexes(self) -> int:
        """Make what the database needs to search the builds this process searched there (pgvector's HNSW
        index, where a swap held in process left it out); each once, in the re-index thread. A gateway's
        worker calls it, so a one-off CLI search never waits for an index build. The builds made ready; a
        build that failed is kept for the next pass, and the pass raises once the others are done."""
        done, failed = 0, []
        for build, (tenant, collection) in sorted(self._database_searched.items()):
            try:
                if any(b.id == build and b.state == "active" for b in await self.builds(tenant, collection)):
                    await self.run_background(self.store.rag_prepare, build)
                    done += 1
            except Exception as exc:
                failed.append(f"{build}: {type(exc).__name__}: {exc}")
                continue
            del self._database_searched[build]  # made, or no longer active (swapped out since)
        if failed:
            raise RuntimeError("RAG database indexes not made (tried again next pass): " + "; ".join(failed))
        return done

    async def drop_ended(self, before: float) -> int:
        """Drop every build retired or failed before `before` (its chunks, vectors and row), so a re-index
        leaves one build's data, not two: a grace after the swap, for the searches that listed the old
        build before it. The builds dropped."""
        dropped = 0
        while found := await self.run(self.store.rag_ended_builds, before):
            for b in found:
                self.vectors.let_go(b.id)
                chunks = await self.run_background(self.store.rag_drop_build, b.id)
                log.info("RAG build %s of %s/%s (%s) dropped: %d chunks", b.id, b.tenant, b.collection, b.state, chunks)
                dropped += 1
        return dropped

    async def purge(self, tenant: str, collection: str | None = None) -> int:
        for b in await self.run(self.store.rag_builds, tenant, collection):
            self.vectors.let_go(b.id)
        return await self.run(self.store.rag_purge, tenant, collection)

    # ---- writes ------------------------------------------------------------------------------

    async def replace(
        self,
        doc: DocumentRef,
        chunks: Sequence[ChunkIn],
        *,
        build: str | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> int:
        """Embed and write a document's chunks into `build`, or into the active build and every shadow
        (again, if a shadow opens or a swap happens while embedding)."""
        row = DocRow(
            doc.tenant, doc.collection, doc.document_id, doc.version, doc.title, dict(doc.metadata),
            tuple(doc.users), tuple(doc.groups), doc.valid_until, doc.updated_at, doc.source,
        )  # fmt: skip
        embedded: dict[str, list[bytes]] = {}  # per model name: kept across tries
        for _ in range(WRITE_TRIES):
            targets = await self._targets(doc, build)
            rows: dict[str, list[ChunkRow]] = {}
            for b in targets:
                name = orjson.loads(b.spec)["model"]
                if name not in embedded:
                    embedded[name] = await self._embed(name, doc.title, chunks, progress)
                rows[b.id] = [
                    ChunkRow(c.ordinal, c.text, tuple(c.heading_path), c.content_hash, c.tokens, blob)
                    for c, blob in zip(chunks, embedded[name], strict=True)
                ]
            try:
                return await self.run(functools.partial(self.store.rag_write, row, rows, every=build is None))
            except BuildsChanged:
                continue
        raise BuildsChanged(f"{doc.tenant}/{doc.collection}: its builds kept changing during {WRITE_TRIES} writes")

    async def _targets(self, doc: DocumentRef, build: str | None) -> list[BuildRow]:
        builds = await self.builds(doc.tenant, doc.collection)
        if build is not None:
            targets = [b for b in builds if b.id == build]
            if not targets:
                raise NoIndex(f"no build {build!r} in {doc.tenant}/{doc.collection}")
            return targets
        targets = [b for b in builds if b.state in ("active", "shadow")]
        if not targets:
            raise NoIndex(f"{doc.tenant}/{doc.collection} has no index: call ensure first")
        return targets

    async def _embed(
        self, name: str, title: str, chunks: Sequence[ChunkIn], progress: Callable[[int], None] | None
    ) -> list[bytes]:
        model = await self.models.get(name)
        return await embed_rows(model, [embed_text(title, c) for c in chunks], progress)

    async def remove(self, tenant: str, collection: str, document_id: str) -> int:
        return await self.run(self.store.rag_remove, tenant, collection, document_id)

    # ---- search ------------------------------------------------------------------------------

    async def search(self, query: SearchQuery) -> SearchResult:
        """Answered wholly from one build: a search whose build a swap let go before it read it starts
        again on the build active now."""
        for _ in range(SEARCH_TRIES - 1):
            with contextlib.suppress(LetGo):
                return await self._search(query)
        return await self._search(query)

    async def _search(self, query: SearchQuery) -> SearchResult:
        started = time.perf_counter()
        builds = await self.builds(query.tenant, query.collection)
        self._let_go_ended(query, builds)
        ms: dict[str, float] = {"builds": _ms(started)}
        wanted = query.build
        build = next((b for b in builds if (b.id == wanted if wanted else b.state == "active")), None)
        if build is None:
            raise NoIndex(f"collection {query.collection!r} has no index" + (f" build {wanted}" if wanted else ""))
        access = Access(query.tenant, query.user, query.groups, query.everything)
        now = query.now if query.now is not None else self._clock()
        vector: bytes | None = None
        if query.mode != "lexical" and build.dim is not None:
            t = time.perf_counter()
            model = await self.models.get(orjson.loads(build.spec)["model"])
            vector = (await model.embed([query.text]))[0].tobytes()
            ms["embed"] = _ms(t)
        lexical, vectors, matrix, admitted = await self._candidates(query, build, access, now, vector, ms)
        t = time.perf_counter()
        fused = await self._fuse(query, lexical, vectors, matrix, vector)
        ms["fuse"] = _ms(t)
        t = time.perf_counter()
        views: dict[int, ChunkView] = {}
        if query.half_life_days is not None:  # decay by age reorders the whole pool, so it reads every chunk
            views = {v.id: v for v in await self.run(self.store.rag_chunks, [f.id for f in fused])}
            fused = _decayed(fused, views, now, query.half_life_days)
        fused = fused[: query.top_k]
        if not views:
            views = {v.id: v for v in await self.run(self.store.rag_chunks, [f.id for f in fused])}
        hits = tuple(_hit(f, views[f.id], access, query, now) for f in fused if f.id in views)
        ms["fetch"] = _ms(t)
        ms["total"] = _ms(started)
        counts = {"lexical": len(lexical.ids), "vector": len(vectors.ids)}
        if admitted is not None:  # the database admits documents inside its candidate queries, uncounted
            counts["documents"] = admitted
        fusion = self.fusion.describe() if query.mode == "hybrid" else query.mode
        where = "process" if admitted is not None else "database"
        return SearchResult(build.id, build.model, query.mode, fusion, hits, counts, ms, searched=where)

    def _let_go_ended(self, query: SearchQuery, builds: Sequence[BuildRow]) -> None:
        """Free the memory of this collection's builds that another process retired, failed or dropped."""
        owner, listed = (query.tenant, query.collection), {b.id for b in builds}
        for known, where in list(self._owners.items()):  # as many as the builds held here, and these
            gone = where == owner and known not in listed  # dropped (`drop_ended`) by another process
            if gone and self.vectors.holds(known):
                self.vectors.let_go(known)
            if gone or not self.vectors.holds(known):
                del self._owners[known]
        for b in builds:
            if b.state not in ("retired", "failed"):
                self._owners[b.id] = owner  # perhaps loaded by this search
            elif b.id != query.build and self.vectors.holds(b.id):
                self.vectors.let_go(b.id)

    async def _candidates(
        self, q: SearchQuery, build: BuildRow, access: Access, now: float, vector: bytes | None, ms: dict[str, float]
    ) -> tuple[Candidates, Candidates, BuildVectors | None, int | None]:
        """Both candidate lists, the access filter inside each: in process over the build's rows (one
        admitted-rows mask for both), or in the database where it searches vectors (pgvector)."""
        empty = Candidates([], [])
        if build.dim is None:  # nothing was ever written to this build
            return empty, empty, None, 0
        if await self.searches_in_database(build.dim) and not self.searched_here(build):
            if build.id not in self._loading and q.build is None:  # for good: its database index is due
                self._database_searched[build.id] = (q.tenant, q.collection)
            return await self._in_database(q, build, access, now, vector, ms)
        t = time.perf_counter()
        allowed, matrix = await asyncio.gather(
            self.run(self.store.rag_allowed, q.tenant, q.collection, access, q.filters, _expiry(q, now)),
            self.vectors.current(build.id, build.dim, again=q.build is not None),
        )
        admitted = matrix.admitted(allowed)
        ms["admitted"] = _ms(t)
        lex = vec = empty
        if q.mode != "vector":
            t = time.perf_counter()
            lex = matrix.lexical(query_terms(q.text), admitted, q.candidates)
            ms["lexical"] = _ms(t)
        if q.mode != "lexical" and vector is not None:
            t = time.perf_counter()
            vec = matrix.top(vector, admitted, q.candidates)
            ms["vector"] = _ms(t)
        return lex, vec, matrix, len(allowed)

    async def _in_database(
        self, q: SearchQuery, build: BuildRow, access: Access, now: float, vector: bytes | None, ms: dict[str, float]
    ) -> tuple[Candidates, Candidates, BuildVectors | None, int | None]:
        empty = Candidates([], [])

        async def lexical() -> Candidates:
            if q.mode == "vector":
                return empty
            t = time.perf_counter()
            found = await self.run(
                self.store.rag_lexical, build.id, q.collection, q.text, access, q.filters, _expiry(q, now), q.candidates
            )
            ms["lexical"] = _ms(t)
            return found

        async def nearest() -> Candidates:
            if vector is None or q.mode == "lexical":
                return empty
            t = time.perf_counter()
            found = await self.run(
                self.store.rag_vector_search, build.id, q.collection, vector, access, q.filters, _expiry(q, now),
                q.candidates,
            )  # fmt: skip
            ms["vector"] = _ms(t)
            return found or empty

        lex, vec = await asyncio.gather(lexical(), nearest())
        matrix = None
        if q.mode == "hybrid" and vector is not None:  # the candidates' own vectors, for exact cosines and feedback
            matrix = BuildVectors(build.dim or 0)
            matrix.extend(await self.run(self.store.rag_embeddings, sorted({*lex.ids, *vec.ids})))
        return lex, vec, matrix, None

    async def _fuse(
        self, q: SearchQuery, lex: Candidates, vec: Candidates, matrix: BuildVectors | None, vector: bytes | None
    ) -> list[Fused]:
        """Fusion (hybrid) or one list's order; lexical candidates get their exact cosine, and in process
        vector candidates their exact BM25; then feedback from the top fused chunks (keel.rag.fusion)."""
        if q.mode != "hybrid" or vector is None or matrix is None:
            return fuse(self.fusion, _pairs(lex), _pairs(vec))
        seen, found, words = set(vec.ids), set(lex.ids), query_terms(q.text)
        extra = matrix.similarity([i for i in lex.ids if i not in seen], vector)
        bm25 = matrix.bm25(words, [i for i in vec.ids if i not in found])  # in process only, else {}
        fused = fuse(self.fusion, _pairs(lex), _pairs(vec), extra, bm25)
        f = self.fusion
        if f.feedback and fused:
            import numpy as np

            best = [x.id for x in fused[: f.feedback]]
            moved = np.frombuffer(vector, dtype=np.float32) + f.feedback_weight * matrix.rows(best).mean(axis=0)
            moved /= max(float(np.linalg.norm(moved)), 1e-12)
            pool = [x.id for x in fused]
            again = matrix.similarity(pool, moved)
            if f.feedback_terms and matrix.terms is not None:
                bm25 = matrix.bm25(words, pool, best, f.feedback_terms, f.feedback_terms_weight)
            fused = fuse(f, _pairs(lex), _pairs(vec), again, bm25)
        return fused


def _lower_priority() -> None:
    """The calling thread's nice value 10 (Linux: per thread); where the OS refuses, it runs as it is."""
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)


def _pairs(c: Candidates) -> list[tuple[int, float]]:
    return list(zip(c.ids, c.scores, strict=True))


def _expiry(q: SearchQuery, now: float) -> float | None:
    """The time documents must still be valid at, or None when the query keeps expired ones too."""
    return now if q.exclude_expired else None


def _ms(t: float) -> float:
    return round((time.perf_counter() - t) * 1000, 3)


def _decay(view: ChunkView, now: float, half_life_days: float) -> float:
    """The share of its score a chunk keeps at its document's age: 1/2 per half-life (none if dated ahead)."""
    age_days = max(0.0, now - view.doc.updated_at) / 86400
    return float(0.5 ** (age_days / half_life_days))


def _decayed(fused: list[Fused], views: Mapping[int, ChunkView], now: float, half_life_days: float) -> list[Fused]:
    out = [
        dataclasses.replace(f, score=f.score * _decay(views[f.id], now, half_life_days)) for f in fused if f.id in views
    ]
    out.sort(key=lambda f: (-f.score, f.id))
    return out


def _hit(f: Fused, view: ChunkView, access: Access, q: SearchQuery, now: float) -> Hit:
    doc = view.doc
    found = []
    if f.lexical_rank is not None:
        found.append(f"full text #{f.lexical_rank}")
    if f.vector_rank is not None:
        found.append(f"vector #{f.vector_rank}")
    why = f"{' and '.join(found) or 'vector similarity'}; {admitted_because(doc, access)}"
    if doc.valid_until is not None:
        why += "; valid until " + time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(doc.valid_until))
    if q.filters:
        why += f"; passed {len(q.filters)} filter(s)"
    freshness = None
    if q.half_life_days is not None:
        freshness = round(_decay(view, now, q.half_life_days), 6)
        age = max(0.0, now - doc.updated_at) / 86400
        why += f"; {age:.0f} days old, score x{freshness:.3g} (half-life {q.half_life_days:g} days)"
    return Hit(
        view.id, doc.document_id, doc.title, doc.version, view.ordinal, view.text, view.heading_path, doc.metadata,
        doc.source, doc.updated_at,
        {"lexical": f.lexical, "vector": f.vector, "fused": round(f.score, 6), "rerank": None, "freshness": freshness},
        {"lexical": f.lexical_rank, "vector": f.vector_rank}, why,
    )  # fmt: skip
