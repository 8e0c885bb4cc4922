"""Nearest-neighbour search in process memory: one float32 matrix per (tenant, partition, model).

A small partition is searched by one matrix-vector product over its rows (exact). Past `approx_rows`
rows that product is bound by memory bandwidth (~40 ms at 100,000 × 384-d), so a search first scans
the rows' SimHash signatures (store/simhash.py: 48 bytes a row) for live rows that can be within
`min_similarity`, and scores at most `CANDIDATES` of the closest exactly: the answer is then the
exact best of those. Searches over `THREAD_ROWS` rows run in a worker thread, so a large partition
never stalls the event loop. Matrices grow by doubling; a removed row is replaced by the last one.
`VectorBook` is the index itself, shared by `MemoryVectors` and `SqliteVectors` (which persists it).
numpy is imported on first use, never at `import keel`.

Bound: at most `max_entries` vectors overall; past that the oldest added goes first. Expired rows
(stale_until ≤ now) are never returned and leave with the bound or a purge.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from keel.store import simhash
from keel.store.protocols import VectorHit

if TYPE_CHECKING:
    from numpy import float32, float64, uint64
    from numpy.typing import NDArray

THREAD_ROWS = 2000  # past this many rows a search runs in a worker thread (~0.1 ms inline at 384-d)
APPROX_ROWS = 5000  # past this many rows a search goes through signatures: the crossover (bench/cache_lookup.py)
CANDIDATES = 64  # rows scored exactly after the signature scan
Slot = tuple[str, str, str]  # tenant, partition, model
Row = tuple[str, str, str, str]  # tenant, partition, model, key


def _numpy() -> Any:
    import numpy

    return numpy


class _Partition:
    """Rows of one (tenant, partition, model): vectors, expiry, key and user, index-aligned."""

    def __init__(self, dim: int) -> None:
        np = _numpy()
        self.dim = dim
        self.matrix: NDArray[float32] = np.empty((16, dim), dtype=np.float32)
        self.stale: NDArray[float64] = np.empty(16, dtype=np.float64)
        self.sigs: NDArray[uint64] = np.empty((simhash.WORDS, 16), dtype=np.uint64)  # column i: row i
        self.keys: list[str] = []
        self.users: list[str | None] = []
        self.rows: dict[str, int] = {}
        self.version = 0  # bumps when a row changes or moves: a search run in a thread then redoes itself

    def put(self, key: str, vector: NDArray[float32], stale_until: float, user: str | None) -> None:
        i = self.rows.get(key)
        if i is None:
            i = len(self.keys)
            if i == len(self.matrix):
                self._grow()
            self.keys.append(key)
            self.users.append(user)
            self.rows[key] = i
        else:
            self.users[i] = user
            self.version += 1
        self.matrix[i] = vector
        self.stale[i] = stale_until
        self.sigs[:, i] = simhash.signatures(vector[None, :])[:, 0]

    def _grow(self) -> None:
        np = _numpy()
        n = len(self.matrix)
        matrix = np.empty((2 * n, self.dim), dtype=np.float32)
        matrix[:n] = self.matrix
        stale = np.empty(2 * n, dtype=np.float64)
        stale[:n] = self.stale
        sigs = np.empty((simhash.WORDS, 2 * n), dtype=np.uint64)
        sigs[:, :n] = self.sigs
        self.matrix, self.stale, self.sigs = matrix, stale, sigs  # a search in flight keeps the old arrays

    def remove(self, key: str) -> bool:
        i = self.rows.pop(key, None)
        if i is None:
            return False
        last = len(self.keys) - 1
        if i != last:
            self.matrix[i] = self.matrix[last]
            self.stale[i] = self.stale[last]
            self.sigs[:, i] = self.sigs[:, last]
            self.keys[i] = self.keys[last]
            self.users[i] = self.users[last]
            self.rows[self.keys[i]] = i
        self.keys.pop()
        self.users.pop()
        self.version += 1
        return True


def _best(
    matrix: Any, stale: Any, sigs: Any, n: int, query: Any, min_similarity: float, now: float
) -> tuple[int, float] | None:
    """Index and similarity of the most similar live row among the first `n`, or None.

    Exact: every row is scored (`sigs` and `min_similarity` serve `_approx`, which has this signature)."""
    if n == 0:
        return None
    np = _numpy()
    sims = matrix[:n] @ query
    sims = np.where(stale[:n] > now, sims, -np.inf)
    i = int(np.argmax(sims))
    s = float(sims[i])
    return None if s == -np.inf else (i, s)


def _approx(
    matrix: Any, stale: Any, sigs: Any, n: int, query: Any, min_similarity: float, now: float
) -> tuple[int, float] | None:
    """Like `_best`, among the live rows whose signatures are within reach of `min_similarity`:
    at most `CANDIDATES` of them, the closest by signature, scored exactly."""
    np = _numpy()
    d = simhash.distances(sigs, n, simhash.signatures(query[None, :])[:, 0])
    rows = np.flatnonzero((d <= simhash.cutoff(min_similarity)) & (stale[:n] > now))
    if len(rows) > CANDIDATES:
        rows = rows[np.argpartition(d[rows], CANDIDATES)[:CANDIDATES]]
    if len(rows) == 0:
        return None
    sims = matrix[rows] @ query
    i = int(np.argmax(sims))
    return int(rows[i]), float(sims[i])


Loaded = tuple[_Partition, dict[Row, None]]


def build(slot: Slot, rows: Sequence[tuple[str, bytes, float, str | None]]) -> Loaded:
    """A partition from stored rows (key, float32 bytes, stale_until, user), oldest first, for
    `VectorBook.attach`. Bulk array work, fit for a worker thread; the dim is the first row's."""
    np = _numpy()
    dim = len(rows[0][1]) // 4 if rows else 1
    part = _Partition(dim)
    rows = [r for r in rows if len(r[1]) == 4 * dim]  # a row of another size cannot be searched with these
    n = len(rows)
    part.matrix = np.empty((max(16, n), dim), dtype=np.float32)
    part.matrix[:n] = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(n, dim)
    part.stale = np.empty(max(16, n), dtype=np.float64)
    part.stale[:n] = [r[2] for r in rows]
    part.sigs = np.empty((simhash.WORDS, max(16, n)), dtype=np.uint64)
    for start in range(0, n, 8192):  # in chunks: the projection's temporary is 1.5 KB a row
        end = min(n, start + 8192)
        part.sigs[:, start:end] = simhash.signatures(part.matrix[start:end])
    part.keys = [r[0] for r in rows]
    part.users = [r[3] for r in rows]
    part.rows = {k: i for i, k in enumerate(part.keys)}
    return part, dict.fromkeys((*slot, k) for k in part.keys)


