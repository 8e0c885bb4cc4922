"""Retrieval quality: nDCG@10, Recall@10/100 and MRR@10 of ranked document ids against graded judgements.

Gains are the judgement grades themselves (linear, as BEIR's pytrec_eval computes nDCG); a document is
relevant for recall and MRR when its grade is ≥ 1. Queries without judgements are skipped; a query with
judgements and no results counts as 0. Queries are read as BEIR's JSON lines (`_id`, `text`), judgements
as TSV (`query-id`, `corpus-id`, `score`; a header line is skipped).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import orjson

Run = Mapping[str, Sequence[str]]  # query id → document ids, best first
Qrels = Mapping[str, Mapping[str, int]]  # query id → document id → grade


@dataclass(frozen=True, slots=True)
class Scores:
    ndcg10: float
    recall10: float
    recall100: float
    mrr10: float
    queries: int

    def row(self) -> str:
        return (
            f"nDCG@10 {self.ndcg10:.3f}  Recall@10 {self.recall10:.3f}  Recall@100 {self.recall100:.3f}"
            f"  MRR@10 {self.mrr10:.3f}  ({self.queries} queries)"
        )


def score(run: Run, qrels: Qrels, only: Iterable[str] | None = None) -> Scores:
    keep = set(only) if only is not None else None
    totals = [0.0, 0.0, 0.0, 0.0]
    n = 0
    for qid, judged in qrels.items():
        if keep is not None and qid not in keep:
            continue
        relevant = {d for d, g in judged.items() if g > 0}
        if not relevant:
            continue
        ranked = list(dict.fromkeys(run.get(qid, ())))
        n += 1
        totals[0] += ndcg(ranked[:10], judged)
        totals[1] += len(relevant & set(ranked[:10])) / len(relevant)
        totals[2] += len(relevant & set(ranked[:100])) / len(relevant)
        totals[3] += next((1 / (i + 1) for i, d in enumerate(ranked[:10]) if d in relevant), 0.0)
    if n == 0:
        return Scores(0.0, 0.0, 0.0, 0.0, 0)
    return Scores(totals[0] / n, totals[1] / n, totals[2] / n, totals[3] / n, n)


def ndcg(ranked: Sequence[str], judged: Mapping[str, int]) -> float:
    dcg = sum(judged.get(d, 0) / math.log2(i + 2) for i, d in enumerate(ranked))
    ideal = sorted((g for g in judged.values() if g > 0), reverse=True)[: len(ranked) or 10]
    best = sum(g / math.log2(i + 2) for i, g in enumerate(ideal))
    return dcg / best if best > 0 else 0.0


def read_queries(path: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for n, line in enumerate(path.read_bytes().splitlines(), 1):
        if not line.strip():
            continue
        row = orjson.loads(line)
        if not isinstance(row, dict) or "text" not in row or ("_id" not in row and "id" not in row):
            raise ValueError(f"{path}:{n}: a query line is an object with _id and text")
        out[str(row.get("_id", row.get("id")))] = str(row["text"])
    return out


def read_qrels(path: Path) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        parts = line.split("\t") if "\t" in line else line.split()
        if not parts or not line.strip():
            continue
        if len(parts) == 4:  # TREC: query 0 doc grade
            parts = [parts[0], parts[2], parts[3]]
        if len(parts) != 3:
            raise ValueError(f"{path}:{n}: a judgement is query-id, corpus-id, score")
        try:
            grade = int(float(parts[2]))
        except ValueError:
            if n == 1:
                continue  # a header line
            raise ValueError(f"{path}:{n}: the score {parts[2]!r} is no number") from None
        out.setdefault(parts[0], {})[parts[1]] = grade
    return out
