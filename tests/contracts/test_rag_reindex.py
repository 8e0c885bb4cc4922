"""Shadow re-index for a model change under continuous queries, on SQLite and PostgreSQL: every query is
answered, results switch from the old build to the new at one instant, documents written and removed
during the rebuild are in the new build as they are in the old; the copy, done by a subprocess (which
embeds with the new model itself, or has this process embed a model only it has; or here when that
process fails, or is stopped for not answering in time), writes the vectors this process would; the new
build, handed over by a subprocess (or loaded here when that fails), answers as one loaded in this
process; a rebuild that fails midway leaves the old build serving and the shadow marked failed."""

from __future__ import annotations

import asyncio
import logging
import random
import sqlite3
import time
from collections.abc import Callable, Coroutine, Iterator, Sequence
from contextlib import closing
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest

from keel.rag import index_copy
from keel.rag.index import ChunkIn, DocumentRef, Index, IndexSpec
from keel.rag.index_copy import own_model
from keel.rag.index_models import HashModel
from keel.rag.index_rebuild import reindex
from keel.rag.search import SearchQuery
from keel.store.open import open_store
from keel.store.protocols import Store

WORDS = [f"wd{i}x" for i in range(60)]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    url = f"sqlite:///{tmp_path}/keel.db" if request.param == "sqlite" else request.getfixturevalue("pg_schema_url")
    opened = open_store(url)
    try:
        yield opened
    finally:
        opened.close()


def ref(n: int, version: int = 1) -> DocumentRef:
    return DocumentRef("t1", "kb", f"d{n}", version, f"doc {n}", {}, (), (), None, time.time(), "test")


def body_of(rng: random.Random, n: int) -> list[ChunkIn]:
    return [ChunkIn(i, " ".join(rng.choices(WORDS, k=8)), (), f"{n}-{i}", 8) for i in range(2)]


class Counting:
    """A model only this process has (as an alias of its gateway): counts the texts it embeds."""

    def __init__(self) -> None:
        self.model_id = "counting-48@1"
        self.texts: list[str] = []
        self._inner = HashModel(48)

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        self.texts.extend(texts)
        return await self._inner.embed(texts)


async def _embedded_as_here(index: Index, store: Store, build: str, model: HashModel) -> None:
    """The build's vectors are those `model` gives here for each chunk's text (and its title)."""
    ids = [h.chunk_id for h in (await index.search(SearchQuery("t1", "kb", WORDS[0], top_k=20, mode="lexical"))).hits]
    views = {v.id: v for v in await index.run(store.rag_chunks, ids)}
    stored = await index.run(store.rag_embeddings, ids)
    assert stored.ids and all(views[i].build == build for i in stored.ids)
    for i, blob in zip(stored.ids, stored.embeddings, strict=True):
        view = views[i]
        expected = await model.embed([f"{view.doc.title}\n{view.text}"])
        assert np.frombuffer(blob, dtype=np.float32).tolist() == expected[0].tolist()


class Failing:
    """An embedder that breaks after some calls (an upstream going away midway)."""

    def __init__(self, after: int) -> None:
        self.model_id = "failing@1"
        self._left = after
        self._inner = HashModel(32)

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        self._left -= 1
        if self._left < 0:
            raise ConnectionError("embedding upstream went away")
        return await self._inner.embed(texts)


async def _load(index: Index, stop: asyncio.Event, seen: list[tuple[str, str]], errors: list[BaseException]) -> None:
    rng = random.Random(5)
    while not stop.is_set():
        try:
            result = await index.search(SearchQuery("t1", "kb", " ".join(rng.sample(WORDS, 3)), top_k=5))
            seen.append((result.build, result.model))
        except Exception as exc:
            errors.append(exc)
        await asyncio.sleep(0)


