"""Hybrid fusion: lexical and vector candidates into one ranking.

Chosen by measurement (bench/rag.py, decision 0044-rag-search): a convex combination of the two
scores after normalising each over its candidate list, `alpha·vector + (1 − alpha)·lexical`. Every
candidate gets both scores where it can: a lexical candidate's cosine similarity is computed exactly
(the in-process matrix or pgvector has every vector); a vector candidate the full-text query did not
return scores 0 lexically. Reciprocal rank fusion is here too (`rrf`), for comparison.

Then pseudo-relevance feedback from the top `feedback` fused chunks, on both sides: the query vector
plus `feedback_weight` times their vectors' mean, normalised (Rocchio), and, where BM25 runs in process,
the full-text query plus their best `feedback_terms` terms at `feedback_terms_weight` (RM3; Anserini's
defaults, 10 terms and 0.5). The same pool is scored again on both and fused once more: feedback
reorders the candidates, never adds one (so the access filter still holds).

Measured on msmarco-5k (MiniLM, 43 judged queries; bench/rag.py): BM25 0.733 (k1 0.9, b 0.4), vector
0.798, RRF(60) 0.789-0.796, convex 0.7 0.797, + vector feedback 0.812, + term feedback 0.821 (odd/even
halves 0.841/0.800). Neighbouring settings (alpha 0.6-0.8, 3-10 feedback chunks, 10-20 terms at
0.3-1.0) all land 0.816-0.826: the defaults are the textbook ones, not this set's best.

Normalisation: BM25 by its maximum in the list (scale-free: query length and IDF change BM25's range),
cosine by min-max over the list. Both are in [0, 1] afterwards.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

Method = Literal["convex", "rrf"]


@dataclass(frozen=True, slots=True)
class Fusion:
    method: Method = "convex"
    alpha: float = 0.7  # convex: the vector score's weight
    k: float = 60.0  # rrf: rank offset
    lexical_weight: float = 1.0  # rrf: weights per list
    vector_weight: float = 1.0
    feedback: int = 5  # pseudo-relevance feedback: the query vector moves toward the top fused chunks' ...
    feedback_weight: float = 1.0  # ... mean (Rocchio), then the pool is scored again; 0 chunks: off
    feedback_terms: int = 10  # and the full-text query gains the top chunks' best terms (RM3), ...
    feedback_terms_weight: float = 0.5  # ... at this weight beside the query's own (in process only)

    def describe(self) -> str:
        if self.method == "rrf":
            return f"rrf(k={self.k:g}, weights={self.lexical_weight:g}/{self.vector_weight:g})"
        feedback = f", feedback {self.feedback}x{self.feedback_weight:g}" if self.feedback else ""
        if self.feedback and self.feedback_terms:
            feedback += f" + {self.feedback_terms} terms x{self.feedback_terms_weight:g}"
        return f"convex(alpha={self.alpha:g}; lexical/max, vector min-max{feedback})"


DEFAULT = Fusion()


@dataclass(frozen=True, slots=True)
class Fused:
    id: int
    score: float
    lexical: float | None  # the raw BM25 / ts_rank, when known (returned by full text, or computed in process)
    lexical_rank: int | None  # 1-based
    vector: float | None  # cosine similarity
    vector_rank: int | None


def fuse(
    fusion: Fusion,
    lexical: Sequence[tuple[int, float]],
    vector: Sequence[tuple[int, float]],
    extra_vector: Mapping[int, float] | None = None,
    extra_lexical: Mapping[int, float] | None = None,
) -> list[Fused]:
    """Fuse two best-first lists of (chunk id, score); `extra_vector` adds cosine scores of lexical
    candidates the vector list did not hold, `extra_lexical` BM25 scores of vector candidates the
    lexical list did not hold (or of every candidate, in place of the list's, after feedback). Best
    first; ties by chunk id."""
    lex = {cid: (score, rank) for rank, (cid, score) in enumerate(lexical, 1)}
    vec = {cid: (score, rank) for rank, (cid, score) in enumerate(vector, 1)}
    cos = {cid: score for cid, (score, _) in vec.items()} | dict(extra_vector or {})
    bm = {cid: score for cid, (score, _) in lex.items()} | dict(extra_lexical or {})
    ids = list(dict.fromkeys([*(c for c, _ in vector), *(c for c, _ in lexical)]))
    out: list[Fused] = []
    if fusion.method == "rrf":
        for cid in ids:
            score = 0.0
            if cid in lex:
                score += fusion.lexical_weight / (fusion.k + lex[cid][1])
            if cid in vec:
                score += fusion.vector_weight / (fusion.k + vec[cid][1])
            out.append(_fused(cid, score, lex, vec, cos, bm))
    else:
        top_lex = max(bm.values(), default=0.0)
        lo, hi = (min(cos.values()), max(cos.values())) if cos else (0.0, 0.0)
        for cid in ids:
            l_norm = bm[cid] / top_lex if cid in bm and top_lex > 0 else 0.0
            v_norm = (cos[cid] - lo) / (hi - lo) if cid in cos and hi > lo else (1.0 if cid in cos else 0.0)
            out.append(_fused(cid, fusion.alpha * v_norm + (1 - fusion.alpha) * l_norm, lex, vec, cos, bm))
    out.sort(key=lambda f: (-f.score, f.id))
    return out


def _fused(
    cid: int,
    score: float,
    lex: Mapping[int, tuple[float, int]],
    vec: Mapping[int, tuple[float, int]],
    cos: Mapping[int, float],
    bm: Mapping[int, float],
) -> Fused:
    lexical = lex.get(cid)
    ranked = vec.get(cid)
    return Fused(
        cid,
        score,
        bm.get(cid),
        lexical[1] if lexical else None,
        cos.get(cid),
        ranked[1] if ranked else None,
    )
