"""Builds a re-index retired, or that failed, are dropped a grace after they ended (decision 0069), on
SQLite, PostgreSQL and PostgreSQL with pgvector: their chunks, vectors and row go, one still within its
grace stays, the active build keeps answering as before, and a process that held a build another process
dropped lets it go. On pgvector a shadow fills without an HNSW index, gets it in one pass before the swap,
searches use it, and a dropped build's index goes with it."""

from __future__ import annotations

import asyncio
import random
import sqlite3
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from keel.rag.index import ChunkIn, DocumentRef, Index, IndexSpec
from keel.rag.index_models import HashModel
from keel.rag.index_rebuild import reindex
from keel.rag.search import SearchQuery
from keel.store.open import open_store
from keel.store.postgres.rag_vectors import hnsw_name
from keel.store.protocols import Store

WORDS = [f"ew{i}x" for i in range(40)]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres), "pgvector"])
def storage_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The suite's `store` on SQLite, PostgreSQL without pgvector, and with it."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/keel.db"
    return str(request.getfixturevalue("pg_schema_url" if request.param == "postgres" else "pgvector_schema_url"))


def ref(n: int) -> DocumentRef:
    return DocumentRef("t1", "kb", f"d{n}", 1, f"doc {n}", {}, (), (), None, time.time(), "test")


async def fill(index: Index, docs: int) -> None:
    rng = random.Random(7)
    await index.ensure("t1", "kb", IndexSpec("hash:64", {}))
    for n in range(docs):
        await index.replace(
            ref(n), [ChunkIn(i, " ".join(rng.choices(WORDS, k=6)), (), f"{n}-{i}", 6) for i in range(2)]
        )


def query() -> SearchQuery:
    return SearchQuery("t1", "kb", " ".join(WORDS[:4]), top_k=10)


