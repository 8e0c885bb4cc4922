"""Vector and full-text search in process over a build's chunks (SQLite; PostgreSQL without pgvector).

A build's rows are read from the store on its first search in this process: one float32 matrix of
vectors and an inverted index of texts (index_terms.py), with the chunk id, document row and document
version of each row; every search first reads the rows written since (chunk ids only grow, and a build's
rows commit in id order: decision 0070), so writes of this process and others are seen at once. A search
scores, by cosine and by BM25, only the rows whose (document, version) the store admitted for the caller
(`rag_allowed`: the tenant, the access list, filters, freshness; one mask for both), so the access filter
is inside the candidate sets, never applied to a top-k after the fact. Rows of replaced or removed
documents stay until the matrix holds twice the build's live rows; then it is read again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, TypeVar

from keel.rag.index_terms import BuildTerms, Tokens
from keel.store.protocols.rag_index import Candidates, VectorRows

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

Run = Callable[..., Awaitable[object]]


class BuildVectors:
    """One build's vectors. Mutated only under its owner's lock; searches read a consistent prefix."""

    def __init__(self, dim: int, tokens: Tokens | None = None) -> None:
        import numpy as np

        self.dim = dim
        self.terms = BuildTerms(tokens) if tokens is not None else None  # full text, row for row
        self.n = 0
        self.last = 0  # the highest chunk id loaded
        self.matrix: npt.NDArray[np.float32] = np.zeros((0, dim), dtype=np.float32)
        self.ids: npt.NDArray[np.int64] = np.zeros(0, dtype=np.int64)
        self.docs: npt.NDArray[np.int64] = np.zeros(0, dtype=np.int64)
        self.versions: npt.NDArray[np.int64] = np.zeros(0, dtype=np.int64)

    @classmethod
    def handed(
        cls,
        matrix: npt.NDArray[np.float32],
        ids: npt.NDArray[np.int64],
        docs: npt.NDArray[np.int64],
        versions: npt.NDArray[np.int64],
        terms: BuildTerms | None,
    ) -> BuildVectors:
        """A build loaded elsewhere (keel.rag.index_export), from its arrays: rows in chunk id order."""
        made = cls(matrix.shape[1])
        made.matrix, made.ids, made.docs, made.versions, made.terms = matrix, ids, docs, versions, terms
        made.n = len(ids)
        made.last = int(ids[-1]) if made.n else 0
        return made

    def extend(self, rows: VectorRows) -> None:
        import numpy as np

        k = len(rows.ids)
        if not k:
            return
        need = self.n + k
        if need > len(self.ids):
            size = max(need, 2 * len(self.ids), 1024)
            self.matrix = _grow(self.matrix, (size, self.dim))
            self.ids, self.docs, self.versions = (_grow(a, (size,)) for a in (self.ids, self.docs, self.versions))
        block = np.frombuffer(b"".join(rows.embeddings), dtype=np.float32)
        if block.size != k * self.dim:
            raise ValueError(f"a chunk vector is not {self.dim}-d in this build")
        self.matrix[self.n : need] = block.reshape(k, self.dim)
        self.ids[self.n : need] = rows.ids
        self.docs[self.n : need] = rows.docs
        self.versions[self.n : need] = rows.versions
        if self.terms is not None:
            if len(rows.texts) != k:
                raise ValueError("full text in process needs the rows' texts")
            self.terms.extend(rows.texts)
        self.n, self.last = need, int(rows.ids[-1])

    @property
    def nbytes(self) -> int:
        """About the memory it holds: its arrays as allocated, and 12 bytes per token of full text (the
        forward index, a posting's row and its term frequency)."""
        arrays = self.matrix.nbytes + self.ids.nbytes + self.docs.nbytes + self.versions.nbytes
        return int(arrays + (12 * self.terms.total if self.terms is not None else 0))

    def admitted(self, allowed: Sequence[tuple[int, int]]) -> npt.NDArray[np.bool_]:
        """The mask of rows whose (document, version) is among the allowed pairs: what a search scores."""
        import numpy as np

        n = self.n
        if not allowed or n == 0:
            return np.zeros(n, dtype=bool)
        pairs = np.asarray(allowed, dtype=np.int64)
        docs, versions = self.docs[:n], self.versions[:n]
        table = np.full(int(max(pairs[:, 0].max(), docs.max())) + 1, -1, dtype=np.int64)
        table[pairs[:, 0]] = pairs[:, 1]
        mask: npt.NDArray[np.bool_] = table[docs] == versions
        return mask

    def top(self, vector: Sequence[float] | bytes, admitted: npt.NDArray[np.bool_], k: int) -> Candidates:
        """The k admitted rows most similar to `vector`, best first, ties by chunk id."""
        import numpy as np

        rows = np.flatnonzero(admitted[: self.n])
        if rows.size == 0 or k <= 0:
            return Candidates([], [])
        q = np.frombuffer(vector, dtype=np.float32) if isinstance(vector, bytes) else np.asarray(vector, np.float32)
        # most rows admitted: one pass over the matrix beats gathering them first
        scores = (self.matrix[: self.n] @ q)[rows] if rows.size * 3 > self.n else self.matrix[rows] @ q
        best = np.argpartition(-scores, k - 1)[:k] if rows.size > k else np.arange(rows.size)
        best = best[np.lexsort((self.ids[rows[best]], -scores[best]))]
        return Candidates(self.ids[rows[best]].tolist(), scores[best].astype(float).tolist())

    def lexical(self, words: Sequence[str], admitted: npt.NDArray[np.bool_], k: int) -> Candidates:
        """BM25 over the admitted rows (keel.rag.index_terms); the rows must have been read with texts."""
        if self.terms is None:
            raise ValueError("this build's rows were read without their texts")
        return self.terms.top(words, admitted, self.ids[: self.n], k)

    def bm25(
        self, words: Sequence[str], ids: Sequence[int], feedback: Sequence[int] = (), terms: int = 0, weight: float = 0
    ) -> dict[int, float]:
        """BM25 of the given chunks (those loaded) for the query words, 0 for one holding none of them; with
        `feedback` chunks, plus `weight` times the BM25 of their best `terms` expansion terms (RM3)."""
        import numpy as np

        if self.terms is None or not ids or self.n == 0:
            return {}
        wanted = np.unique(np.asarray(ids, dtype=np.int64))
        at = np.minimum(np.searchsorted(self.ids[: self.n], wanted), self.n - 1)
        found = self.ids[at] == wanted
        asked = self.terms.terms(words)
        weights = dict.fromkeys(asked, 1.0)
        if feedback and terms > 0 and weight > 0:
            top = np.asarray(feedback, dtype=np.int64)
            rows = np.minimum(np.searchsorted(self.ids[: self.n], top), self.n - 1)
            rows = rows[self.ids[rows] == top]
            for term, w in self.terms.feedback(rows.tolist(), asked, terms).items():
                weights[term] = weights.get(term, 0.0) + weight * w
        values = self.terms.scores_at(weights, at[found])  # chunk ids ascend with rows
        return dict(zip(wanted[found].tolist(), values.tolist(), strict=True))

    def rows(self, ids: Sequence[int]) -> npt.NDArray[np.float32]:
        """The vectors of the given chunks that are loaded."""
        import numpy as np

        wanted = np.asarray(ids, dtype=np.int64)
        at = np.minimum(np.searchsorted(self.ids[: self.n], wanted), max(self.n - 1, 0))
        return self.matrix[at[self.ids[at] == wanted]] if self.n else np.zeros((0, self.dim), np.float32)

    def similarity(self, ids: Sequence[int], vector: Sequence[float] | bytes) -> dict[int, float]:
        """Cosine similarity of the given chunks (those loaded) with `vector`."""
        import numpy as np

        if not ids or self.n == 0:
            return {}
        wanted = np.asarray(ids, dtype=np.int64)
        at = np.searchsorted(self.ids[: self.n], wanted)
        at = np.minimum(at, self.n - 1)
        found = self.ids[at] == wanted
        q = np.frombuffer(vector, dtype=np.float32) if isinstance(vector, bytes) else np.asarray(vector, np.float32)
        scores = self.matrix[at[found]] @ q
        return dict(zip(wanted[found].tolist(), scores.astype(float).tolist(), strict=True))


G = TypeVar("G", bound="np.generic")


def _grow(a: npt.NDArray[G], shape: tuple[int, ...]) -> npt.NDArray[G]:
    import numpy as np

    out: npt.NDArray[G] = np.zeros(shape, dtype=a.dtype)
    out[: len(a)] = a
    return out


LET_GO_S = 600.0  # how long a build let go is remembered, so that no late search loads it back


class LetGo(LookupError):
    """The build a search listed was let go (a swap retired it) before the search read it."""


def out_of_collections() -> None:
    """Keep a build just loaded out of the collector's full passes. Its full text is tens of thousands of
    containers (a posting list per term) that live as long as the build: each full collection walked them
    all (16 ms at 100,000 chunks, every slow query of bench/rag.py's re-index and control runs). The young
    garbage is collected first, then every tracked object frozen (as `keel serve` does once at start-up):
    refcounting still frees a build let go, since its containers hold no cycles."""
    import gc

    gc.collect(1)
    gc.freeze()


class VectorCache:
    """Loaded builds of this process: read lazily, kept current by reading new rows before each search."""

    def __init__(self, run: Run, vectors: Callable[[str, int], VectorRows], count: Callable[[str], int]) -> None:
        self._run = run  # runs a store call off the event loop
        self._vectors = vectors
        self._count = count
        self._tokens = Tokens()
        self._builds: dict[str, BuildVectors] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._gone: dict[str, float] = {}  # builds let go lately -> when

    async def current(self, build: str, dim: int, *, run: Run | None = None, again: bool = False) -> BuildVectors:
        """The build's vectors including every row committed before this call. `run`: read and load the
        new rows, however few, in those threads (a re-index loading its shadow build as it fills it,
        in its own low-priority thread: no search holds a shadow). A build let go lately raises LetGo
        unless loaded with `run` or asked for `again` (a search naming that build)."""
        lock = self._locks.setdefault(build, asyncio.Lock())
        async with lock:
            found = self._builds.get(build)
            if found is None and run is None and not again and build in self._gone:
                raise LetGo(f"build {build} was let go while a search was on its way to it")
            if found is None or found.dim != dim:
                found = self._builds[build] = BuildVectors(dim, self._tokens)
            rows = await (run or self._run)(self._vectors, build, found.last)
            assert isinstance(rows, VectorRows)
            first = found.n == 0 and len(rows.ids) > 0
            if run is not None:
                await run(found.extend, rows)
            elif found.n == 0:  # a first read (seconds at 100,000 rows): off the event loop; no search holds it yet
                await self._run(found.extend, rows)
            else:
                found.extend(rows)
            if rows.ids and found.n > 1024:
                live = await self._run(self._count, build)
                assert isinstance(live, int)
                if found.n > 2 * live:  # mostly rows of replaced documents: read the build again
                    fresh = BuildVectors(dim, self._tokens)
                    await self._run(fresh.extend, await self._run(self._vectors, build, 0))
                    found = self._builds[build] = fresh
                    first = True
            if first:
                await self._run(out_of_collections)
            return found

    async def adopt(self, build: str, vectors: BuildVectors) -> None:
        """Serve `build` from vectors loaded elsewhere (complete up to `vectors.last`); `current` reads
        the rows written since."""
        async with self._locks.setdefault(build, asyncio.Lock()):
            self._builds[build] = vectors
        await self._run(out_of_collections)

    def forget(self, build: str) -> None:
        """Drop the build's vectors here (it may be loaded again)."""
        self._builds.pop(build, None)
        self._locks.pop(build, None)

    def let_go(self, build: str) -> None:
        """Drop a build no search should read any more (retired by a swap, failed, purged): a search that
        listed it before and reads it now gets LetGo (and starts again) instead of loading it back."""
        self.forget(build)
        now = time.monotonic()
        self._gone = {b: t for b, t in self._gone.items() if t > now - LET_GO_S}
        self._gone[build] = now

    def let_go_lately(self, build: str) -> bool:
        return build in self._gone and build not in self._builds

    def holds(self, build: str) -> bool:
        return build in self._builds

    def held(self) -> list[str]:
        return list(self._builds)

    @property
    def nbytes(self) -> int:
        """About the memory the loaded builds hold (BuildVectors.nbytes)."""
        return sum(b.nbytes for b in list(self._builds.values()))
