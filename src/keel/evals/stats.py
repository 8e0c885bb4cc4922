"""Two-sample tests for drift: a kernel test on embeddings, a rank test on numbers, a z test on rates.

- `mmd_test`: maximum mean discrepancy with an RBF kernel, bandwidth by the median heuristic (the
  median pairwise distance of the pooled sample), p-value by permutation (seeded, so a report is
  reproducible). MMD² is the biased V-statistic sᵀKs with s = +1/n on one sample and −1/m on the
  other; every permutation is one column of S, so all of them cost one (N×N)·(N×P) product.
- `mann_whitney`: U with the normal approximation, tie-corrected and continuity-corrected; for
  lengths and scores, whose shapes are anything but normal.
- `two_proportions`: the pooled two-proportion z test; for refusal and tool-call rates.

All p-values are two-sided. numpy (the `semantic` extra) loads when a test runs, never at import.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    Floats = npt.NDArray[np.floating[Any]]

PERMUTATIONS = 500


@dataclass(frozen=True, slots=True)
class TestResult:
    test: str  # mmd-rbf | mann-whitney | two-proportion-z
    statistic: float  # MMD², z
    p_value: float
    n_reference: int
    n_recent: int
    reference: float | None = None  # a summary of each side: median, rate; None for the MMD
    recent: float | None = None


def mmd_test(x: Floats, y: Floats, *, permutations: int = PERMUTATIONS, seed: int = 0) -> TestResult:
    """Kernel two-sample test of rows `x` (reference) against rows `y` (recent)."""
    import numpy as np

    n, m = len(x), len(y)
    if n < 2 or m < 2:
        return TestResult("mmd-rbf", 0.0, 1.0, n, m)
    z = np.vstack([x, y]).astype(np.float64)
    sq = np.sum(z * z, axis=1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * (z @ z.T), 0.0)
    upper = d2[np.triu_indices(n + m, k=1)]
    median = float(np.median(upper[upper > 0])) if np.any(upper > 0) else 1.0
    kernel = np.exp(-d2 / median)  # bandwidth: exp(-d²/median d²), the median heuristic on squared distances
    s = np.concatenate([np.full(n, 1.0 / n), np.full(m, -1.0 / m)])
    observed = float(s @ kernel @ s)
    rng = np.random.default_rng(seed)
    perms = np.stack([rng.permutation(s) for _ in range(permutations)], axis=1)
    null = np.einsum("ip,ip->p", perms, kernel @ perms)
    p = (1.0 + float(np.sum(null >= observed - 1e-12))) / (permutations + 1.0)
    return TestResult("mmd-rbf", observed, p, n, m)


def mann_whitney(reference: Sequence[float], recent: Sequence[float]) -> TestResult:
    """Whether `recent` values tend to be larger or smaller than `reference` ones."""
    import numpy as np

    n, m = len(reference), len(recent)
    if n == 0 or m == 0:
        return TestResult("mann-whitney", 0.0, 1.0, n, m)
    pooled = np.concatenate([np.asarray(reference, float), np.asarray(recent, float)])
    order = pooled.argsort(kind="mergesort")
    ranks = np.empty(len(pooled))
    sorted_values = pooled[order]
    _, start, counts = np.unique(sorted_values, return_index=True, return_counts=True)
    average = start + (counts + 1) / 2.0  # 1-based mid-ranks of each tie group
    ranks[order] = np.repeat(average, counts)
    u = float(ranks[:n].sum() - n * (n + 1) / 2.0)
    total = n + m
    ties = float(np.sum(counts**3 - counts))
    var = n * m / 12.0 * ((total + 1) - ties / (total * (total - 1))) if total > 1 else 0.0
    medians = float(np.median(reference)), float(np.median(recent))
    if var <= 0:
        return TestResult("mann-whitney", 0.0, 1.0, n, m, *medians)
    delta = u - n * m / 2.0
    z = (abs(delta) - 0.5) / math.sqrt(var) if abs(delta) > 0.5 else 0.0
    return TestResult("mann-whitney", math.copysign(z, -delta), _two_sided(z), n, m, *medians)


def two_proportions(hits_reference: int, n_reference: int, hits_recent: int, n_recent: int) -> TestResult:
    """Whether a rate (refusals, tool calls) differs between the windows."""
    if n_reference == 0 or n_recent == 0:
        return TestResult("two-proportion-z", 0.0, 1.0, n_reference, n_recent)
    p1, p2 = hits_reference / n_reference, hits_recent / n_recent
    pooled = (hits_reference + hits_recent) / (n_reference + n_recent)
    var = pooled * (1 - pooled) * (1 / n_reference + 1 / n_recent)
    if var <= 0:
        return TestResult("two-proportion-z", 0.0, 1.0, n_reference, n_recent, p1, p2)
    z = (p2 - p1) / math.sqrt(var)
    return TestResult("two-proportion-z", z, _two_sided(z), n_reference, n_recent, p1, p2)


def _two_sided(z: float) -> float:
    return math.erfc(abs(z) / math.sqrt(2.0))