class VectorBook:
    """The index: partitions by (tenant, partition, model), and every row in the order it was added.

    A partition of more than `approx_rows` rows is searched through signatures (0: every partition).
    """

    def __init__(self, max_entries: int, approx_rows: int = APPROX_ROWS) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self._max = max_entries
        self._approx_rows = approx_rows
        self._parts: dict[Slot, _Partition] = {}
        self._order: OrderedDict[Row, None] = OrderedDict()  # oldest first

    def add(self, row: Row, vector: Sequence[float], stale_until: float, user: str | None) -> list[Row]:
        """Add or replace one row; return the rows evicted to stay within the bound."""
        array = _numpy().asarray(vector, dtype=_numpy().float32)
        slot = row[:3]
        part = self._parts.get(slot)
        if part is None:
            part = self._parts[slot] = _Partition(len(array))
        if array.shape != (part.dim,):
            raise ValueError(f"vector has shape {array.shape}; this partition holds {part.dim}-d vectors")
        part.put(row[3], array, stale_until, user)
        self._order[row] = None
        self._order.move_to_end(row)
        evicted: list[Row] = []
        while len(self._order) > self._max:
            old, _ = self._order.popitem(last=False)
            self._drop(old)
            evicted.append(old)
        return evicted

    def _drop(self, row: Row) -> None:
        slot = row[:3]
        part = self._parts.get(slot)
        if part is not None and part.remove(row[3]) and not part.keys:
            del self._parts[slot]

    def remove(self, rows: Iterable[Row]) -> None:
        for row in rows:
            if row in self._order:
                del self._order[row]
                self._drop(row)

    async def nearest(self, slot: Slot, vector: Sequence[float], min_similarity: float, now: float) -> VectorHit | None:
        part = self._parts.get(slot)
        if part is None:
            return None
        query = _numpy().asarray(vector, dtype=_numpy().float32)
        if query.shape != (part.dim,):
            raise ValueError(f"vector has shape {query.shape}; this partition holds {part.dim}-d vectors")
        n, version = len(part.keys), part.version
        search = _approx if n > self._approx_rows else _best
        if n > THREAD_ROWS:
            found = await asyncio.to_thread(search, part.matrix, part.stale, part.sigs, n, query, min_similarity, now)
            if part.version != version:  # a row moved meanwhile: the index may name another key
                found = search(part.matrix, part.stale, part.sigs, len(part.keys), query, min_similarity, now)
        else:
            found = search(part.matrix, part.stale, part.sigs, n, query, min_similarity, now)
        if found is None or found[1] < min_similarity:
            return None
        return VectorHit(part.keys[found[0]], found[1])

    def dim(self, slot: Slot) -> int | None:
        part = self._parts.get(slot)
        return part.dim if part is not None else None

    def attach(self, slot: Slot, loaded: Loaded) -> list[Row]:
        """Install a partition built by `build` (not yet held here); return the rows evicted."""
        part, order = loaded
        if slot in self._parts:
            raise ValueError(f"partition {slot} is already loaded")
        if part.keys:
            self._parts[slot] = part
            self._order.update(order)  # loaded rows count as the newest
        evicted: list[Row] = []
        while len(self._order) > self._max:
            old, _ = self._order.popitem(last=False)
            self._drop(old)
            evicted.append(old)
        return evicted

    def rows(self, tenant: str, user: str | None = None) -> list[Row]:
        """A tenant's rows (or one user's within it)."""
        out: list[Row] = []
        for slot, part in self._parts.items():
            if slot[0] == tenant:
                out += [(*slot, k) for k, u in zip(part.keys, part.users, strict=True) if user is None or u == user]
        return out

    def count(self, tenant: str | None = None) -> int:
        if tenant is None:
            return len(self._order)
        return sum(len(p.keys) for slot, p in self._parts.items() if slot[0] == tenant)


class MemoryVectors:
    """`VectorIndex` for one process; nothing survives a restart."""

    def __init__(self, max_entries: int, approx_rows: int = APPROX_ROWS) -> None:
        self._book = VectorBook(max_entries, approx_rows)

    async def add(
        self,
        tenant: str,
        partition: str,
        model: str,
        key: str,
        vector: Sequence[float],
        stale_until: float,
        user: str | None = None,
    ) -> None:
        self._book.add((tenant, partition, model, key), vector, stale_until, user)

    async def nearest(
        self, tenant: str, partition: str, model: str, vector: Sequence[float], min_similarity: float, now: float
    ) -> VectorHit | None:
        return await self._book.nearest((tenant, partition, model), vector, min_similarity, now)

    async def purge(self, tenant: str, user: str | None = None) -> int:
        rows = self._book.rows(tenant, user)
        self._book.remove(rows)
        return len(rows)

    async def count(self, tenant: str | None = None) -> int:
        return self._book.count(tenant)

    async def aclose(self) -> None:
        return None
