"""The RAG index over every SQL backend (SQLite: FTS5 + vectors in process; PostgreSQL: full text + vectors
in process, pgvector in its own test): ensure, replace (idempotent per version, atomic per document),
remove, filters, freshness, search modes, shadow builds and the atomic swap, purge. Embeddings come from
the `hash:` model (no model download; vectors are real bag-of-words vectors)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from keel.rag.index import ChunkIn, DocumentRef, Index, IndexSpec, NoIndex
from keel.rag.search import BadSearch, SearchQuery, parse_filters, parse_freshness, resolve_freshness
from keel.store.open import open_store
from keel.store.protocols import Access, Store
from keel.store.sql import rag_index

SPEC = IndexSpec("hash:64", {"max_tokens": 200})
NOW = time.time()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres), "pgvector"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """SQLite (vectors in process), PostgreSQL without pgvector (in process too), with pgvector (HNSW)."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/keel.db"
    else:
        url = request.getfixturevalue("pg_schema_url" if request.param == "postgres" else "pgvector_schema_url")
    opened = open_store(url)
    try:
        yield opened
    finally:
        opened.close()


def run(store: Store, body: Callable[[Index], Awaitable[None]]) -> None:
    async def main() -> None:
        index = Index(store)
        try:
            await body(index)
        finally:
            await index.aclose()

    asyncio.run(main())


def doc(doc_id: str, version: int = 1, *, tenant: str = "t1", collection: str = "c", **kw: object) -> DocumentRef:
    fields: dict[str, object] = {
        "title": f"title {doc_id}", "metadata": {}, "users": (), "groups": (), "valid_until": None,
        "updated_at": NOW, "source": f"src/{doc_id}",
    } | kw  # fmt: skip
    return DocumentRef(tenant, collection, doc_id, version, **fields)  # type: ignore[arg-type]


def chunks(*texts: str) -> list[ChunkIn]:
    return [ChunkIn(i, t, ("Intro",), f"h{i}{t}", len(t.split())) for i, t in enumerate(texts)]


def q(text: str, **kw: object) -> SearchQuery:
    return SearchQuery("t1", "c", text, **kw)  # type: ignore[arg-type]


def ids(result: object) -> list[str]:
    return [h.document_id for h in result.hits]  # type: ignore[attr-defined]


def test_replace_then_search_in_every_mode(store: Store) -> None:
    async def body(index: Index) -> None:
        build = await index.ensure("t1", "c", SPEC)
        assert await index.ensure("t1", "c", SPEC) == build
        assert await index.replace(doc("a"), chunks("the red fox jumps", "over the lazy dog")) == 2
        await index.replace(doc("b"), chunks("purple bananas grow in winter"))
        for mode in ("hybrid", "lexical", "vector"):
            found = await index.search(q("red fox", mode=mode, top_k=1))
            assert ids(found) == ["a"], mode
            assert found.build == build
        hit = await index.search(q("bananas"))
        assert hit.hits[0].document_id == "b" and hit.hits[0].title == "title b"
        assert hit.hits[0].scores["lexical"] is not None and hit.hits[0].scores["vector"] is not None
        assert "whole tenant" in hit.hits[0].why and hit.hits[0].heading_path == ("Intro",)

    run(store, body)


def test_replace_is_idempotent_per_version_and_a_new_version_replaces(store: Store) -> None:
    async def body(index: Index) -> None:
        await index.ensure("t1", "c", SPEC)
        assert await index.replace(doc("a"), chunks("alpha words")) == 1
        assert await index.replace(doc("a"), chunks("alpha words")) == 0
        await index.search(q("alpha"))  # loads the vectors; the next version must replace them there too
        assert await index.replace(doc("a", 2), chunks("beta words", "gamma words")) == 2
        assert ids(await index.search(q("alpha", mode="vector", top_k=5))) == ["a", "a"]
        texts = [h.text for h in (await index.search(q("alpha beta gamma", top_k=10))).hits]
        assert sorted(texts) == ["beta words", "gamma words"]
        assert await index.remove("t1", "c", "a") == 2
        assert (await index.search(q("beta"))).hits == ()
        assert await index.remove("t1", "c", "a") == 0

    run(store, body)


