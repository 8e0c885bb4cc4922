"""BM25 in process (keel.rag.index_terms) against the formula computed plainly, row by row: the same
scores for every admitted row holding a query word, none for the others, blocks of rows loaded in any
sizes giving the same index; and term feedback picks the top chunks' distinctive words."""

from __future__ import annotations

import math
import random
from collections import Counter

import numpy as np

from keel.rag import index_terms
from keel.rag.index_terms import BuildTerms, Tokens

WORDS = [f"w{i}x" for i in range(60)]


def _brute(texts: list[str], query: list[str], admitted: np.ndarray) -> dict[int, float]:
    docs = [t.split() for t in texts]
    average = sum(map(len, docs)) / len(docs)
    out: dict[int, float] = {}
    for row, words in enumerate(docs):
        if not admitted[row] or not set(query) & set(words):
            continue
        tf, score = Counter(words), 0.0
        for term in dict.fromkeys(query):
            if tf[term]:
                df = sum(1 for d in docs if term in d)
                idf = math.log(1 + (len(docs) - df + 0.5) / (df + 0.5))
                k1, b = index_terms.K1, index_terms.B
                score += idf * tf[term] * (k1 + 1) / (tf[term] + k1 * (1 - b + b * len(words) / average))
        out[row] = score
    return out


def test_bm25_equals_the_formula_over_admitted_rows_only() -> None:
    rng = random.Random(7)
    texts = [" ".join(rng.choices(WORDS, k=rng.randint(1, 30))) for _ in range(400)]
    tokens = Tokens()
    terms = BuildTerms(tokens)
    at = 0
    while at < len(texts):  # rows arrive in blocks of any size, as searches read what was written since
        step = rng.randint(1, 50)
        terms.extend(texts[at : at + step])
        at += step
    ids = np.arange(1000, 1000 + len(texts), dtype=np.int64)
    assert all(terms.row_terms(r).tolist() == tokens(texts[r]) for r in range(len(texts)))  # across blocks
    for _ in range(50):
        query = rng.sample(WORDS, rng.randint(1, 4))
        admitted = np.asarray([rng.random() < 0.3 for _ in texts])
        expect = _brute(texts, query, admitted)
        got = terms.top(query, admitted, ids, len(texts))
        assert {i - 1000 for i in got.ids} == set(expect)
        for cid, score in zip(got.ids, got.scores, strict=True):
            assert abs(score - expect[cid - 1000]) < 1e-4
        assert list(got.scores) == sorted(got.scores, reverse=True)
        pool = np.flatnonzero(admitted)[::3]
        at = terms.scores_at(dict.fromkeys(terms.terms(query), 1.0), pool)
        assert np.allclose(at, [expect.get(int(r), 0.0) for r in pool], atol=1e-4)
        best = terms.top(query, admitted, ids, 5)
        assert list(best.ids) == list(got.ids[:5]) or [round(s, 4) for s in best.scores] == [
            round(s, 4) for s in got.scores[:5]
        ]


def test_words_are_stemmed_alike_in_texts_and_queries() -> None:
    terms = BuildTerms(Tokens())
    terms.extend(["Running shoes for runners", "a quiet evening", "the runner runs"])
    ids = np.asarray([1, 2, 3], dtype=np.int64)
    found = terms.top(["running"], np.ones(3, dtype=bool), ids, 10)
    assert set(found.ids) == {1, 3}  # run, running, runs: one stem


def test_feedback_terms_are_the_top_chunks_distinctive_words() -> None:
    terms = BuildTerms(Tokens())
    corpus = ["apple orchard harvest season", "apple pie recipe", "orchard harvest tools", "city traffic report"]
    terms.extend(corpus * 3)
    asked = terms.terms(["apple"])
    assert terms.row_terms(9).tolist() == terms.terms(["apple", "pie", "recipe"])  # the forward index
    chosen = terms.feedback([0], asked, 2)
    season, orchard = terms.terms(["season", "orchard"])
    assert chosen.keys() == {season, orchard}  # rarest first; orchard and harvest tie: the first seen
    assert chosen[season] == 1.0 and abs(chosen[orchard] - math.log(1 + 6.5 / 6.5) / math.log(1 + 9.5 / 3.5)) < 1e-9
    assert terms.feedback([3], terms.terms(["city", "traffic", "report"]), 5) == {}
