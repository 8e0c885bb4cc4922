"""A build's in-process index handed over as arrays (keel.rag.index_export) answers as the index it was
made from: the same vectors, BM25, feedback terms and cosine for any query, before and after rows are
written to it here (new words and known ones, numbered by the other process's vocabulary); and the
subprocess, run for real on a SQLite store, hands over what loading in this process would give."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import numpy as np

from keel.rag.index import ChunkIn, DocumentRef, Index, IndexSpec
from keel.rag.index_export import ExportFailed, build_elsewhere, load, save
from keel.rag.index_terms import Tokens
from keel.rag.index_vectors import BuildVectors
from keel.store.open import open_store
from keel.store.protocols.rag_index import VectorRows

WORDS = [f"w{i}x" for i in range(80)]
DIM = 16


def _rows(rng: random.Random, first: int, n: int, words: list[str]) -> VectorRows:
    vectors = rng_vectors(rng, n)
    texts = [" ".join(rng.choices(words, k=rng.randint(1, 25))) for _ in range(n)]
    ids = list(range(first, first + n))
    return VectorRows(ids, [i // 3 for i in ids], [1] * n, [v.tobytes() for v in vectors], texts)


def rng_vectors(rng: random.Random, n: int, dim: int = DIM) -> np.ndarray:
    v = np.asarray([[rng.gauss(0, 1) for _ in range(dim)] for _ in range(n)], dtype=np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _same_answers(a: BuildVectors, b: BuildVectors, rng: random.Random) -> None:
    assert a.n == b.n and a.last == b.last
    for _ in range(40):
        query = rng.sample(WORDS, rng.randint(1, 4))
        admitted = np.asarray([rng.random() < 0.5 for _ in range(a.n)])
        la, lb = a.lexical(query, admitted, 20), b.lexical(query, admitted, 20)
        assert la.ids == lb.ids and np.allclose(la.scores, lb.scores)
        vector = rng_vectors(rng, 1, a.dim)[0]
        assert a.top(vector, admitted, 10).ids == b.top(vector, admitted, 10).ids
        pool = sorted(rng.sample(range(1, a.n + 1), 30))
        assert a.bm25(query, pool, pool[:3], 5, 0.5) == b.bm25(query, pool, pool[:3], 5, 0.5)
        assert a.similarity(pool, vector) == b.similarity(pool, vector)


def test_a_build_saved_and_loaded_answers_as_the_original_also_after_new_rows(tmp_path: Path) -> None:
    rng = random.Random(3)
    original = BuildVectors(DIM, Tokens())
    original.extend(_rows(rng, 1, 300, WORDS[:60]))
    original.extend(_rows(rng, 301, 50, WORDS[:60]))  # two blocks, as a build read in two goes
    save(original, tmp_path)
    handed = load(tmp_path)
    _same_answers(original, handed, random.Random(4))
    for first, n in ((351, 40), (391, 7)):  # written after the hand-over: words known there and new ones
        more = _rows(rng, first, n, WORDS)
        original.extend(more)
        handed.extend(more)
    _same_answers(original, handed, random.Random(5))


def test_the_subprocess_hands_over_the_build_a_search_would_load(tmp_path: Path) -> None:
    async def body() -> None:
        url = f"sqlite:///{tmp_path}/keel.db"
        store = open_store(url)
        index = Index(store)
        build = await index.ensure("t1", "kb", IndexSpec("hash:32", {}))
        rng = random.Random(6)
        for n in range(40):
            ref = DocumentRef("t1", "kb", f"d{n}", 1, f"doc {n}", {}, (), (), None, 0.0, "test")
            await index.replace(
                ref, [ChunkIn(i, " ".join(rng.choices(WORDS, k=12)), (), f"{n}-{i}", 12) for i in range(3)]
            )
        here = await index.vectors.current(build, 32)
        handed = await asyncio.to_thread(build_elsewhere, url, build, 32)
        _same_answers(here, handed, random.Random(7))
        await index.aclose()
        store.close()

    asyncio.run(body())


def test_a_subprocess_that_cannot_read_the_build_fails_without_showing_the_url(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/none/keel.db"  # no such folder
    try:
        build_elsewhere(url, "b_x", 32)
    except ExportFailed as exc:
        assert str(exc) and url not in str(exc)
    else:
        raise AssertionError("the export of a build that cannot be read succeeded")
