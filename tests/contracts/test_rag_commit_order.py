"""A build's chunks are committed in id order on PostgreSQL, so a process that reads "the rows since N"
before each search (its in-process index) never skips a write that took its ids earlier and committed
later. The slow writer is held, for real, inside its transaction after its rows took their ids: a trigger
the test adds waits on an advisory lock the test holds."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import psycopg
import pytest

from keel.rag.index import ChunkIn, DocumentRef, Index, IndexSpec
from keel.rag.search import SearchQuery
from keel.store.open import open_store

pytestmark = pytest.mark.postgres

HOLD = 7_700_117  # the test's advisory lock key

TRIGGER = f"""
CREATE FUNCTION keel_test_hold() RETURNS trigger LANGUAGE plpgsql AS $$
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


def test_a_write_that_took_ids_first_and_committed_last_is_not_skipped(pg_schema_url: str) -> None:
    store = open_store(pg_schema_url)
    control = psycopg.connect(pg_schema_url, autocommit=True)

    def waiting() -> int:  # backends of this database waiting for a lock
        row = control.execute(
            "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
            " WHERE NOT l.granted AND a.datname = current_database()"
        ).fetchone()
        return int(row[0]) if row else 0

    async def body() -> None:
        writer, reader = Index(store), Index(store)  # two processes over one store
        await writer.ensure("t1", "kb", IndexSpec("hash:64", {}))
        for n in range(5):
            await writer.replace(ref(f"d{n}"), [ChunkIn(0, f"plain words number {n}", (), f"h{n}", 4)])
        assert (await reader.search(SearchQuery("t1", "kb", "plain words", top_k=10))).hits  # loaded here
        control.execute(TRIGGER)
        control.execute("SELECT pg_advisory_lock(%s)", (HOLD,))
        slow = asyncio.create_task(writer.replace(ref("slow"), [ChunkIn(0, "slow zebra chunk", (), "s", 3)]))
        await until(lambda: waiting() == 1, "the slow writer to hold its ids and wait")
        fast = asyncio.create_task(writer.replace(ref("fast"), [ChunkIn(0, "fast otter chunk", (), "f", 3)]))
        # before the mend the fast write commits at once; after it, it waits for the slow one
        await until(lambda: fast.done() or waiting() == 2, "the fast writer to commit or to wait")
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
        control.close()
        store.close()
