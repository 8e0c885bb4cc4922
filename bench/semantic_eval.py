"""How well the local embedding model tells "same question" from "different question": the semantic cache's quality.

    python bench/semantic_eval.py                    # tune a threshold, report it on held-out pairs
    python bench/semantic_eval.py --threshold 0.95   # evaluate a given threshold instead

Data (read in place, never copied): PAWS-Wiki dev (/work/shared/data/paraphrase/paws-wiki/dev.tsv, 8,000
human-labelled pairs whose negatives are mostly word swaps) and the 50 real MS MARCO user queries
(/work/shared/data/retrieval/msmarco-5k/queries.jsonl; every pair of distinct queries is a different question).

Honest threshold: PAWS pairs with odd ids tune, even ids are held out. The recommended threshold is the lowest
whose false-hit rate (share of negatives at or above it) on the tuning half is at most --max-false-hits; every
reported figure comes from the held-out half or from the MS MARCO queries, which nothing was tuned on. Each
figure is shown for similarity alone and for similarity plus `keel.embedding.model.verify` (the cheap lexical check).
Vectors are cached in the temp directory per model id and encoder source, so reruns take seconds.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from keel.embedding import model as embedder_module
from keel.embedding.model import LocalEmbedder, verify

PAWS = Path("/work/shared/data/paraphrase/paws-wiki/dev.tsv")
QUERIES = Path("/work/shared/data/retrieval/msmarco-5k/queries.jsonl")


@dataclass
class Pairs:
    ids: np.ndarray  # int
    first: list[str]
    second: list[str]
    labels: np.ndarray  # bool: paraphrase
    similarity: np.ndarray  # cosine of the two embeddings
    verified: np.ndarray  # bool: verify(first, second)

    def part(self, mask: np.ndarray) -> Pairs:
        pick = np.flatnonzero(mask)
        return Pairs(
            self.ids[pick],
            [self.first[i] for i in pick],
            [self.second[i] for i in pick],
            self.labels[pick],
            self.similarity[pick],
            self.verified[pick],
        )


def embed_cached(embedder: LocalEmbedder, texts: list[str], name: str) -> np.ndarray:
    """Embeddings of `texts`, kept in the temp directory under the model id and a digest of the texts."""
    import hashlib

    code = Path(embedder_module.__file__).read_bytes()  # a change to the encoder invalidates the cache too
    digest = hashlib.sha256(code + "\n".join(texts).encode()).hexdigest()[:12]
    path = Path(tempfile.gettempdir()) / f"keel-semantic-eval-{embedder.model_id}-{name}-{digest}.npy"
    if path.exists():
        return np.load(path)
    started = time.perf_counter()
    vectors = embedder.embed(texts)
    print(f"embedded {len(texts)} {name} texts in {time.perf_counter() - started:.0f} s")
    np.save(path, vectors)
    return vectors


def load_paws(embedder: LocalEmbedder) -> Pairs:
    rows = [line.split("\t") for line in PAWS.read_text(encoding="utf-8").splitlines()[1:]]
    first, second = [r[1] for r in rows], [r[2] for r in rows]
    vectors = embed_cached(embedder, first + second, "paws")
    a, b = vectors[: len(rows)], vectors[len(rows) :]
    return Pairs(
        ids=np.array([int(r[0]) for r in rows]),
        first=first,
        second=second,
        labels=np.array([r[3].strip() == "1" for r in rows]),
        similarity=(a * b).sum(axis=1),
        verified=np.array([verify(x, y) for x, y in zip(first, second, strict=True)]),
    )


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve = P(positive scores above negative), by ranks (Mann–Whitney U), ties averaged."""
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    average_rank = ends - (counts - 1) / 2.0  # 1-based mean rank of each distinct value
    ranks = average_rank[inverse]
    positives, negatives = int(labels.sum()), int((~labels).sum())
    return float((ranks[labels].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def lowest_threshold(similarity: np.ndarray, negatives: np.ndarray, max_false_hits: float) -> float:
    """The lowest threshold (to 3 decimals, rounded up) with at most `max_false_hits` of these negatives at or above it."""
    scores = np.sort(similarity[negatives])[::-1]
    allowed = math.floor(max_false_hits * len(scores))  # negatives that may sit at or above the threshold
    threshold = (
        math.ceil(float(np.nextafter(scores[allowed], np.float32(2))) * 1000) / 1000 if allowed < len(scores) else 0.0
    )
    while (similarity[negatives] >= threshold).mean() > max_false_hits:  # 3-decimal rounding met a tie
        threshold += 0.001
    return round(threshold, 3)


def scores_at(pairs: Pairs, threshold: float, with_verify: bool) -> dict[str, float]:
    hit = pairs.similarity >= threshold
    if with_verify:
        hit &= pairs.verified
    positives, negatives = pairs.labels, ~pairs.labels
    true_hits = int((hit & positives).sum())
    precision = true_hits / max(int(hit.sum()), 1)
    recall = true_hits / max(int(positives.sum()), 1)
    return {
        "precision": precision,
        "recall": recall,
        "f1": 2 * precision * recall / max(precision + recall, 1e-12),
        "false_hits": float((hit & negatives).sum() / max(int(negatives.sum()), 1)),
        "hits": float(hit.sum()),
    }


def query_pairs(embedder: LocalEmbedder) -> tuple[list[tuple[str, str]], np.ndarray, np.ndarray]:
    """Every pair of distinct MS MARCO queries: (texts, cosine, verify)."""
    queries = [json.loads(line)["text"] for line in QUERIES.read_text(encoding="utf-8").splitlines() if line.strip()]
    vectors = embed_cached(embedder, queries, "msmarco-queries")
    pairs = list(itertools.combinations(range(len(queries)), 2))
    similarity = np.array([float(vectors[i] @ vectors[j]) for i, j in pairs])
    verified = np.array([verify(queries[i], queries[j]) for i, j in pairs])
    return [(queries[i], queries[j]) for i, j in pairs], similarity, verified


def row(label: str, threshold: float, s: dict[str, float]) -> str:
    return (
        f"  {label:<22}{threshold:>9.3f}{s['precision']:>11.3f}{s['recall']:>9.3f}{s['f1']:>7.3f}"
        f"{s['false_hits'] * 100:>11.2f}%{int(s['hits']):>7}"
    )


def report_paws(paws: Pairs, thresholds: dict[bool, float], tuned: bool) -> None:
    tune, held = paws.part(paws.ids % 2 == 1), paws.part(paws.ids % 2 == 0)
    print(
        f"PAWS-Wiki dev: {len(paws.ids)} pairs, {int(paws.labels.sum())} paraphrases; tuning half = odd ids ({len(tune.ids)}), held-out = even ids ({len(held.ids)})"
    )
    print(
        f"ROC-AUC of cosine similarity: held-out {roc_auc(held.similarity, held.labels):.3f}, tuning {roc_auc(tune.similarity, tune.labels):.3f}"
    )
    print(
        f"verify() passes {held.verified[held.labels].mean():.1%} of held-out paraphrases and {held.verified[~held.labels].mean():.1%} of held-out negatives"
    )
    how = "tuned on the tuning half" if tuned else "given"
    print(f"\nat the threshold ({how}), on the held-out half:")
    print(f"  {'':<22}{'threshold':>9}{'precision':>11}{'recall':>9}{'F1':>7}{'false hits':>12}{'hits':>7}")
    for with_verify, label in ((False, "similarity"), (True, "similarity + verify")):
        print(row(label, thresholds[with_verify], scores_at(held, thresholds[with_verify], with_verify)))
    print("\nsweep, held-out half (recall = share of paraphrases hit; false hits = share of negatives hit):")
    print(f"  {'threshold':>9}{'recall':>9}{'false hits':>12}{'recall+v':>10}{'false hits+v':>14}")
    for threshold in (0.80, 0.85, 0.90, 0.93, 0.95, 0.97, 0.98, 0.99):
        plain, gated = scores_at(held, threshold, False), scores_at(held, threshold, True)
        print(
            f"  {threshold:>9.2f}{plain['recall']:>9.3f}{plain['false_hits'] * 100:>11.2f}%{gated['recall']:>10.3f}{gated['false_hits'] * 100:>13.2f}%"
        )


def report_queries(embedder: LocalEmbedder, thresholds: dict[bool, float]) -> None:
    texts, similarity, verified = query_pairs(embedder)
    top = int(similarity.argmax())
    print(f"\nMS MARCO: {len(texts)} pairs of distinct real user queries (all different questions)")
    print(f"  max similarity {similarity[top]:.3f}: {texts[top][0]!r} vs {texts[top][1]!r}")
    print(f"  pairs above 0.8: {int((similarity >= 0.8).sum())}, above 0.9: {int((similarity >= 0.9).sum())}")
    for with_verify, label in ((False, "similarity"), (True, "similarity + verify")):
        hit = similarity >= thresholds[with_verify]
        if with_verify:
            hit &= verified
        print(f"  {label:<22} at {thresholds[with_verify]:.3f}: {int(hit.sum())} false hits ({hit.mean():.2%})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threshold", type=float, help="evaluate this threshold instead of tuning one")
    parser.add_argument("--max-false-hits", type=float, default=0.01, help="false-hit budget on the tuning half (0.01)")
    args = parser.parse_args()
    embedder = LocalEmbedder()
    paws = load_paws(embedder)
    tune = paws.part(paws.ids % 2 == 1)
    negatives = ~tune.labels
    recommended = {
        False: lowest_threshold(tune.similarity, negatives, args.max_false_hits),
        True: lowest_threshold(np.where(tune.verified, tune.similarity, -1.0), negatives, args.max_false_hits),
    }
    chosen = dict.fromkeys((False, True), args.threshold) if args.threshold is not None else recommended
    report_paws(paws, chosen, tuned=args.threshold is None)
    report_queries(embedder, chosen)
    budget = f"≤ {args.max_false_hits:.0%} false hits on the tuning half"
    print(f"\nrecommended default threshold: {recommended[True]:.3f} with verify() on each candidate ({budget})")
    print(f"  similarity alone would need {recommended[False]:.3f} for the same budget")


if __name__ == "__main__":
    main()
