"""The vector index persisted in SQLite: rows on disk, searches in memory (store/memory_vectors.py).

Each (tenant, partition, model) is read from SQLite once, on its first use in this process, and
built into the same in-memory index as `MemoryVectors` in the worker thread; from then on its
searches never touch SQLite and adds write through (disk first, then memory). Another process's
adds to a partition this one has already loaded are not seen until restart: a missed hit, never a
wrong one. Vectors are float32 blobs; row ids give insertion order, so the oldest go first when the
table passes `max_entries` (down to 95% of it, in one DELETE; the count is recounted before).
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Sequence

from keel.store.memory.vectors import APPROX_ROWS, Loaded, Row, Slot, VectorBook, build
from keel.store.protocols import VectorHit
from keel.store.sqlite.thread import SqliteThread

_SCHEMA = """
CREATE TABLE IF NOT EXISTS cache_vectors (
  id INTEGER PRIMARY KEY,
  tenant TEXT NOT NULL,
  partition TEXT NOT NULL,
  model TEXT NOT NULL,
  key TEXT NOT NULL,
  vector BLOB NOT NULL,
  stale_until REAL NOT NULL,
  user TEXT,
  UNIQUE (tenant, partition, model, key)
);
CREATE INDEX IF NOT EXISTS cache_vectors_stale_until ON cache_vectors (stale_until);
"""
# REPLACE gives a replaced row a new id: it becomes the newest, as in VectorBook
_INSERT = (
    "INSERT OR REPLACE INTO cache_vectors (tenant, partition, model, key, vector, stale_until, user)"
    " VALUES (?, ?, ?, ?, ?, ?, ?)"
)
_EVICT = (
    "DELETE FROM cache_vectors WHERE id IN (SELECT id FROM cache_vectors ORDER BY id LIMIT ?)"
    " RETURNING tenant, partition, model, key"
)
_SWEEP_EVERY = 1000  # adds between deletions of rows past stale_until


class SqliteVectors:
    def __init__(self, url: str, max_entries: int, approx_rows: int = APPROX_ROWS) -> None:
        self._book = VectorBook(max_entries, approx_rows)
        self._max = max_entries
        self._keep = max_entries - max_entries // 20
        self._db = SqliteThread(url, _SCHEMA, "keel-vectors")
        self._loaded: set[Slot] = set()
        self._loading: dict[Slot, asyncio.Lock] = {}
        self._rows: int | None = None  # worker thread only: row count as last known plus adds since
        self._adds = 0

    async def _ensure(self, slot: Slot) -> None:
        """Load `slot` from SQLite into memory unless done: once per partition and process."""
        if slot in self._loaded:
            return
        lock = self._loading.setdefault(slot, asyncio.Lock())
        async with lock:
            if slot in self._loaded:
                return
            loaded = await self._db.run(lambda conn: _read(conn, slot))
            self._book.remove(self._book.attach(slot, loaded))
            self._loaded.add(slot)
            del self._loading[slot]

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
        slot = (tenant, partition, model)
        await self._ensure(slot)
        blob = _numpy_bytes(vector)
        dim = self._book.dim(slot)
        if dim is not None and len(blob) != 4 * dim:
            raise ValueError(f"vector has {len(blob) // 4} dimensions; this partition holds {dim}-d vectors")
        values = (tenant, partition, model, key, blob, stale_until, user)
        evicted = await self._db.run(lambda conn: self._write(conn, values))
        self._book.remove(evicted)
        self._book.add((*slot, key), vector, stale_until, user)

    def _write(self, conn: sqlite3.Connection, values: tuple[object, ...]) -> list[Row]:
        """Worker thread: insert, sweep dead rows now and then, evict the oldest past the bound."""
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute(_INSERT, values)
            self._adds += 1
            if self._adds >= _SWEEP_EVERY:  # housekeeping by the wall clock, which callers' `now` follows
                self._adds = 0
                conn.execute("DELETE FROM cache_vectors WHERE stale_until <= ?", (time.time(),))
                self._rows = None
            evicted: list[Row] = []
            self._rows = (self._rows + 1) if self._rows is not None else _count(conn, None)
            if self._rows > self._max:
                self._rows = _count(conn, None)
                if self._rows > self._max:
                    evicted = [(t, p, m, k) for t, p, m, k in conn.execute(_EVICT, (self._rows - self._keep,))]
                    self._rows -= len(evicted)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return evicted

    async def nearest(
        self, tenant: str, partition: str, model: str, vector: Sequence[float], min_similarity: float, now: float
    ) -> VectorHit | None:
        slot = (tenant, partition, model)
        await self._ensure(slot)
        return await self._book.nearest(slot, vector, min_similarity, now)

    async def purge(self, tenant: str, user: str | None = None) -> int:
        def delete(conn: sqlite3.Connection) -> int:
            if user is None:
                n = conn.execute("DELETE FROM cache_vectors WHERE tenant = ?", (tenant,)).rowcount
            else:
                n = conn.execute("DELETE FROM cache_vectors WHERE tenant = ? AND user = ?", (tenant, user)).rowcount
            self._rows = None
            return int(n)

        n = await self._db.run(delete)
        self._book.remove(self._book.rows(tenant, user))
        return n

    async def count(self, tenant: str | None = None) -> int:
        return await self._db.run(lambda conn: _count(conn, tenant))

    async def aclose(self) -> None:
        await self._db.aclose()


def _read(conn: sqlite3.Connection, slot: Slot) -> Loaded:
    rows = conn.execute(
        "SELECT key, vector, stale_until, user FROM cache_vectors"
        " WHERE tenant = ? AND partition = ? AND model = ? ORDER BY id",
        slot,
    ).fetchall()
    return build(slot, rows)


def _numpy_bytes(vector: Sequence[float]) -> bytes:
    import numpy

    return numpy.asarray(vector, dtype=numpy.float32).tobytes()


def _count(conn: sqlite3.Connection, tenant: str | None) -> int:
    if tenant is None:
        return int(conn.execute("SELECT count(*) FROM cache_vectors").fetchone()[0])
    return int(conn.execute("SELECT count(*) FROM cache_vectors WHERE tenant = ?", (tenant,)).fetchone()[0])
