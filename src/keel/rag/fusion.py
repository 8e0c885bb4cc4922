"""Hybrid fusion: lexical and vector candidates into one ranking.

Chosen by measurement (bench/rag.py, decision 0044-rag-search): a convex combination of the two
scores after normalising each over its candidate list, `alpha·vector + (1 − alpha)·lexical`. Every
candidate gets both scores where it can: a lexical candidate's cosine similarity is computed exactly
(the in-process matrix or pgvector has every vector); a vector candidate the full-text query did not
return scores 0 lexically. Reciprocal rank fusion is here too (`rrf`), for comparison.

Then pseudo-relevance feedback (Rocchio, on vectors): the query vector plus `feedback_weight` times the
mean of the top `feedback` fused chunks' vectors, normalised, scores the same pool again, and the pool is
fused once more. It reorders the candidates, never adds one (so the access filter still holds).

Measured on msmarco-5k (MiniLM, 43 judged queries; bench/rag.py): BM25 0.731, vector 0.798, RRF(60)
0.789, RRF tuned at best 0.801, convex 0.796-0.801 for alpha 0.7-0.85, convex 0.7 + feedback 5x1.0
0.807; tuned on one half of the queries and measured on the other, both halves land 0.80-0.81.

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

    def describe(self) -> str:
        if self.method == "rrf":
            return f"rrf(k={self.k:g}, weights={self.lexical_weight:g}/{self.vector_weight:g})"
        feedback = f", feedback {self.feedback}x{self.feedback_weight:g}" if self.feedback else ""
        return f"convex(alpha={self.alpha:g}; lexical/max, vector min-max{feedback})"


DEFAULT = Fusion()


@dataclass(frozen=True, slots=True)
class Fused:
    id: int
    score: float
    lexical: float | None  # the raw BM25 / ts_rank, when the full-text query returned it
    lexical_rank: int | None  # 1-based
    vector: float | None  # cosine similarity
    vector_rank: int | None


def fuse(
    fusion: Fusion,
    lexical: Sequence[tuple[int, float]],
    vector: Sequence[tuple[int, float]],
    extra_vector: Mapping[int, float] | None = None,
) -> list[Fused]:
    """Fuse two best-first lists of (chunk id, score); `extra_vector` adds cosine scores of lexical
    candidates the vector list did not hold. Best first; ties by chunk id."""
    lex = {cid: (score, rank) for rank, (cid, score) in enumerate(lexical, 1)}
    vec = {cid: (score, rank) for rank, (cid, score) in enumerate(vector, 1)}
    cos = {cid: score for cid, (score, _) in vec.items()} | dict(extra_vector or {})
    ids = list(dict.fromkeys([*(c for c, _ in vector), *(c for c, _ in lexical)]))
    out: list[Fused] = []
    if fusion.method == "rrf":
        for cid in ids:
            score = 0.0
            if cid in lex:
                score += fusion.lexical_weight / (fusion.k + lex[cid][1])
            if cid in vec:
                score += fusion.vector_weight / (fusion.k + vec[cid][1])
            out.append(_fused(cid, score, lex, vec, cos))
    else:
        top_lex = max((s for s, _ in lex.values()), default=0.0)
        lo, hi = (min(cos.values()), max(cos.values())) if cos else (0.0, 0.0)
        for cid in ids:
            l_norm = lex[cid][0] / top_lex if cid in lex and top_lex > 0 else 0.0
            v_norm = (cos[cid] - lo) / (hi - lo) if cid in cos and hi > lo else (1.0 if cid in cos else 0.0)
            out.append(_fused(cid, fusion.alpha * v_norm + (1 - fusion.alpha) * l_norm, lex, vec, cos))
    out.sort(key=lambda f: (-f.score, f.id))
    return out


def _fused(
    cid: int,
    score: float,
    lex: Mapping[int, tuple[float, int]],
    vec: Mapping[int, tuple[float, int]],
    cos: Mapping[int, float],
) -> Fused:
    lexical = lex.get(cid)
    ranked = vec.get(cid)
    return Fused(
        cid,
        score,
        lexical[0] if lexical else None,
        lexical[1] if lexical else None,
        cos.get(cid),
        ranked[1] if ranked else None,
    )
