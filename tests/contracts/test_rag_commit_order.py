"""A build's chunks are committed in id order on PostgreSQL, so a process that reads "the rows since N"
before each search (its in-process index) never skips a write that took its ids earlier and committed
later. The slow writer is held, for real, inside its transaction after its rows took their ids: a trigger
the test adds waits on an advisory lock the test holds. And on pgvector, a write while another session
makes the build's HNSW index neither waits for it nor deadlocks with it, and neither does the drop of an
ended build's index while a swap makes the new one's (decision 0070). A re-index's copied page (one
transaction) and a write of one of its documents do not deadlock either (0071)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from keel.rag.index import ChunkIn, DocumentRef, Index, IndexSpec
from keel.rag.index_models import HashModel
from keel.rag.search import SearchQuery
from keel.store.open import open_store
from keel.store.postgres.rag_vectors import hnsw_name
from keel.store.protocols.rag_index import ChunkRow
from keel.store.sql.rag_index import PG_LOCK_KEY

pytestmark = pytest.mark.postgres

HOLD = 7_700_117  # the test's advisory lock key

TRIGGER = f"""
CREATE OR REPLACE FUNCTION keel_test_hold() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.text LIKE 'slow %' THEN PERFORM pg_advisory_xact_lock_shared({HOLD}); END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER keel_test_hold AFTER INSERT ON rag_chunks FOR EACH ROW EXECUTE FUNCTION keel_test_hold();
"""


def ref(name: str) -> DocumentRef:
    return DocumentRef("t1", "kb", name, 1, name, {}, (), (), None, time.time(), "test")


async def until(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 20
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


def _waiting(conn: psycopg.Connection[Any]) -> int:
    """Backends of this database waiting for a lock."""
    row = conn.execute(
        "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
        " WHERE NOT l.granted AND a.datname = current_database()"
    ).fetchone()
    return int(row[0]) if row else 0


def test_a_write_that_took_ids_first_and_committed_last_is_not_skipped(pg_schema_url: str) -> None:
    store = open_store(pg_schema_url)
    control = psycopg.connect(pg_schema_url, autocommit=True)

    async def body() -> None:
        writer, reader = Index(store), Index(store)  # two processes over one store
        await writer.ensure("t1", "kb", IndexSpec("hash:64", {}))
        for n in range(5):
            await writer.replace(ref(f"d{n}"), [ChunkIn(0, f"plain words number {n}", (), f"h{n}", 4)])
        assert (await reader.search(SearchQuery("t1", "kb", "plain words", top_k=10))).hits  # loaded here
        control.execute(TRIGGER)
        control.execute("SELECT pg_advisory_lock(%s)", (HOLD,))
        slow = asyncio.create_task(writer.replace(ref("slow"), [ChunkIn(0, "slow zebra chunk", (), "s", 3)]))
        await until(lambda: _waiting(control) == 1, "the slow writer to hold its ids and wait")
        fast = asyncio.create_task(writer.replace(ref("fast"), [ChunkIn(0, "fast otter chunk", (), "f", 3)]))
        # before the mend the fast write commits at once; after it, it waits for the slow one
        await until(lambda: fast.done() or _waiting(control) == 2, "the fast writer to commit or to wait")
        await reader.search(SearchQuery("t1", "kb", "otter", top_k=10))  # reads whatever has committed
        control.execute("SELECT pg_advisory_unlock(%s)", (HOLD,))
        await asyncio.gather(slow, fast)
        for word, doc in (("zebra", "slow"), ("otter", "fast")):
            hits = (await reader.search(SearchQuery("t1", "kb", word, top_k=10))).hits
            assert doc in [h.document_id for h in hits], f"{doc}'s chunk was never read by this process"
        build = (await reader.active("t1", "kb")).id  # type: ignore[union-attr]
        held = await reader.vectors.current(build, 64)
        stored = {r[0] for r in control.execute("SELECT id FROM rag_chunks WHERE build = %s", (build,))}
        assert set(held.ids[: held.n].tolist()) == stored
        await writer.aclose()
        await reader.aclose()

    try:
        asyncio.run(body())
    finally:
        control.execute("DROP TRIGGER IF EXISTS keel_test_hold ON rag_chunks")
        control.execute("DROP FUNCTION IF EXISTS keel_test_hold()")  # the schema is recycled, functions and all
        control.close()
        store.close()


def test_a_write_while_another_session_makes_the_builds_hnsw_index_neither_waits_nor_deadlocks(
    pgvector_schema_url: str,
) -> None:
    """A new collection's first writes make its build's HNSW index (decision 0069). A writer that waited
    in `pg_advisory_lock` for the session making it held a snapshot there, which that session's CREATE
    INDEX CONCURRENTLY waits for: a deadlock (four writers on a new collection hit it at once). Here the
    maker is the test's own session, holding the makers' lock when the write starts."""
    url = pgvector_schema_url
    store = open_store(url)
    maker = psycopg.connect(url, autocommit=True)
    try:

        async def body() -> None:
            first = Index(store)  # makes the vector table (a first collection, its index made at once)
            await first.ensure("t1", "kb", IndexSpec("hash:64", {}))
            await first.replace(ref("a"), [ChunkIn(0, "first words", (), "a", 2)])
            await first.ensure("t1", "kb2", IndexSpec("hash:64", {}))
            build = (await first.active("t1", "kb2")).id  # type: ignore[union-attr]
            await first.aclose()
            name, key = hnsw_name(build), "keel_rag_hnsw:" + build
            maker.execute(f"SELECT pg_advisory_lock({PG_LOCK_KEY})", (key,))  # as a maker holds it
            other = open_store(url)  # a process that never wrote to kb2: its first write makes the index
            writer = Index(other)
            try:
                write = asyncio.create_task(
                    writer.replace(
                        DocumentRef("t1", "kb2", "b", 1, "b", {}, (), (), None, time.time(), "t"),
                        [ChunkIn(0, "second words", (), "b", 2)],
                    )
                )
                # before the mend the write waits for the lock (its snapshot held); after it, it goes on
                await until(lambda: write.done() or _waiting_on(maker, key), "the write to finish or to wait")
                making = asyncio.create_task(
                    asyncio.to_thread(
                        maker.execute,
                        f"CREATE INDEX CONCURRENTLY {name} ON rag_vectors_64"
                        f" USING hnsw (embedding vector_cosine_ops) WHERE build = '{build}'",
                    )
                )
                assert await write == 1
                await making  # no deadlock on either side
                maker.execute(f"SELECT pg_advisory_unlock({PG_LOCK_KEY})", (key,))
                valid = maker.execute(
                    "SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass(%s)", (name,)
                ).fetchone()
                assert valid == (True,)
                found = await writer.search(SearchQuery("t1", "kb2", "second", top_k=5))
                assert [h.document_id for h in found.hits] == ["b"]
            finally:
                await writer.aclose()
                other.close()

        asyncio.run(body())
    finally:
        maker.close()
        store.close()


def _waiting_on(conn: psycopg.Connection[Any], key: str) -> bool:
    """Is a session waiting for the advisory lock of `key`?"""
    row = conn.execute(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
        f" AND objid::bigint = ({PG_LOCK_KEY}::bigint & 4294967295)",
        (key,),
    ).fetchone()
    return bool(row and row[0])


def test_dropping_an_ended_build_while_a_shadows_hnsw_index_is_made_neither_deadlocks(
    pgvector_schema_url: str,
) -> None:
    """The gateway drops ended builds (their HNSW index: DROP INDEX CONCURRENTLY) while a swap makes the
    new build's (CREATE INDEX CONCURRENTLY): on one table each waited for the other's snapshot and
    PostgreSQL killed one (decision 0070). The test stalls the real maker at its start with a transaction
    holding the table as a writer would, starts the real drop, then lets the maker go."""
    url = pgvector_schema_url
    store = open_store(url)
    stall = psycopg.connect(url)
    watch = psycopg.connect(url, autocommit=True)

    def waiting(sql: str) -> bool:
        row = watch.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
            " AND query LIKE %s",
            (sql + "%",),
        ).fetchone()
        return bool(row and row[0])

    async def body() -> None:
        index = Index(store)
        await index.ensure("t1", "kb", IndexSpec("hash:64", {}))
        for n in range(20):
            await index.replace(ref(f"d{n}"), [ChunkIn(0, f"words of document {n}", (), f"h{n}", 4)])
        shadow = await index.open_shadow("t1", "kb", IndexSpec("hash:64", {"v": 2}))
        await index.replace(ref("d0"), [ChunkIn(0, "words of document 0", (), "h0", 4)], build=shadow)
        old = (await index.active("t1", "kb")).id  # type: ignore[union-attr]
        newer = await index.open_shadow("t1", "kb", IndexSpec("hash:64", {"v": 3}))
        await index.replace(ref("d1"), [ChunkIn(0, "words of document 1", (), "h1", 4)], build=newer)
        await index.activate("t1", "kb", shadow)  # `old` retired, with its HNSW index
        assert watch.execute("SELECT to_regclass(%s)", (hnsw_name(old),)).fetchone() != (None,)
        stall.execute("LOCK TABLE rag_vectors_64 IN ROW EXCLUSIVE MODE")  # a writer's transaction, open
        making = asyncio.create_task(asyncio.to_thread(store.rag_prepare, newer))
        await until(lambda: waiting("CREATE INDEX CONCURRENTLY"), "the maker to wait for the open writer")
        dropping = asyncio.create_task(asyncio.to_thread(store.rag_drop_build, old))
        # before the mend the drop's DROP INDEX CONCURRENTLY waits for the table (its snapshot held);
        # after it, the drop waits for the maker's lock without one: give it a second to show either
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline and not waiting("DROP INDEX CONCURRENTLY"):
            await asyncio.sleep(0.02)
        stall.commit()
        await making  # no deadlock on either side
        assert await dropping == 20  # its chunks
        names = (hnsw_name(newer), hnsw_name(old))
        rows = watch.execute(
            "SELECT c.relname, i.indisvalid FROM pg_class c JOIN pg_index i ON i.indexrelid = c.oid"
            " WHERE c.relname = ANY(%s)",
            (list(names),),
        ).fetchall()
        assert rows == [(hnsw_name(newer), True)]
        await index.aclose()

    try:
        asyncio.run(body())
    finally:
        stall.close()
        watch.close()
        store.close()


DOC_TRIGGER = f"""
CREATE OR REPLACE FUNCTION keel_test_hold_doc() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.document_id = 'd1' THEN PERFORM pg_advisory_xact_lock_shared({HOLD}); END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER keel_test_hold_doc AFTER UPDATE ON rag_index_docs FOR EACH ROW EXECUTE FUNCTION keel_test_hold_doc();
"""


def test_a_copied_page_and_a_write_of_one_of_its_documents_neither_deadlock(pg_schema_url: str) -> None:
    """A re-index copies a page of documents in one transaction (decision 0071). A write of one of them
    holds its document's row and then takes the build's id lock; the copy must lock every row of its
    page before that lock, or the two wait on each other. The writer is held, for real, between the two
    (a trigger on its row's update waits on an advisory lock the test holds) while the copy starts."""
    store = open_store(pg_schema_url)
    control = psycopg.connect(pg_schema_url, autocommit=True)

    async def body() -> None:
        index = Index(store)
        await index.ensure("t1", "kb", IndexSpec("hash:64", {}))
        for n in range(3):
            await index.replace(ref(f"d{n}"), [ChunkIn(0, f"first words of {n}", (), f"h{n}", 4)])
        shadow = await index.open_shadow("t1", "kb", IndexSpec("hash:128", {}))
        rows = dict(control.execute("SELECT document_id, id FROM rag_index_docs WHERE collection = 'kb'").fetchall())
        vector = (await HashModel(128).embed(["copied"]))[0].tobytes()
        page = [(rows[f"d{n}"], 1, [ChunkRow(0, f"first words of {n}", (), f"h{n}", 4, vector)]) for n in range(3)]
        control.execute(DOC_TRIGGER)
        control.execute("SELECT pg_advisory_lock(%s)", (HOLD,))
        newer = DocumentRef("t1", "kb", "d1", 2, "d1", {}, (), (), None, time.time(), "test")
        write = asyncio.create_task(index.replace(newer, [ChunkIn(0, "second words of 1", (), "n1", 4)]))
        await until(lambda: _waiting(control) == 1, "the writer to hold d1's row and wait")
        copy = asyncio.create_task(asyncio.to_thread(store.rag_copy, shadow, page))
        await until(lambda: _waiting(control) == 2, "the copy to wait for d1's row")
        control.execute("SELECT pg_advisory_unlock(%s)", (HOLD,))
        # before the mend's order (the id lock first) PostgreSQL found a deadlock here and killed one
        written, copied = await asyncio.wait_for(asyncio.gather(write, copy), 30)
        assert written == 2 and copied == 2  # d1 into both builds; the copy, d0 and d2 (d1 moved on)
        found = control.execute(
            "SELECT d.document_id, c.version, c.text FROM rag_chunks c JOIN rag_index_docs d ON d.id = c.doc"
            " WHERE c.build = %s ORDER BY d.document_id",
            (shadow,),
        ).fetchall()
        assert found == [("d0", 1, "first words of 0"), ("d1", 2, "second words of 1"), ("d2", 1, "first words of 2")]
        await index.aclose()

    try:
        asyncio.run(body())
    finally:
        control.execute("DROP TRIGGER IF EXISTS keel_test_hold_doc ON rag_index_docs")
        control.execute("DROP FUNCTION IF EXISTS keel_test_hold_doc()")
        control.close()
        store.close()