@pytest.mark.timeout(180)
def test_reindex_under_load_switches_at_one_instant(store: Store, caplog: pytest.LogCaptureFixture) -> None:
    async def body() -> None:
        rng = random.Random(1)
        index = Index(store, url=store.url)  # the new build is handed over by a subprocess
        old = await index.ensure("t1", "kb", IndexSpec("hash:64", {"max_tokens": 100}))
        for n in range(150):
            await index.replace(ref(n), body_of(rng, n))
        stop, seen, errors = asyncio.Event(), [], []
        loader = asyncio.create_task(_load(index, stop, seen, errors))
        progress: list[tuple[int, int]] = []

        async def ingest_meanwhile() -> None:
            await asyncio.sleep(0.01)
            await index.replace(ref(3, 2), [ChunkIn(0, "changed during the rebuild", (), "c", 4)])
            await index.replace(ref(500), [ChunkIn(0, "added during the rebuild", (), "a", 4)])
            await index.remove("t1", "kb", "d7")

        rebuilt, _ = await asyncio.gather(
            reindex(index, "t1", "kb", IndexSpec("hash:128", {}), progress=lambda d, t: progress.append((d, t))),
            ingest_meanwhile(),
        )
        count = len(seen)
        while len(seen) < count + 20 and not errors:
            await asyncio.sleep(0.01)
        stop.set()
        await loader
        assert errors == []
        builds = [b for b, _ in seen]
        switches = [i for i in range(1, len(builds)) if builds[i] != builds[i - 1]]
        assert len(switches) == 1 and builds[0] == old and builds[-1] == rebuilt.build
        assert {m for b, m in seen if b == rebuilt.build} == {"hash-128@1"}
        assert progress and progress[-1][0] >= 290 and rebuilt.previous == old
        states = {b.id: b.state for b in await index.builds("t1", "kb")}
        assert states == {old: "retired", rebuilt.build: "active"}
        assert await index.run(store.rag_count, rebuilt.build) == 2 * 148 + 1 + 1  # d3 now one chunk, d7 gone, d500
        changed = await index.search(SearchQuery("t1", "kb", "changed during the rebuild", top_k=1, mode="lexical"))
        assert [(h.document_id, h.version) for h in changed.hits] == [("d3", 2)]
        added = await index.search(SearchQuery("t1", "kb", "added during the rebuild", top_k=1, mode="lexical"))
        assert [h.document_id for h in added.hits] == ["d500"]
        await _same_as_loaded_here(index, store)
        await _embedded_as_here(index, store, rebuilt.build, HashModel(128))  # by the copy process
        await index.aclose()

    with caplog.at_level(logging.WARNING, "keel.rag"):
        asyncio.run(body())
    assert not [r for r in caplog.records if "in this process" in r.getMessage()]


