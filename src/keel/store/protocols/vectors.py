"""The semantic cache's nearest-neighbour index."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class VectorHit:
    key: str  # the CacheStore key of the answer this vector stands for
    similarity: float  # cosine similarity, in [-1, 1]


class VectorIndex(Protocol):
    """Nearest-neighbour search over cached requests' embeddings: memory, SQLite or PostgreSQL+pgvector.

    Vectors are unit-length float sequences. A search only ever compares vectors with the same
    (tenant, partition, model): the partition is the cache stage's hash of everything but the last
    user turn (alias, system prompt, tools, conversation prefix, parameters) and `model` names the
    embedding model and its version, so vectors of different models never meet. `nearest` returns
    the most similar live vector (stale_until > now) with similarity ≥ `min_similarity`, else None.
    """

    async def add(
        self,
        tenant: str,
        partition: str,
        model: str,
        key: str,
        vector: Sequence[float],
        stale_until: float,
        user: str | None = None,
    ) -> None: ...

    async def nearest(
        self, tenant: str, partition: str, model: str, vector: Sequence[float], min_similarity: float, now: float
    ) -> VectorHit | None: ...

    async def purge(self, tenant: str, user: str | None = None) -> int: ...

    async def count(self, tenant: str | None = None) -> int: ...

    async def aclose(self) -> None: ...