def test_filters_freshness_and_tenants(store: Store) -> None:
    async def body(index: Index) -> None:
        await index.ensure("t1", "c", SPEC)
        await index.ensure("t2", "c", SPEC)
        await index.replace(doc("x1", metadata={"lang": "en", "year": 2020, "tags": "a"}), chunks("shared words one"))
        await index.replace(doc("x2", metadata={"lang": "fr", "year": 2024}), chunks("shared words two"))
        await index.replace(
            doc("x3", metadata={"lang": "en", "year": "soon"}, valid_until=NOW - 1), chunks("shared three")
        )
        await index.replace(doc("y1", tenant="t2"), chunks("shared words other tenant"))

        async def found(filters: object, **kw: object) -> list[str]:
            return sorted(
                set(ids(await index.search(q("shared words", top_k=20, filters=parse_filters(filters), **kw))))
            )

        assert await found(None) == ["x1", "x2"]  # x3 expired, y1 another tenant's
        assert await found(None, now=NOW - 10) == ["x1", "x2", "x3"]
        assert await found({"lang": "en"}) == ["x1"]
        assert await found({"lang": {"$ne": "en"}}) == ["x2"]
        assert await found({"year": {"$gte": 2021}}) == ["x2"]
        assert await found({"year": {"$lt": 2030}}) == ["x1", "x2"]  # "soon" is no number
        assert await found({"lang": {"$in": ["fr", "de"]}}) == ["x2"]
        assert await found({"lang": {"$nin": ["fr"]}}) == ["x1"]
        assert await found({"tags": {"$exists": True}}) == ["x1"]
        assert await found({"source": "src/x2"}) == ["x2"]
        assert await found({"updated_at": {"$gt": NOW + 1}}) == []
        other = await index.search(SearchQuery("t2", "c", "shared words", top_k=20))
        assert ids(other) == ["y1"]

    run(store, body)


def test_decay_by_age_reorders_and_expired_documents_stay_out(store: Store) -> None:
    day = 86400.0

    async def body(index: Index) -> None:
        await index.ensure("t1", "c", SPEC)
        same = chunks("quarterly revenue report")  # and one title: equal vectors, equal BM25
        await index.replace(doc("old", updated_at=NOW - 60 * day, title="Q"), same)
        await index.replace(doc("new", updated_at=NOW - 1 * day, title="Q"), same)
        await index.replace(doc("gone", updated_at=NOW, valid_until=NOW - 1, title="Q"), same)
        plain = await index.search(q("quarterly revenue", top_k=5, now=NOW))
        assert ids(plain) == ["old", "new"]  # equal scores: the older chunk id first; "gone" expired
        assert plain.hits[0].scores["freshness"] is None
        decayed = await index.search(q("quarterly revenue", top_k=5, now=NOW, half_life_days=30))
        assert ids(decayed) == ["new", "old"]
        old = decayed.hits[1]
        assert abs(old.scores["freshness"] - 0.25) < 1e-6  # type: ignore[operator]  # two half-lives
        assert abs(old.scores["fused"] - plain.hits[0].scores["fused"] * 0.25) < 1e-5  # type: ignore[operator]
        assert "60 days old" in old.why and "half-life 30 days" in old.why
        ahead = await index.search(q("quarterly revenue", top_k=5, now=NOW - 90 * day, half_life_days=30))
        assert [h.scores["freshness"] for h in ahead.hits] == [1.0, 1.0, 1.0]  # dated after "now": no decay
        kept = await index.search(q("quarterly revenue", top_k=5, now=NOW, exclude_expired=False))
        assert ids(kept) == ["old", "new", "gone"]  # expired, yet asked for
        assert "valid until" in kept.hits[2].why
        bad_ones: list[object] = [{"half_life_days": 0}, {"half_life_days": True}, {"days": 3}, 7, {}]
        for bad in [*bad_ones, {"exclude_expired": "no"}, {"half_life_days": "7"}]:
            with pytest.raises(BadSearch):
                parse_freshness(bad)
        assert parse_freshness({"half_life_days": 7}) == {"half_life_days": 7.0} and parse_freshness(None) is None
        collection = parse_freshness({"half_life_days": 30, "exclude_expired": False})
        assert resolve_freshness(None, None) == (None, True)
        assert resolve_freshness(collection, None) == (30.0, False)
        assert resolve_freshness(collection, {"half_life_days": None}) == (None, False)  # no decay, asked
        assert resolve_freshness(collection, {"exclude_expired": True, "half_life_days": 7}) == (7.0, True)

    run(store, body)


