"""How well the semantic cache tells "same question" from "different question", on both dev sets side by side.

    python bench/semantic_eval.py                  # the report (embeddings cached under $TMPDIR/keel-semantic)
    python bench/semantic_eval.py --fit            # also refit the pair scorer and print WEIGHTS for keel/cache/pair.py
    python bench/semantic_eval.py --max-false-hits 0.005
    python bench/semantic_eval.py --runtime onnx-int8   # another LocalEmbedder runtime (int8: its own model id)

Data (read in place, never copied): PAWS-Wiki dev (/work/shared/data/paraphrase/paws-wiki/dev.tsv, 8,000 pairs whose
negatives are mostly word swaps) and QQP dev (/work/shared/data/paraphrase/qqp-dev/pairs.tsv, 11,674 real Quora
question pairs). Each set is split by id parity: odd ids tune, even ids are held out. A threshold is chosen on a
tuning half as `keel cache calibrate` chooses it: the lowest whose false-hit rate (share of negatives served) is within
the budget at the upper end of its Wilson 95% interval (`--measured`: the rate itself), and reported on the held-out
half of the same set and on the other set ("cross"). The pair scorer is fitted on tuning halves only.

Decisions compared, each as "serve when score ≥ threshold":
  cosine        the embeddings' cosine similarity alone
  old verify    cosine, and the previous `verify` (0 when it fails): the shipped behaviour before this change
  verify        cosine, and keel.cache.pair.verify (repeated words, conjunct swaps fixed)
  scorer        keel.cache.pair.adjusted: cosine plus the logistic scorer's lexical evidence, in cosine units
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from keel.cache import calibrate, pair
from keel.embedding.model import LocalEmbedder
from keel.embedding.model import verify as old_verify

DATA = Path("/work/shared/data/paraphrase")
QUERIES = Path("/work/shared/data/retrieval/msmarco-5k/queries.jsonl")
SETS = {"PAWS": (DATA / "paws-wiki/dev.tsv", 1, 2, 3), "QQP": (DATA / "qqp-dev/pairs.tsv", 3, 4, 5)}
OLD_DEFAULT = 0.988  # the threshold shipped with the old verify


@dataclass
class Pairs:
    name: str
    ids: np.ndarray
    first: list[str]
    second: list[str]
    labels: np.ndarray  # bool: same question
    similarity: np.ndarray
    features: np.ndarray  # (n, len(pair.FEATURES))
    verified: np.ndarray  # keel.cache.pair.verify
    old_verified: np.ndarray

    def part(self, mask: np.ndarray) -> Pairs:
        pick = np.flatnonzero(mask)
        return Pairs(
            self.name,
            self.ids[pick],
            [self.first[i] for i in pick],
            [self.second[i] for i in pick],
            self.labels[pick],
            self.similarity[pick],
            self.features[pick],
            self.verified[pick],
            self.old_verified[pick],
        )

    def tune(self) -> Pairs:
        return self.part(self.ids % 2 == 1)

    def held(self) -> Pairs:
        return self.part(self.ids % 2 == 0)


def load_embedder(runtime: str = "auto") -> LocalEmbedder:
    return LocalEmbedder(runtime=runtime)


def embed_cached(embedder: LocalEmbedder, texts: list[str], name: str, cache: Path) -> dict[str, np.ndarray]:
    """Vectors of the distinct `texts`, kept under `cache` by model id (weights hash) and a digest of the texts."""
    distinct = sorted(set(texts))
    digest = hashlib.sha256("\n".join(distinct).encode()).hexdigest()[:12]
    path = cache / f"{embedder.model_id}-{name}-{digest}.npy"
    if path.exists():
        vectors = np.load(path)
    else:
        started = time.perf_counter()
        vectors = embedder.embed(distinct)
        print(f"embedded {len(distinct)} {name} texts in {time.perf_counter() - started:.0f} s", file=sys.stderr)
        cache.mkdir(parents=True, exist_ok=True)
        np.save(path, vectors)
    return dict(zip(distinct, vectors, strict=True))


def read_pairs(path: Path, a: int, b: int, label: int) -> list[tuple[int, str, str, bool]]:
    rows = [line.split("\t") for line in path.read_text(encoding="utf-8").splitlines()[1:] if line]
    return [(int(r[0]), r[a], r[b], r[label].strip() == "1") for r in rows]


def build(name: str, rows: list[tuple[int, str, str, bool]], vectors: dict[str, np.ndarray]) -> Pairs:
    first, second = [r[1] for r in rows], [r[2] for r in rows]
    a = np.stack([vectors[t] for t in first])
    b = np.stack([vectors[t] for t in second])
    similarity = (a * b).sum(axis=1).astype(np.float64)
    return Pairs(
        name,
        np.array([r[0] for r in rows]),
        first,
        second,
        np.array([r[3] for r in rows]),
        similarity,
        np.array([pair.features(x, y, float(s)) for x, y, s in zip(first, second, similarity, strict=True)]),
        np.array([pair.verify(x, y) for x, y in zip(first, second, strict=True)]),
        np.array([old_verify(x, y) for x, y in zip(first, second, strict=True)]),
    )


def load(embedder: LocalEmbedder, cache: Path, sample: int | None = None) -> dict[str, Pairs]:
    """Both dev sets (`sample`: only the first that many pairs of each, for slow candidate models)."""
    out = {}
    for name, (path, a, b, label) in SETS.items():
        rows = read_pairs(path, a, b, label)[:sample]
        vectors = embed_cached(embedder, [t for r in rows for t in r[1:3]], name.lower(), cache)
        out[name] = build(name, rows, vectors)
    return out


# ---- scores and thresholds ------------------------------------------------------------------------------------


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """P(a positive scores above a negative), by ranks (Mann–Whitney U), ties averaged."""
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    ranks = (np.cumsum(counts) - (counts - 1) / 2.0)[inverse]
    positives, negatives = int(labels.sum()), int((~labels).sum())
    return float((ranks[labels].sum() - positives * (positives + 1) / 2) / (positives * negatives))


CONFIDENT = True  # choose as `keel cache calibrate` does: the 95% bound of the false-hit rate within budget


def lowest_threshold(scores: np.ndarray, labels: np.ndarray, max_false_hits: float) -> float:
    """The threshold `keel cache calibrate` would choose from these pairs (keel/cache/calibrate.py `choose`)."""
    return calibrate.choose(scores.tolist(), labels.tolist(), max_false_hits, confident=CONFIDENT).threshold


def rates(scores: np.ndarray, labels: np.ndarray, threshold: float) -> tuple[float, float]:
    """(false-hit rate, recall) when serving every pair scoring ≥ threshold."""
    hit = scores >= threshold
    return float(hit[~labels].mean()), float(hit[labels].mean())


Method = Callable[[Pairs], np.ndarray]


def adjusted_scores(p: Pairs, weights: pair.Weights | None = None) -> np.ndarray:
    scores = [pair.adjusted_from(tuple(f), weights) if v else -1.0 for f, v in zip(p.features, p.verified, strict=True)]
    return np.array(scores)


METHODS: dict[str, Method] = {
    "cosine": lambda p: p.similarity,
    "old verify": lambda p: np.where(p.old_verified, p.similarity, -1.0),
    "verify": lambda p: np.where(p.verified, p.similarity, -1.0),
    "scorer": adjusted_scores,
}


# ---- the pair scorer's fit --------------------------------------------------------------------------------------


def fit(parts: list[Pairs], floor: float, l2: float = 1e-3) -> pair.Weights:
    """Logistic regression over FEATURES on verified pairs with cosine ≥ floor, each set weighing the same."""
    xs, ys, ws = [], [], []
    for p in parts:
        keep = p.verified & (p.similarity >= floor)
        xs.append(p.features[keep])
        ys.append(p.labels[keep].astype(np.float64))
        ws.append(np.full(int(keep.sum()), 1.0 / max(int(keep.sum()), 1)))
    x, y, w = np.concatenate(xs), np.concatenate(ys), np.concatenate(ws)
    w = w / w.mean()
    mean, scale = x.mean(axis=0), x.std(axis=0) + 1e-9
    z = np.hstack([np.ones((len(x), 1)), (x - mean) / scale])
    beta = np.zeros(z.shape[1])
    for _ in range(50):  # Newton's method (IRLS) with a small ridge
        prob = 1 / (1 + np.exp(-(z @ beta)))
        gradient = z.T @ (w * (prob - y)) / len(y) + l2 * np.r_[0, beta[1:]]
        hessian = (z * (w * prob * (1 - prob))[:, None]).T @ z / len(y) + l2 * np.diag(np.r_[0, np.ones(len(beta) - 1)])
        step = np.linalg.solve(hessian, gradient)
        beta -= step
        if np.abs(step).max() < 1e-9:
            break
    coefficients = beta[1:] / scale
    bias = beta[0] - float((beta[1:] * mean / scale).sum())
    return pair.Weights(round(float(bias), 4), tuple(round(float(c), 4) for c in coefficients))


# ---- report -------------------------------------------------------------------------------------------------------


def side_by_side(title: str, cells: dict[str, list[str]], header: list[str]) -> None:
    print(f"\n{title}")
    print(f"  {'':<12}" + "".join(f"{h:>27}" for h in header))
    for label, values in cells.items():
        print(f"  {label:<12}" + "".join(f"{v:>27}" for v in values))


def fmt(false_hits: float, recall: float) -> str:
    return f"{false_hits * 100:5.2f}% fh {recall * 100:5.1f}% rec"


def report(sets: dict[str, Pairs], budget: float, default: float) -> None:
    names = list(sets)
    counts = ", ".join(f"{n} {len(p.ids)} pairs ({int(p.labels.sum())} same)" for n, p in sets.items())
    print(f"dev sets: {counts}; tuning half = odd ids, held-out half = even ids; budget {budget:.1%} false hits")

    side_by_side(
        "ROC-AUC on the held-out half",
        {m: [f"{roc_auc(f(p.held()), p.held().labels):.3f}" for p in sets.values()] for m, f in METHODS.items()},
        names,
    )
    shipped = {"old verify": OLD_DEFAULT, "cosine": OLD_DEFAULT, "verify": OLD_DEFAULT, "scorer": default}
    for where, pick in (("whole dev set", lambda p: p), ("held-out half", Pairs.held)):
        cells = {}
        for m, f in METHODS.items():
            cells[f"{m} {shipped[m]:.3f}"] = [
                fmt(*rates(f(pick(p)), pick(p).labels, shipped[m])) for p in sets.values()
            ]
        side_by_side(
            f"at the shipped thresholds (scorer: the new default, others: the old 0.988), {where}", cells, names
        )
    cells = {}
    for m, f in METHODS.items():
        row = []
        for p in sets.values():
            t = lowest_threshold(f(p.tune()), p.tune().labels, budget)
            row.append(f"  {t:.3f}: " + fmt(*rates(f(p.held()), p.held().labels, t)))
        cells[m] = row
    side_by_side("threshold tuned on the tuning half, figures on the held-out half of the same set", cells, names)
    cells = {}
    for m, f in METHODS.items():
        row = []
        for source, target in ((names[0], names[1]), (names[1], names[0])):
            t = lowest_threshold(f(sets[source]), sets[source].labels, budget)
            row.append(f"  {t:.3f}: " + fmt(*rates(f(sets[target]), sets[target].labels, t)))
        cells[m] = row
    side_by_side(
        "cross-set: threshold tuned on one whole set, figures on the other",
        cells,
        [f"{names[0]} → {names[1]}", f"{names[1]} → {names[0]}"],
    )
    cells = {}
    for m, f in METHODS.items():
        t = max(lowest_threshold(f(p.tune()), p.tune().labels, budget) for p in sets.values())
        cells[f"{m} {t:.3f}"] = [fmt(*rates(f(p.held()), p.held().labels, t)) for p in sets.values()]
    side_by_side("one threshold for both (the higher of the two tuned ones), held-out halves", cells, names)


def sweep(sets: dict[str, Pairs], thresholds: list[float]) -> None:
    for m in ("old verify", "verify", "scorer"):
        cells = {f"{t:.3f}": [fmt(*rates(METHODS[m](p), p.labels, t)) for p in sets.values()] for t in thresholds}
        side_by_side(f"sweep, {m}, whole dev sets", cells, list(sets))


def report_queries(embedder: LocalEmbedder, cache: Path, threshold: float) -> None:
    """Every pair of the 50 distinct real MS MARCO queries is a different question: none may be served."""
    queries = [json.loads(line)["text"] for line in QUERIES.read_text(encoding="utf-8").splitlines() if line.strip()]
    vectors = embed_cached(embedder, queries, "msmarco-queries", cache)
    pairs = list(itertools.combinations(queries, 2))
    similarity = np.array([float(vectors[a] @ vectors[b]) for a, b in pairs])
    served = sum(
        (score := pair.adjusted(a, b, s)) is not None and score >= threshold
        for (a, b), s in zip(pairs, similarity, strict=True)
    )
    top = int(similarity.argmax())
    print(
        f"\nMS MARCO: {len(pairs)} pairs of distinct real user queries; highest cosine {similarity[top]:.3f} "
        f"({pairs[top][0]!r} / {pairs[top][1]!r}); served at {threshold:.3f}: {served}"
    )


def cross_fit(sets: dict[str, Pairs], budget: float, floor: float) -> None:
    """Does the scorer generalise? Fit on one set's tuning half, tune its threshold there, report on the other set."""
    names = list(sets)
    cells = {}
    for source in names:
        weights = fit([sets[source].tune()], floor)
        row = []
        for target in names:
            t = lowest_threshold(adjusted_scores(sets[source].tune(), weights), sets[source].tune().labels, budget)
            scores = adjusted_scores(sets[target].held(), weights)
            row.append(f"  {t:.3f}: " + fmt(*rates(scores, sets[target].held().labels, t)))
        cells[f"fit on {source}"] = row
    side_by_side("scorer fitted and tuned on one tuning half, figures on held-out halves", cells, names)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-false-hits", type=float, default=0.01, help="false-hit budget (0.01)")
    parser.add_argument("--threshold", type=float, default=None, help="the scorer's threshold to report as shipped")
    parser.add_argument("--fit", action="store_true", help="refit the pair scorer on both tuning halves")
    parser.add_argument("--measured", action="store_true", help="tune to the measured rate, not its 95%% bound")
    parser.add_argument("--sweep", action="store_true", help="also print false hits and recall over thresholds")
    parser.add_argument("--runtime", default="auto", help="LocalEmbedder runtime: auto, onnx, onnx-int8, numpy")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "keel-semantic")
    args = parser.parse_args()
    global CONFIDENT
    CONFIDENT = not args.measured
    embedder = load_embedder(args.runtime)
    print(f"model {embedder.model_id} ({embedder.runtime})")
    sets = load(embedder, args.cache)
    default = pair.DEFAULT_THRESHOLD if args.threshold is None else args.threshold
    if args.fit:
        weights = fit([p.tune() for p in sets.values()], 0.7)
        pair.WEIGHTS = weights  # the report below then shows the new fit
        t = max(
            lowest_threshold(adjusted_scores(p.tune()), p.tune().labels, args.max_false_hits) for p in sets.values()
        )
        print(f"WEIGHTS = {weights!r}\nthreshold for both tuning halves: {t:.3f}\n")
        default = t if args.threshold is None else default
        cross_fit(sets, args.max_false_hits, 0.7)
    report(sets, args.max_false_hits, default)
    report_queries(embedder, args.cache, default)
    if args.sweep:
        sweep(sets, [round(0.95 + 0.003 * i, 3) for i in range(14)])


if __name__ == "__main__":
    main()