def _rows(url: str, sql: str) -> list[tuple[Any, ...]]:
    if url.startswith("sqlite"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as c:
            return c.execute(sql).fetchall()
    with psycopg.connect(url, autocommit=True) as c:
        *settings, last = sql.split(";")
        for setting in settings:
            c.execute(setting)
        return c.execute(last).fetchall()


def test_a_retired_build_is_dropped_after_its_grace_and_the_active_one_answers_alike(store: Store) -> None:
    async def body() -> None:
        index = Index(store)
        await fill(index, 40)
        old = (await index.active("t1", "kb")).id  # type: ignore[union-attr]
        before = [(h.document_id, h.chunk_id) for h in (await index.search(query())).hits]
        swapped = time.time()
        new = (await reindex(index, "t1", "kb", IndexSpec("hash:64", {"v": 2}))).build  # same vectors
        assert await index.drop_ended(swapped - 1) == 0  # within its grace: kept
        assert await index.run(store.rag_count, old) == 80
        assert await index.drop_ended(time.time() + 1) == 1
        assert await index.run(store.rag_count, old) == 0
        assert [b.id for b in await index.builds("t1", "kb")] == [new]
        after = await index.search(query())
        assert after.build == new
        assert [h.document_id for h in after.hits] == [d for d, _ in before]  # same documents, new chunks
        assert await index.run(store.rag_count, new) == 80
        with pytest.raises(ValueError):
            await index.run(store.rag_drop_build, new)  # never the active build
        await index.aclose()

    asyncio.run(body())


def test_a_failed_build_is_dropped_and_one_a_process_held_is_let_go_there(store: Store) -> None:
    async def body() -> None:
        here, there = Index(store), Index(store)  # two processes over one store
        await fill(here, 30)
        shadow = await here.open_shadow("t1", "kb", IndexSpec("hash:64", {"v": 2}))
        await here.replace(ref(0), [ChunkIn(0, "a failed shadow's chunk", (), "x", 4)], build=shadow)
        await here.fail(shadow, "test: failed")
        old = (await there.active("t1", "kb")).id  # type: ignore[union-attr]
        assert (await there.search(query())).build == old
        if store.rag_searches_vectors(64):  # pgvector: hold the build in process on purpose
            there.in_process_bytes = 2**26
            assert await there.hold("t1", "kb")
        held = there.vectors.holds(old)
        assert held or store.rag_searches_vectors(64)  # SQLite and plain PostgreSQL always hold it
        await reindex(here, "t1", "kb", IndexSpec("hash:48", {}))
        assert await here.drop_ended(time.time() + 1) == 2  # the failed shadow and the retired build
        assert {b.state for b in await here.builds("t1", "kb")} == {"active"}
        assert await here.run(store.rag_count, shadow) == 0
        result = await there.search(query())  # lists builds: `old` is gone, not even retired
        assert result.build != old and result.hits
        assert not there.vectors.holds(old)
        await here.aclose()
        await there.aclose()

    asyncio.run(body())


def test_pgvector_a_shadow_fills_without_hnsw_and_gets_it_before_it_serves(pgvector_schema_url: str) -> None:
    url = pgvector_schema_url

    def indexes() -> dict[str, bool]:
        return dict(
            _rows(
                url,
                "SELECT c.relname, i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
                " WHERE c.relname LIKE 'rag_hnsw_%' AND pg_table_is_visible(c.oid)",
            )
        )

    async def body(store: Store) -> None:
        index = Index(store)
        await fill(index, 30)
        old = (await index.active("t1", "kb")).id  # type: ignore[union-attr]
        assert indexes() == {hnsw_name(old): True}  # a new collection's build is indexed from its first write
        shadow = await index.open_shadow("t1", "kb", IndexSpec("hash:64", {"v": 2}))
        await index.replace(ref(1), [ChunkIn(0, "written into both", (), "y", 3)])
        assert await index.run(store.rag_count, shadow) == 1
        assert indexes() == {hnsw_name(old): True}  # the shadow fills without one
        await index.open_shadow("t1", "kb", IndexSpec("hash:64", {"v": 3}))
        await index.run(store.rag_set_state, shadow, "failed", "test: given up")
        new = (await reindex(index, "t1", "kb", IndexSpec("hash:64", {"v": 4}))).build
        assert indexes() == {hnsw_name(old): True, hnsw_name(new): True}
        vector = (await HashModel(64).embed(["ew1x"]))[0]
        literal = "[" + ",".join(map(str, vector.tolist())) + "]"
        plan = _rows(
            url,
            "SET enable_seqscan = off; SET enable_sort = off;"  # so small a table is read whole else
            f" EXPLAIN SELECT chunk FROM rag_vectors_64 v WHERE v.build = '{new}'"
            f" ORDER BY v.embedding <=> '{literal}'::vector LIMIT 10",
        )
        assert hnsw_name(new) in " ".join(r[0] for r in plan)  # the query's shape can use it
        assert (await index.search(SearchQuery("t1", "kb", "ew1x", top_k=5, mode="vector"))).hits
        await index.drop_ended(time.time() + 1)
        assert indexes() == {hnsw_name(new): True}
        await index.purge("t1", "kb")
        assert indexes() == {}
        await index.aclose()

    store = open_store(url)
    try:
        asyncio.run(body(store))
    finally:
        store.close()


def test_pgvector_migration_0028_gives_each_active_build_its_own_hnsw_index(pgvector_schema_url: str) -> None:
    """A store filled before migration 0028 (one HNSW index shared by every build, no ended_at): its active
    build gets its own index, the shared one goes, and a build retired before counts as ended then."""
    url = pgvector_schema_url

    async def body(store: Store) -> tuple[str, str]:
        index = Index(store)
        await fill(index, 20)
        retired = (await index.active("t1", "kb")).id  # type: ignore[union-attr]
        active = (await reindex(index, "t1", "kb", IndexSpec("hash:64", {"v": 2}))).build
        await index.aclose()
        return retired, active

    store = open_store(url)
    try:
        retired, active = asyncio.run(body(store))
    finally:
        store.close()
    _rows(  # back to the shape before 0028
        url,
        f"DROP INDEX {hnsw_name(retired)}; DROP INDEX {hnsw_name(active)};"
        " CREATE INDEX rag_vectors_64_hnsw ON rag_vectors_64 USING hnsw (embedding vector_cosine_ops);"
        " ALTER TABLE rag_builds DROP COLUMN ended_at; DELETE FROM keel_migrations WHERE version = 28;"
        " SELECT 1",
    )
    open_store(url).close()  # migrates
    names = {r[0] for r in _rows(url, "SELECT indexname FROM pg_indexes WHERE tablename = 'rag_vectors_64'")}
    assert hnsw_name(active) in names and hnsw_name(retired) not in names and "rag_vectors_64_hnsw" not in names
    ended = dict(_rows(url, "SELECT id, ended_at = created_at FROM rag_builds"))
    assert ended == {retired: True, active: None}