def test_shadow_build_gets_writes_and_swaps_at_once(store: Store) -> None:
    async def body(index: Index) -> None:
        old = await index.ensure("t1", "c", SPEC)
        await index.replace(doc("a"), chunks("first document text"))
        shadow = await index.open_shadow("t1", "c", IndexSpec("hash:128", {}))
        await index.replace(doc("b"), chunks("second document text"))  # into both builds
        await index.replace(doc("a"), chunks("first document text"), build=shadow)
        assert (await index.search(q("document"))).build == old
        assert sorted(ids(await index.search(q("document", build=shadow)))) == ["a", "b"]
        await index.activate("t1", "c", shadow)
        result = await index.search(q("document"))
        assert result.build == shadow and result.model == "hash-128@1" and sorted(ids(result)) == ["a", "b"]
        states = {b.id: b.state for b in await index.builds("t1", "c")}
        assert states == {old: "retired", shadow: "active"}
        with pytest.raises(ValueError):
            await index.activate("t1", "c", old)

    run(store, body)


def test_purge_and_no_index(store: Store) -> None:
    async def body(index: Index) -> None:
        with pytest.raises(NoIndex):
            await index.search(q("anything"))
        with pytest.raises(NoIndex):
            await index.replace(doc("a"), chunks("x"))
        await index.ensure("t1", "c", SPEC)
        await index.ensure("t1", "d", SPEC)
        await index.replace(doc("a"), chunks("one", "two"))
        await index.replace(doc("b", collection="d"), chunks("three"))
        assert await index.purge("t1", "c") == 2
        assert await index.builds("t1", "c") == []
        assert len(await index.builds("t1", "d")) == 1
        assert await index.purge("t1") == 1

    run(store, body)


def test_vectors_are_searched_in_the_database_only_with_pgvector(store: Store, request: pytest.FixtureRequest) -> None:
    backend = request.node.callspec.params["store"]

    async def body(index: Index) -> None:
        build = await index.ensure("t1", "c", SPEC)
        await index.replace(doc("a", groups=("g",)), chunks("vectors in the database"))
        await index.replace(doc("b"), chunks("vectors for everyone"))
        model = await index.models.get(SPEC.model)
        qv = (await model.embed(["vectors"]))[0].tobytes()
        found = store.rag_vector_search(build, "c", qv, Access("t1", groups=("g",)), (), NOW, 10)
        if backend != "pgvector":
            assert found is None  # searched in process
            return
        assert found is not None and len(found.ids) == 2
        alone = store.rag_vector_search(build, "c", qv, Access("t1"), (), NOW, 10)
        assert alone is not None and len(alone.ids) == 1  # the access filter inside the database query
        result = await index.search(q("vectors", groups=("g",)))
        assert sorted(ids(result)) == ["a", "b"] and all(h.scores["vector"] is not None for h in result.hits)

    run(store, body)


def test_a_builds_rows_are_read_in_pages_whole_and_in_order(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rag_index, "_VECTOR_PAGE", 3)  # 11 chunks: pages of 3, 3, 3 and 2

    async def body(index: Index) -> None:
        build = await index.ensure("t1", "c", IndexSpec("hash:32", {}))
        for n in range(4):
            await index.replace(doc(f"d{n}"), chunks(*[f"text {n} {i}" for i in range(3 if n < 3 else 2)]))
        everything = await index.run(store.rag_vectors, build, 0)
        assert len(everything.ids) == 11 and list(everything.ids) == sorted(everything.ids)
        assert len(set(everything.texts)) == 11
        since = await index.run(store.rag_vectors, build, everything.ids[4])
        assert list(since.ids) == list(everything.ids[5:])

    run(store, body)
