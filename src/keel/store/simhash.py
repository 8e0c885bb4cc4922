"""SimHash signatures: a 384-bit sketch of each vector, to find the few rows worth an exact score.

Bit j of a vector's signature is the sign of its dot product with the j-th of 384 fixed random
Gaussian hyperplanes. For two vectors at angle θ, each bit differs with probability θ/π, independently,
so their Hamming distance is Binomial(384, θ/π): a row whose cosine with the query is at least
`min_similarity` lies within `cutoff(min_similarity)` bits of it except with probability < 1e-9.
Scanning 48 bytes a row instead of 1,536 (384-d float32) is what makes a large partition fast; the
caller rescores the candidates exactly. Signatures are stored column-major (word, row) so each word
is one contiguous pass. The hyperplanes come from a fixed seed: a signature never needs to be saved.
"""

from __future__ import annotations

import math
from functools import cache, lru_cache
from typing import Any

BITS = 384
WORDS = BITS // 64
_MISS = 1e-9  # chance that a row at exactly the threshold falls outside the cutoff


def _numpy() -> Any:
    import numpy

    return numpy


@cache
def _planes(dim: int) -> Any:
    np = _numpy()
    return np.random.default_rng(0x6B65656C).standard_normal((dim, BITS)).astype(np.float32)


def signatures(vectors: Any) -> Any:
    """Signatures of an (n, dim) float32 array, as a (WORDS, n) uint64 array."""
    np = _numpy()
    bits = np.packbits(vectors @ _planes(vectors.shape[1]) > 0, axis=1)
    return np.ascontiguousarray(bits.view(np.uint64).T)


def distances(sigs: Any, n: int, query: Any) -> Any:
    """Hamming distance (uint16) from the query's signature (WORDS,) to each of the first n rows."""
    np = _numpy()
    d = np.bitwise_count(sigs[0, :n] ^ query[0]).astype(np.uint16)
    for w in range(1, WORDS):
        d += np.bitwise_count(sigs[w, :n] ^ query[w])
    return d


@lru_cache(maxsize=64)  # callers pass a configured threshold or two
def cutoff(min_similarity: float) -> int:
    """The most bits a row with cosine ≥ min_similarity differs by, but for a chance below `_MISS`."""
    p = math.acos(max(-1.0, min(1.0, min_similarity))) / math.pi
    if p >= 1.0:
        return BITS
    tail = 1.0  # P(distance ≥ c), for c counting up
    for c in range(BITS + 1):
        if tail < _MISS:
            return c - 1
        tail -= math.comb(BITS, c) * p**c * (1 - p) ** (BITS - c)
    return BITS
