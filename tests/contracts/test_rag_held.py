"""A pgvector build searched in process while it fits `rag.in_process_mb` (decision 0068): the first search
is answered by the database while the build loads in the background (by a subprocess where the index
knows the store's URL), later ones in process with the same access; a build too big for the budget, or
that outgrows it, stays in (goes back to) the database; a build another process retired is let go; a
re-index of a held build swaps to a new build already held, whose HNSW index is made only once a process
searches it in the database."""

from __future__ import annotations

import asyncio
import random
import time

import pytest

from keel.rag.index import ChunkIn, DocumentRef, Index, IndexSpec
from keel.rag.index_rebuild import reindex
from keel.rag.search import SearchQuery
from keel.store.open import open_store
from keel.store.protocols import Store

WORDS = [f"hw{i}x" for i in range(50)]
SPEC = IndexSpec("hash:64", {})


@pytest.fixture
def storage_url(pgvector_schema_url: str) -> str:
    """PostgreSQL with pgvector only (the suite's `store` opens it)."""
    return pgvector_schema_url


def ref(n: int, groups: tuple[str, ...]) -> DocumentRef:
    return DocumentRef("t1", "kb", f"d{n}", 1, f"doc {n}", {}, (), groups, None, time.time(), "test")


async def fill(index: Index, docs: int, first: int = 0, spec: IndexSpec = SPEC) -> None:
    rng = random.Random(first)
    await index.ensure("t1", "kb", spec)
    for n in range(first, first + docs):
        chunks = [ChunkIn(i, " ".join(rng.choices(WORDS, k=6)), (), f"{n}-{i}", 6) for i in range(2)]
        await index.replace(ref(n, ("readers",) if n % 3 == 0 else ("others",)), chunks)


def query(text: str, mode: str = "lexical") -> SearchQuery:
    return SearchQuery("t1", "kb", text, top_k=200, groups=("readers",), mode=mode, candidates=1000)  # type: ignore[arg-type]


