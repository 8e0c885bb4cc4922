"""Choosing an alias's semantic threshold from labelled pairs: the most recall within a false-hit budget.

A labelled pair is (kept question, new question, same?). Each pair is scored as the cache would score it
(keel/cache/pair.py `adjusted`: None when `verify` fails, which is never served). The chosen threshold is
the lowest (to 3 decimals) at which the Wilson 95% interval of the false-hit rate (the share of
different-question pairs served) stays within the budget (or, with `confident=False`, the measured rate
alone): a budget of 1% measured on 200 negatives is a guess, and the interval says how good a guess. Pure Python; the embeddings come from the caller.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

Z95 = 1.959964  # the normal quantile of a two-sided 95% interval

_LABELS = ("label", "is_duplicate", "duplicate", "same")
_TEXTS = (("sentence1", "sentence2"), ("question1", "question2"), ("kept", "asked"), ("text1", "text2"), ("a", "b"))


@dataclass(frozen=True, slots=True)
class LabelledPair:
    first: str
    second: str
    same: bool


@dataclass(frozen=True, slots=True)
class Calibration:
    threshold: float
    max_false_hits: float
    pairs: int
    negatives: int
    positives: int
    false_hits: int  # negatives served at the threshold
    true_hits: int  # positives served
    interval: tuple[float, float]  # Wilson 95% interval of the false-hit rate

    @property
    def false_hit_rate(self) -> float:
        return self.false_hits / self.negatives if self.negatives else 0.0

    @property
    def recall(self) -> float:
        return self.true_hits / self.positives if self.positives else 0.0

    @property
    def confident(self) -> bool:
        """The interval's upper end is within the budget: enough negatives were labelled to trust it."""
        return self.interval[1] <= self.max_false_hits


def read_pairs(path: Path) -> list[LabelledPair]:
    """A TSV of labelled pairs. With a header: two text columns (sentence1/sentence2, question1/question2,
    kept/asked, text1/text2 or a/b) and a label column (label, is_duplicate, duplicate or same; 1 = the same
    question). Without one: the last column is the label and the two before it the texts."""
    with path.open(encoding="utf-8", newline="") as f:
        rows = [r for r in csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE) if r]
    if not rows:
        raise ValueError(f"{path} holds no pairs")
    header = [h.strip().lower() for h in rows[0]]
    label = next((header.index(n) for n in _LABELS if n in header), None)
    texts = next(((header.index(a), header.index(b)) for a, b in _TEXTS if a in header and b in header), None)
    if label is not None and texts is not None:
        body, (a, b) = rows[1:], texts
    elif len(rows[0]) >= 3 and rows[0][-1].strip() in ("0", "1"):
        body, label, a, b = rows, len(rows[0]) - 1, len(rows[0]) - 3, len(rows[0]) - 2
    else:
        raise ValueError(f"{path}: no label column (label, is_duplicate) and texts (sentence1/sentence2, ...) found")
    out = []
    for n, row in enumerate(body, start=2 if body is not rows else 1):
        value = row[label].strip() if len(row) > label else ""
        if value not in ("0", "1") or len(row) <= max(a, b):
            raise ValueError(f"{path} line {n}: expected two texts and a label 0 or 1")
        out.append(LabelledPair(row[a], row[b], value == "1"))
    return out


def wilson(hits: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a proportion hits/n."""
    if n == 0:
        return 0.0, 1.0
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def choose(
    scores: Sequence[float | None], labels: Sequence[bool], max_false_hits: float, confident: bool = True
) -> Calibration:
    """The lowest threshold (3 decimals) serving at most `max_false_hits` of the negatives; None scores never serve.

    `confident`: the 95% interval's upper end must be within the budget, not just the measured rate, so the
    choice holds on pairs it has not seen (a threshold tuned to the measured rate overshoots on new pairs about
    as often as not). When even serving no negative is not confident, the threshold serves none of them.
    """
    negatives = sorted((s for s, same in zip(scores, labels, strict=True) if not same and s is not None), reverse=True)
    n = sum(not same for same in labels)
    allowed = math.floor(max_false_hits * n)
    if confident:
        while allowed > 0 and wilson(allowed, n)[1] > max_false_hits:
            allowed -= 1
    threshold = 0.0
    if allowed < len(negatives):
        threshold = math.ceil(math.nextafter(negatives[allowed], 2.0) * 1000) / 1000
        while sum(s >= threshold for s in negatives) > allowed:  # rounding to 3 decimals met a tie
            threshold = round(threshold + 0.001, 3)
    return measure(scores, labels, min(round(threshold, 3), 1.0), max_false_hits)


def measure(scores: Sequence[float | None], labels: Sequence[bool], threshold: float, budget: float) -> Calibration:
    """The false hits and recall of serving every pair scoring ≥ threshold."""
    served = [s is not None and s >= threshold for s in scores]
    false_hits = sum(hit and not same for hit, same in zip(served, labels, strict=True))
    true_hits = sum(hit and same for hit, same in zip(served, labels, strict=True))
    negatives = sum(not same for same in labels)
    return Calibration(
        threshold,
        budget,
        len(labels),
        negatives,
        len(labels) - negatives,
        false_hits,
        true_hits,
        wilson(false_hits, negatives),
    )


def halves(items: Iterable[LabelledPair]) -> tuple[list[LabelledPair], list[LabelledPair]]:
    """(odd rows, even rows): a tuning half and a held-back half."""
    rows = list(items)
    return rows[0::2], rows[1::2]