def test_the_copy_process_has_a_model_only_this_process_has_embed_here(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    async def body() -> None:
        rng = random.Random(6)
        index = Index(store, url=store.url)
        model = Counting()
        index.models.add("counting", model)
        await index.ensure("t1", "kb", IndexSpec("hash:64", {}))
        for n in range(150):
            await index.replace(ref(n), body_of(rng, n))
        rebuilt = await reindex(index, "t1", "kb", IndexSpec("counting", {}))
        assert rebuilt.chunks == 300 and len(model.texts) == 300  # every chunk, once
        await _embedded_as_here(index, store, rebuilt.build, HashModel(48))
        await _same_as_loaded_here(index, store)
        await index.aclose()

    with caplog.at_level(logging.WARNING, "keel.rag"):
        asyncio.run(body())
    assert not [r for r in caplog.records if "in this process" in r.getMessage()]


async def _same_as_loaded_here(index: Index, store: Store) -> None:
    """The index's answers equal those of an index that loads the active build in this process."""
    here = Index(store, index.models)
    rng = random.Random(9)
    for mode in ("hybrid", "lexical", "vector"):
        for _ in range(10):
            q = SearchQuery("t1", "kb", " ".join(rng.sample(WORDS, 3)), top_k=8, mode=mode)  # type: ignore[arg-type]
            a, b = await index.search(q), await here.search(q)
            assert [(h.chunk_id, h.scores) for h in a.hits] == [(h.chunk_id, h.scores) for h in b.hits]
    await here.aclose()


def test_a_subprocess_that_fails_leaves_the_new_build_to_be_loaded_here(
    store: Store, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def body() -> None:
        rng = random.Random(4)
        index = Index(store, url=f"sqlite:///{tmp_path}/other.db")  # a store without the build: the subprocess fails
        await index.ensure("t1", "kb", IndexSpec("hash:64", {}))
        for n in range(100):
            await index.replace(ref(n), body_of(rng, n))
        rebuilt = await reindex(index, "t1", "kb", IndexSpec("hash:128", {}))
        result = await index.search(SearchQuery("t1", "kb", " ".join(WORDS[:3]), top_k=3))
        assert result.build == rebuilt.build and result.hits
        await _same_as_loaded_here(index, store)
        await index.aclose()

    with caplog.at_level(logging.WARNING, "keel.rag"):
        asyncio.run(body())
    (warned,) = [r.getMessage() for r in caplog.records if "loaded in this process" in r.getMessage()]
    assert "no such table" in warned and str(tmp_path) not in warned
    (copied,) = [r.getMessage() for r in caplog.records if "copy goes on in this process" in r.getMessage()]
    assert "no such table" in copied and str(tmp_path) not in copied


def test_a_failed_rebuild_leaves_the_old_index_serving(store: Store) -> None:
    async def body() -> None:
        rng = random.Random(2)
        index = Index(store)
        index.models.add("failing", Failing(after=2))
        old = await index.ensure("t1", "kb", IndexSpec("hash:64", {}))
        for n in range(200):
            await index.replace(ref(n), body_of(rng, n))
        with pytest.raises(ConnectionError):
            await reindex(index, "t1", "kb", IndexSpec("failing", {}))
        builds = {b.state: b for b in await index.builds("t1", "kb")}
        assert builds["active"].id == old and "went away" in (builds["failed"].error or "")
        result = await index.search(SearchQuery("t1", "kb", WORDS[0], top_k=3))
        assert result.build == old and result.hits
        await index.replace(ref(900), [ChunkIn(0, "after the failure", (), "f", 3)])  # not into the failed build
        assert await index.run(store.rag_count, builds["failed"].id) < 400
        await index.aclose()

    asyncio.run(body())


def test_a_shadow_failed_by_someone_else_midway_is_built_again(store: Store) -> None:
    async def body() -> None:
        rng = random.Random(3)
        index = Index(store)
        old = await index.ensure("t1", "kb", IndexSpec("hash:64", {}))
        for n in range(200):
            await index.replace(ref(n), body_of(rng, n))
        gone: list[str] = []

        def progress(done: int, total: int) -> None:
            if not gone:  # after the first batch: another process fails this shadow (BuildGone)
                (shadow,) = [b.id for b in store.rag_builds("t1", "kb") if b.state == "shadow"]
                store.rag_set_state(shadow, "failed", "failed by another process")
                gone.append(shadow)

        rebuilt = await reindex(index, "t1", "kb", IndexSpec("hash:128", {}), progress=progress)
        assert gone and rebuilt.build != gone[0] and rebuilt.previous == old
        states = {b.id: b.state for b in await index.builds("t1", "kb")}
        assert states == {old: "retired", gone[0]: "failed", rebuilt.build: "active"}
        assert await index.run(store.rag_count, rebuilt.build) == 400 and rebuilt.chunks == 400
        result = await index.search(SearchQuery("t1", "kb", " ".join(WORDS[:3]), top_k=3))
        assert result.build == rebuilt.build and result.model == "hash-128@1" and result.hits
        await index.aclose()

    asyncio.run(body())


def test_the_copy_process_embeds_only_with_the_very_model_asked_for() -> None:
    assert asyncio.run(own_model("hash:128", "hash-128@1")) is not None
    assert asyncio.run(own_model("hash:128", "hash-128@2")) is None  # a model of that name, other weights
    assert asyncio.run(own_model("counting", "counting-48@1")) is None  # this process's own: embedded here


class _When(logging.Handler):
    """Calls `then` once, as the re-index logs a message containing `text` (in the event loop's thread)."""

    def __init__(self, text: str, then: Callable[[], None]) -> None:
        super().__init__()
        self._text, self._then, self.done = text, then, False

    def emit(self, record: logging.LogRecord) -> None:
        if not self.done and self._text in record.getMessage():
            self.done = True
            self._then()


def _copy_went_on_here(
    body: Callable[[], Coroutine[Any, Any, None]], when: _When, caplog: pytest.LogCaptureFixture
) -> str:
    """Run `body` with `when` listening to the re-index's log: the one warning that the copy went on in
    this process."""
    logger = logging.getLogger("keel.rag")
    logger.addHandler(when)
    try:
        with caplog.at_level(logging.WARNING, "keel.rag"):
            asyncio.run(body())
    finally:
        logger.removeHandler(when)
    (warned,) = [r.getMessage() for r in caplog.records if "copy goes on in this process" in r.getMessage()]
    return warned


def _connect(url: str) -> Any:
    """A connection of the test's own to the store's database (SQLite: autocommit, transactions by hand)."""
    if url.startswith("sqlite:///"):
        return sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
    return psycopg.connect(url)


def _hold_a_lock(url: str) -> Any:
    """A connection holding what the copy process needs next: SQLite's write lock; on PostgreSQL the row of
    the document 80 (in the second page of 64), which `rag_copy` locks (with the rest of its page, before
    writing any of it), so the process stops on the second page."""
    conn = _connect(url)
    if isinstance(conn, sqlite3.Connection):
        conn.execute("BEGIN IMMEDIATE")
    else:
        nth = "SELECT id FROM rag_index_docs ORDER BY id OFFSET 80 LIMIT 1"  # FOR UPDATE here locks those skipped
        conn.execute(f"SELECT id FROM rag_index_docs WHERE id = ({nth}) FOR UPDATE")
    return conn


@pytest.mark.timeout(120)
def test_a_copy_process_stuck_on_a_lock_is_stopped_and_the_copy_goes_on_here(
    store: Store, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    held: list[Any] = []
    released = _When("timed out", lambda: held[0].close())  # the lock lasts until the copy process is stopped

    def progress(done: int, total: int) -> None:
        if not held:  # after the first page: from now on the process may take 1 s (a busy machine's start
            held.append(_hold_a_lock(store.url))  # and first page can take longer, which is not under test)
            monkeypatch.setattr(index_copy, "PAGE_S", 1.0)

    async def body() -> None:
        rng = random.Random(7)
        index = Index(store, url=store.url)
        old = await index.ensure("t1", "kb", IndexSpec("hash:64", {}))
        for n in range(150):
            await index.replace(ref(n), body_of(rng, n))
        rebuilt = await reindex(index, "t1", "kb", IndexSpec("hash:128", {}), progress=progress)
        assert await index.run(store.rag_count, rebuilt.build) == await index.run(store.rag_count, old) == 300
        assert (rebuilt.chunks, rebuilt.documents) == (300, 150)  # PostgreSQL: stopped on the second page
        await _embedded_as_here(index, store, rebuilt.build, HashModel(128))
        await index.aclose()

    try:
        warned = _copy_went_on_here(body, released, caplog)
    finally:
        for conn in held:
            conn.close()
    assert "timed out (no answer in 1 s)" in warned and released.done


def _poison(url: str) -> None:
    """Inserting the chunks of document 80 (in the second page of 64) fails, until `_cure`."""
    with closing(_connect(url)) as conn:
        (doc,) = conn.execute("SELECT id FROM rag_index_docs ORDER BY id LIMIT 1 OFFSET 80").fetchone()
        if isinstance(conn, sqlite3.Connection):
            conn.execute(
                f"CREATE TRIGGER poison BEFORE INSERT ON rag_chunks WHEN NEW.doc = {doc}"
                " BEGIN SELECT RAISE(ABORT, 'poisoned chunk'); END"
            )
            return
        conn.execute(
            "CREATE FUNCTION poison() RETURNS trigger LANGUAGE plpgsql"
            " AS $$ BEGIN RAISE EXCEPTION 'poisoned chunk'; END $$"
        )
        conn.execute(
            "CREATE TRIGGER poison BEFORE INSERT ON rag_chunks FOR EACH ROW"
            f" WHEN (NEW.doc = {doc}) EXECUTE FUNCTION poison()"
        )
        conn.commit()


def _cure(url: str) -> None:
    with closing(_connect(url)) as conn:
        if isinstance(conn, sqlite3.Connection):
            conn.execute("DROP TRIGGER poison")
            return
        conn.execute("DROP TRIGGER poison ON rag_chunks")
        conn.execute("DROP FUNCTION poison()")
        conn.commit()


def _shadow_documents(url: str) -> int:
    with closing(_connect(url)) as conn:
        (n,) = conn.execute(
            "SELECT count(DISTINCT c.doc) FROM rag_chunks c JOIN rag_builds b ON b.id = c.build WHERE b.state = 'shadow'"
        ).fetchone()
    return int(n)


def test_counts_are_true_when_the_copy_process_died_mid_page(store: Store, caplog: pytest.LogCaptureFixture) -> None:
    """A page is one transaction: the process died on the second page's document 80, and the shadow then
    holds the first page whole and nothing of the second, which is copied again here: still counted."""
    held: list[int] = []

    def cure() -> None:
        held.append(_shadow_documents(store.url))
        _cure(store.url)

    cured = _When("copy goes on in this process", cure)

    async def body() -> None:
        rng = random.Random(8)
        index = Index(store, url=store.url)
        old = await index.ensure("t1", "kb", IndexSpec("hash:64", {}))
        for n in range(150):
            await index.replace(ref(n), body_of(rng, n))
        _poison(store.url)
        rebuilt = await reindex(index, "t1", "kb", IndexSpec("hash:128", {}))
        assert await index.run(store.rag_count, rebuilt.build) == await index.run(store.rag_count, old) == 300
        assert (rebuilt.chunks, rebuilt.documents) == (300, 150)
        await index.aclose()

    assert "poison" in _copy_went_on_here(body, cured, caplog)  # the copy process died of it
    assert held == [64]  # with a transaction a document (the code before 0071): 80


class Held:
    """A model whose query embedding waits for a gate: a search holds there, between listing the builds
    and reading the active one's vectors, while the test swaps builds."""

    def __init__(self) -> None:
        self.model_id = "held-48@1"
        self.gate = asyncio.Event()
        self.waiting = asyncio.Event()
        self._inner = HashModel(48)

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        if len(texts) == 1 and texts[0] == "held query":
            self.waiting.set()
            await self.gate.wait()
        return await self._inner.embed(texts)


def test_a_search_whose_build_a_swap_let_go_answers_from_the_new_build_without_loading_the_old(store: Store) -> None:
    async def body() -> None:
        rng = random.Random(4)
        index = Index(store)
        held = Held()
        index.models.add("held", held)
        await index.ensure("t1", "kb", IndexSpec("held", {}))
        for n in range(20):
            await index.replace(ref(n), body_of(rng, n))
        old = await index.active("t1", "kb")
        assert old is not None
        await index.search(SearchQuery("t1", "kb", WORDS[0]))  # the old build loaded here
        assert index.vectors.holds(old.id)
        search = asyncio.create_task(index.search(SearchQuery("t1", "kb", "held query")))
        await held.waiting.wait()  # it listed the builds: the old one is active
        done = await reindex(index, "t1", "kb", IndexSpec("hash:32", {}))
        held.gate.set()
        result = await search
        assert result.build == done.build != old.id  # answered wholly from the new build
        assert not index.vectors.holds(old.id)  # and the retired one was not loaded back
        await index.aclose()

    asyncio.run(body())