async def until_held(index: Index, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (await index.search(query(WORDS[0]))).searched == "process":
            return True
        await asyncio.sleep(0.05)
    return False


def test_first_search_answers_from_the_database_then_in_process_alike(store: Store) -> None:
    async def body() -> None:
        index = Index(store, url=store.url, in_process_mb=64)  # the load runs in keel.rag.index_export
        await fill(index, 60)
        words = " ".join(WORDS[:3])
        first = await index.search(query(words))
        assert first.searched == "database"  # the database answered while the build loads
        assert "documents" not in first.candidates  # it admits documents inside its queries, uncounted
        assert await until_held(index)
        later = await index.search(query(words))
        assert later.candidates["documents"] == 20  # the 20 documents group "readers" may read
        assert {h.document_id for h in later.hits} == {h.document_id for h in first.hits}
        assert all(int(h.document_id[1:]) % 3 == 0 for h in later.hits)
        await fill(index, 3, first=60)  # written after the load: read before the next search
        assert "d60" in {h.document_id for h in (await index.search(query(" ".join(WORDS)))).hits}
        await index.aclose()

    asyncio.run(body())


def test_a_build_over_the_budget_stays_in_the_database_and_one_outgrowing_it_goes_back(store: Store) -> None:
    async def body() -> None:
        small = Index(store, in_process_mb=1)
        await fill(small, 500)  # 1,000 chunks: ~1.3 MB guessed before a load
        assert not await small.hold("t1", "kb")
        assert (await small.search(query(WORDS[1]))).searched == "database"
        await small.aclose()

        index = Index(store, in_process_mb=2)
        await index.run(store.rag_purge, "t1", "kb")
        wide = IndexSpec("hash:256", {})
        await fill(index, 150, spec=wide)  # 300 chunks of 1 KB vectors: fits (as allocated, for 1,024 rows)
        assert await index.hold("t1", "kb")
        await fill(index, 400, first=150, spec=wide)  # 1,100 chunks: grown past 2 MiB while held
        assert (await index.search(query(WORDS[1]))).candidates["documents"] == 184  # the new rows read in
        assert (await index.search(query(WORDS[1]))).searched == "database"  # then over the budget
        build = await index.active("t1", "kb")
        assert build is not None and not index.vectors.holds(build.id)
        await index.aclose()

    asyncio.run(body())


def test_a_build_retired_by_another_process_is_let_go_and_the_new_one_held(store: Store) -> None:
    async def body() -> None:
        serving = Index(store, url=store.url, in_process_mb=64)
        other = Index(store, url=store.url, in_process_mb=64)  # another replica, which re-indexes
        await fill(serving, 30)
        assert await serving.hold("t1", "kb")
        old = await serving.active("t1", "kb")
        assert old is not None and serving.vectors.holds(old.id)
        done = await reindex(other, "t1", "kb", IndexSpec("hash:32", {}))
        assert other.vectors.nbytes == 0  # it held neither build: the swap landed in the database there
        result = await serving.search(query(WORDS[2]))
        assert result.build == done.build and not serving.vectors.holds(old.id)
        assert await until_held(serving)
        await serving.aclose()
        await other.aclose()

    asyncio.run(body())


def test_a_reindex_of_a_held_build_swaps_to_a_new_build_already_held(store: Store) -> None:
    async def body() -> None:
        index = Index(store, url=store.url, in_process_mb=64)
        await fill(index, 30)
        assert await index.hold("t1", "kb")
        done = await reindex(index, "t1", "kb", IndexSpec("hash:32", {}))
        result = await index.search(query(WORDS[3]))
        assert result.build == done.build and result.candidates["documents"] == 10
        await index.aclose()

    asyncio.run(body())


def test_a_build_swapped_in_held_gets_its_hnsw_index_only_once_searched_in_the_database(store: Store) -> None:
    """Decision 0070: the swapping process holds the new build, so no HNSW index is built beside its
    searches; a later write (another process's) does not build it either; a process that searches the
    build in the database for good (its budget 0) gets it made by its worker, and the answers agree."""
    url = pgvector_url_of(store)

    async def body() -> None:
        index = Index(store, url=store.url, in_process_mb=64)
        await fill(index, 30)
        assert await index.hold("t1", "kb")
        done = await reindex(index, "t1", "kb", IndexSpec("hash:32", {}))
        assert index.vectors.holds(done.build) and not hnsw_valid(url, done.build)
        other_store = open_store(url)  # another process writes to the new active build: still none
        other = Index(other_store)
        await other.replace(ref(99, ("readers",)), [ChunkIn(0, f"{WORDS[3]} written later", (), "late", 3)])
        assert not hnsw_valid(url, done.build)
        assert await other.make_database_indexes() == 0  # it never searched the build in the database
        in_db = await other.search(query(WORDS[3], mode="vector"))  # budget 0: the database, exactly
        assert in_db.searched == "database" and not hnsw_valid(url, done.build)
        assert await other.make_database_indexes() == 1  # the gateway's worker pass
        assert hnsw_valid(url, done.build)
        again = await other.search(query(WORDS[3], mode="vector"))
        held = await index.search(query(WORDS[3], mode="vector"))
        assert held.searched == "process" and held.build == again.build == done.build
        assert (
            {h.document_id for h in again.hits}
            == {h.document_id for h in held.hits}
            == {h.document_id for h in in_db.hits}
        )
        second = await reindex(index, "t1", "kb", IndexSpec("hash:48", {}))  # held: no index again
        assert (await other.search(query(WORDS[3], mode="vector"))).build == second.build  # noted by `other`
        await reindex(index, "t1", "kb", IndexSpec("hash:40", {}))  # `second` retired before the worker ran
        assert await other.make_database_indexes() == 0 and not hnsw_valid(url, second.build)
        await other.aclose()
        other_store.close()
        await index.aclose()

    asyncio.run(body())


def pgvector_url_of(store: Store) -> str:
    assert store.url is not None
    return store.url


def hnsw_valid(url: str, build: str) -> bool:
    import psycopg

    from keel.store.postgres.rag_vectors import hnsw_name

    with psycopg.connect(url, autocommit=True) as c:
        row = c.execute("SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass(%s)", (hnsw_name(build),))
        found = row.fetchone()
    return bool(found and found[0])
