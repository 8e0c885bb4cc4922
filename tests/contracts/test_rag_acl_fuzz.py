"""ACL fuzz on every SQL backend: 200 random documents of two tenants with random access lists, 500
random queries by random users and groups (halfway, 50 documents get new versions with new access
lists and expiries; a sixth of the documents are past their valid_until). Zero results a caller may not see, and what the index returns equals a brute-force reference:
in vector mode the exact top-k by cosine among the admitted chunks, in lexical mode exactly the admitted
chunks holding a query word, in hybrid mode the admitted chunks (the candidate lists cover them all;
beyond top_k, top_k of them)."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from keel.rag.index import ChunkIn, DocumentRef, Index, IndexSpec, embed_text
from keel.rag.search import SearchQuery
from keel.store.open import open_store
from keel.store.protocols import Store

USERS = [f"user{i}" for i in range(8)]
GROUPS = [f"grp{i}" for i in range(5)]
WORDS = [f"zx{i}q" for i in range(40)]  # no stemmer or stopword list touches these
TENANTS = ("acme", "globex")
SPEC = IndexSpec("hash:64", {})


@dataclass
class Doc:
    ref: DocumentRef
    chunks: list[ChunkIn]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres), "pgvector", "pgvector-held"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """SQLite (vectors in process), PostgreSQL without pgvector (in process too), with pgvector (HNSW and
    full text in the database), and with pgvector where the builds fit `in_process_mb` (in process)."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/keel.db"
    else:
        url = request.getfixturevalue("pg_schema_url" if request.param == "postgres" else "pgvector_schema_url")
    opened = open_store(url)
    try:
        yield opened
    finally:
        opened.close()


def random_doc(rng: random.Random, n: int, version: int = 1, tenant: str | None = None) -> Doc:
    tenant = tenant or rng.choice(TENANTS)
    shared = rng.random() < 0.25
    users = () if shared else tuple(rng.sample(USERS, rng.randint(0, 2)))
    groups = () if shared else tuple(rng.sample(GROUPS, rng.randint(0 if users else 1, 2)))
    valid_until = rng.choice([None, None, None, None, time.time() + 3600, time.time() - 3600])  # a sixth expired
    ref = DocumentRef(tenant, "c", f"d{n}", version, f"doc {n}", {}, users, groups, valid_until, time.time(), "fuzz")
    chunks = [
        ChunkIn(i, " ".join(rng.choices(WORDS, k=rng.randint(3, 8))), (), f"{n}-{version}-{i}", 5)
        for i in range(rng.randint(1, 3))
    ]
    return Doc(ref, chunks)


def may_read(doc: DocumentRef, tenant: str, user: str | None, groups: set[str]) -> bool:
    if doc.tenant != tenant or (doc.valid_until is not None and doc.valid_until <= time.time()):
        return False
    if not doc.users and not doc.groups:
        return True
    return (user is not None and user in doc.users) or bool(groups & set(doc.groups))


@pytest.mark.timeout(300)  # 1,500 searches and 250 writes: on a busy PostgreSQL this passes a minute
def test_acl_fuzz_zero_leaks_and_brute_force_equal(store: Store, request: pytest.FixtureRequest) -> None:
    rng = random.Random(20261203)
    kind = request.node.callspec.params["store"]
    in_database = kind == "pgvector"  # pgvector-held: in process while it fits; elsewhere always in process

    async def body() -> None:
        index = Index(store, in_process_mb={"pgvector-held": 64}.get(kind, 0))
        model = await index.models.get(SPEC.model)
        for tenant in TENANTS:
            await index.ensure(tenant, "c", SPEC)
        docs: dict[tuple[str, str], Doc] = {}
        vectors: dict[tuple[str, str, int], np.ndarray] = {}

        async def put(doc: Doc) -> None:
            await index.replace(doc.ref, doc.chunks)
            docs[(doc.ref.tenant, doc.ref.document_id)] = doc
            rows = await model.embed([embed_text(doc.ref.title, c) for c in doc.chunks])
            for c, row in zip(doc.chunks, rows, strict=True):
                vectors[(doc.ref.tenant, doc.ref.document_id, c.ordinal)] = row

        for n in range(200):
            await put(random_doc(rng, n))
        assert [await index.hold(t, "c") for t in TENANTS] == [not in_database] * len(TENANTS)
        checked = leaks = 0
        for q in range(500):
            if q == 250:  # new versions, new access lists and expiries: the old ones must stop admitting at once
                for key in rng.sample(sorted(docs), 50):
                    old = docs[key].ref
                    await put(random_doc(rng, int(old.document_id[1:]), old.version + 1, old.tenant))
            tenant = rng.choice(TENANTS)
            user = rng.choice([None, *USERS])
            groups = set(rng.sample(GROUPS, rng.randint(0, 2)))
            words = rng.sample(WORDS, rng.randint(1, 3))
            text = " ".join(words)
            admitted = {
                (d.ref.document_id, c.ordinal): c
                for d in docs.values()
                if may_read(d.ref, tenant, user, groups)
                for c in d.chunks
            }
            base = SearchQuery(tenant, "c", text, user=user, groups=tuple(sorted(groups)), candidates=1000)
            for mode in ("vector", "lexical", "hybrid"):
                top_k = 10 if mode == "vector" else 100
                result = await index.search(
                    SearchQuery(**{**_fields(base), "mode": mode, "top_k": top_k})  # type: ignore[arg-type]
                )
                got = [(h.document_id, h.ordinal) for h in result.hits]
                assert (result.searched == "database") is in_database
                leaks += sum(1 for g in got if g not in admitted)
                if mode == "vector":
                    qv = (await model.embed([text]))[0]
                    scored = sorted(admitted, key=lambda k: (-float(vectors[(tenant, *k)] @ qv), k))
                    expect = scored[:top_k]
                    assert _same_ranking(got, expect, vectors, tenant, qv), (q, got, expect)
                elif mode == "lexical":
                    holding = {k for k, c in admitted.items() if set(words) & set(c.text.split())}
                    assert _covers(got, holding, top_k), (q, mode)
                else:
                    assert _covers(got, set(admitted), top_k), (q, mode)
                checked += 1
        assert leaks == 0 and checked == 1500
        await index.aclose()

    asyncio.run(body())


def _covers(got: list[tuple[str, int]], wanted: set[tuple[str, int]], top_k: int) -> bool:
    """All of `wanted` when it fits in top_k, else top_k distinct members of it."""
    return len(set(got)) == len(got) == min(top_k, len(wanted)) and set(got) <= wanted


def _fields(q: SearchQuery) -> dict[str, object]:
    return {name: getattr(q, name) for name in q.__dataclass_fields__}


def _same_ranking(
    got: list[tuple[str, int]],
    expect: list[tuple[str, int]],
    vectors: dict[tuple[str, str, int], np.ndarray],
    tenant: str,
    qv: np.ndarray,
) -> bool:
    """Equal lists, or lists whose scores are equal position by position (ties may order either way)."""
    if got == expect:
        return True
    if len(got) != len(expect):
        return False
    score = [float(vectors[(tenant, *k)] @ qv) for k in got]
    best = [float(vectors[(tenant, *k)] @ qv) for k in expect]
    return all(abs(a - b) < 1e-5 for a, b in zip(score, best, strict=True))
