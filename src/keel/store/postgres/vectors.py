"""The vector index in PostgreSQL with pgvector, shared by every gateway process.

The schema is the store's own (the cache is disposable, not part of the numbered migrations): one
table per dimension, `keel_cache_vectors_<dim>`, since a pgvector column and its HNSW index have one
dimension; a change of embedding model to another size simply starts a new table. Rows are unique by
(tenant, partition, model, key), whose btree also serves the filter; an HNSW index
(vector_cosine_ops) serves `ORDER BY embedding <=> q LIMIT 1`; similarity = 1 − cosine distance.

HNSW and filters: the index returns the `hnsw.ef_search` nearest rows of the whole table and the
filter runs after, so a partition that is a small share of a large table could come back empty.
pgvector ≥ 0.8 fixes that with `hnsw.iterative_scan`, set on every connection when available. Before
0.8 (pgserver ships 0.6.2) the planner picks the exact btree path for selective filters and HNSW
only when the partition is a large share of the table (tests/contracts/test_cache_contract.py checks a small
partition beside a large one); `_EF_SEARCH` widens the candidate list for the cases in between.
A miss there costs a cache hit, never a wrong answer: the filter always holds.

Bound: each table holds at most about `max_entries` rows; the count is tracked per process, recounted
before evicting, and past the bound the oldest rows (by id; a replaced row gets a new id) go in
one DELETE down to 95% of it. Rows past stale_until are never returned and are deleted every
`_SWEEP_EVERY` adds.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

from psycopg import AsyncConnection, sql
from psycopg_pool import AsyncConnectionPool

from keel.store.postgres import POOL_WAIT_S, RECONNECT_S, link_options
from keel.store.protocols import VectorHit

_SWEEP_EVERY = 1000
_EF_SEARCH = 100  # pgvector's default is 40
_TABLE = "keel_cache_vectors_{}"
_DDL = """
CREATE TABLE IF NOT EXISTS {t} (
  id bigserial PRIMARY KEY,
  tenant text NOT NULL,
  partition text NOT NULL,
  model text NOT NULL,
  key text NOT NULL,
  embedding vector({dim}) NOT NULL,
  stale_until double precision NOT NULL,
  "user" text,
  UNIQUE (tenant, partition, model, key)
);
CREATE INDEX IF NOT EXISTS {hnsw} ON {t} USING hnsw (embedding vector_cosine_ops);
CREATE INDEX IF NOT EXISTS {stale} ON {t} (stale_until);
"""
_UPSERT = """
INSERT INTO {t} (tenant, partition, model, key, embedding, stale_until, "user") VALUES (%s, %s, %s, %s, %s::vector, %s, %s)
ON CONFLICT (tenant, partition, model, key) DO UPDATE
SET id = DEFAULT, embedding = excluded.embedding, stale_until = excluded.stale_until, "user" = excluded."user"
"""
_NEAREST = """
SELECT key, 1 - (embedding <=> %(q)s::vector) FROM {t}
WHERE tenant = %(tenant)s AND partition = %(partition)s AND model = %(model)s AND stale_until > %(now)s
ORDER BY embedding <=> %(q)s::vector LIMIT 1
"""
_EVICT = "DELETE FROM {t} WHERE id IN (SELECT id FROM {t} ORDER BY id LIMIT %s)"
_TABLES = "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() AND tablename LIKE 'keel\\_cache\\_vectors\\_%'"


def _literal(vector: Sequence[float]) -> str:
    return "[" + ",".join(map(repr, map(float, vector))) + "]"


class PgVectors:
    def __init__(self, url: str, max_entries: int, *, pool_size: int = 8) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self._max = max_entries
        self._keep = max_entries - max_entries // 20
        self._pool = AsyncConnectionPool(
            url,
            min_size=1,
            max_size=pool_size,
            open=False,
            configure=_configure,
            kwargs={"autocommit": True, **link_options(url)},
            timeout=POOL_WAIT_S,
            reconnect_timeout=RECONNECT_S,
        )
        self._opened = False
        self._lock = asyncio.Lock()
        self._dims: set[int] = set()  # dimensions whose table exists
        self._rows: dict[int, int] = {}  # per dimension: row count as last known plus adds since
        self._adds = 0

    async def _ready(self, dim: int) -> sql.Identifier:
        """Open the pool and create the table for `dim` on first use."""
        table = sql.Identifier(_TABLE.format(dim))
        if dim in self._dims:
            return table
        await self._open()
        async with self._lock:
            if dim not in self._dims:
                name = _TABLE.format(dim)
                ddl = sql.SQL(_DDL).format(
                    t=table,
                    dim=sql.Literal(dim),
                    hnsw=sql.Identifier(f"{name}_hnsw"),
                    stale=sql.Identifier(f"{name}_stale"),
                )
                async with self._pool.connection() as conn:
                    async with (
                        conn.transaction()
                    ):  # one process at a time: concurrent CREATE ... IF NOT EXISTS can clash
                        await conn.execute("SELECT pg_advisory_xact_lock(hashtext('keel_cache_vectors'))")
                        await conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
                        await conn.execute(ddl)
                    await _configure(conn)  # it may have been opened before the extension existed
                self._dims.add(dim)
        return table

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
        dim = len(vector)
        table = await self._ready(dim)
        async with self._pool.connection() as conn:
            await conn.execute(
                sql.SQL(_UPSERT).format(t=table), (tenant, partition, model, key, _literal(vector), stale_until, user)
            )
            await self._housekeep(conn, table, dim)

    async def _housekeep(self, conn: AsyncConnection[Any], table: sql.Identifier, dim: int) -> None:
        self._adds += 1
        if self._adds >= _SWEEP_EVERY:
            self._adds = 0
            await conn.execute(sql.SQL("DELETE FROM {t} WHERE stale_until <= %s").format(t=table), (time.time(),))
            self._rows.pop(dim, None)
        known = self._rows.get(dim)
        rows = known + 1 if known is not None else await _count(conn, table)
        if rows > self._max:
            rows = await _count(conn, table)  # other processes add and evict too
            if rows > self._max:
                cur = await conn.execute(sql.SQL(_EVICT).format(t=table), (rows - self._keep,))
                rows -= cur.rowcount
        self._rows[dim] = rows

    async def nearest(
        self, tenant: str, partition: str, model: str, vector: Sequence[float], min_similarity: float, now: float
    ) -> VectorHit | None:
        table = await self._ready(len(vector))
        params = {"q": _literal(vector), "tenant": tenant, "partition": partition, "model": model, "now": now}
        async with self._pool.connection() as conn:
            cur = await conn.execute(sql.SQL(_NEAREST).format(t=table), params)
            row = await cur.fetchone()
        if row is None or row[1] < min_similarity:
            return None
        return VectorHit(row[0], float(row[1]))

    async def _tables(self, conn: AsyncConnection[Any]) -> list[sql.Identifier]:
        cur = await conn.execute(_TABLES)
        return [sql.Identifier(name) for (name,) in await cur.fetchall()]

    async def purge(self, tenant: str, user: str | None = None) -> int:
        await self._open()
        n = 0
        async with self._pool.connection() as conn:
            for table in await self._tables(conn):
                if user is None:
                    cur = await conn.execute(sql.SQL("DELETE FROM {t} WHERE tenant = %s").format(t=table), (tenant,))
                else:
                    query = sql.SQL('DELETE FROM {t} WHERE tenant = %s AND "user" = %s').format(t=table)
                    cur = await conn.execute(query, (tenant, user))
                n += cur.rowcount
        self._rows.clear()
        return n

    async def count(self, tenant: str | None = None) -> int:
        await self._open()
        n = 0
        async with self._pool.connection() as conn:
            for table in await self._tables(conn):
                n += await _count(conn, table, tenant)
        return n

    async def _open(self) -> None:
        async with self._lock:
            if not self._opened:
                await self._pool.open()
                self._opened = True

    async def aclose(self) -> None:
        if self._opened:
            await self._pool.close()


async def _configure(conn: AsyncConnection[Any]) -> None:
    """Each new connection: a wider HNSW candidate list, and iterative scans where pgvector has them."""
    cur = await conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
    row = await cur.fetchone()
    await conn.execute(sql.SQL("SET hnsw.ef_search = {}").format(sql.Literal(_EF_SEARCH)))
    if row is not None and tuple(int(p) for p in row[0].split(".")[:2]) >= (0, 8):
        await conn.execute("SET hnsw.iterative_scan = relaxed_order")


async def _count(conn: AsyncConnection[Any], table: sql.Identifier, tenant: str | None = None) -> int:
    if tenant is None:
        cur = await conn.execute(sql.SQL("SELECT count(*) FROM {t}").format(t=table))
    else:
        cur = await conn.execute(sql.SQL("SELECT count(*) FROM {t} WHERE tenant = %s").format(t=table), (tenant,))
    row = await cur.fetchone()
    return int(row[0]) if row else 0
