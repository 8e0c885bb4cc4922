"""SimHash signatures (store/simhash.py): distances follow the angle, and the cutoff holds its promise."""

from __future__ import annotations

import math

import numpy as np
import pytest

from keel.store import simhash


def pairs_at(cos: float, n: int, dim: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """n pairs of unit vectors whose cosine is exactly `cos`."""
    a = rng.standard_normal((n, dim)).astype(np.float32)
    a /= np.linalg.norm(a, axis=1, keepdims=True)
    r = rng.standard_normal((n, dim)).astype(np.float32)
    r -= np.sum(r * a, axis=1, keepdims=True) * a  # orthogonal to a
    r /= np.linalg.norm(r, axis=1, keepdims=True)
    return a, cos * a + math.sqrt(1 - cos * cos) * r


@pytest.mark.parametrize("dim", [16, 384])
def test_distance_follows_the_angle_and_stays_within_the_cutoff(dim: int) -> None:
    rng = np.random.default_rng(4)
    for cos in (0.99, 0.95, 0.9, 0.5, 0.0):
        a, b = pairs_at(cos, 4000, dim, rng)
        sa, sb = simhash.signatures(a), simhash.signatures(b)
        d = np.bitwise_count(sa ^ sb).sum(axis=0)  # pair i: column i of each
        expected = simhash.BITS * math.acos(cos) / math.pi
        assert abs(d.mean() - expected) < 2.0, (cos, d.mean(), expected)
        assert d.max() <= simhash.cutoff(cos), (cos, d.max(), simhash.cutoff(cos))


def test_distances_over_many_rows() -> None:
    rng = np.random.default_rng(5)
    rows = rng.standard_normal((1000, 384)).astype(np.float32)
    sigs = simhash.signatures(rows)
    assert sigs.shape == (simhash.WORDS, 1000) and sigs.dtype == np.uint64
    d = simhash.distances(sigs, 1000, sigs[:, 7])
    assert d[7] == 0 and d.shape == (1000,)
    assert 150 < np.median(d) < 234  # unrelated vectors differ in about half the bits
    assert simhash.distances(simhash.signatures(-rows[:1]), 1, sigs[:, 0])[0] == simhash.BITS


def test_cutoff_shrinks_as_the_threshold_rises() -> None:
    cuts = [simhash.cutoff(s) for s in (-1.0, -0.5, 0.0, 0.5, 0.9, 0.99, 1.0)]
    assert cuts == sorted(cuts, reverse=True)
    assert cuts[0] == simhash.BITS and cuts[-1] == 0
