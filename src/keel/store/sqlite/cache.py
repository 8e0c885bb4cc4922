"""Exact-match cache entries in their own SQLite file, worked by one thread (store/sqlite_thread.py).

The cache is disposable, so its schema is created here (IF NOT EXISTS), outside the numbered
migrations of the control-data store. Least-recently-used is approximated by `last_used`: the
caller's `now` of a hit, collected in memory and written in batches ahead of the next write; a put
sets it to the entry's `created_at`. Past `max_entries` the least recently used rows go in one
DELETE, down to 95% of the bound, so eviction runs once per ~5% of the bound's puts, not on each.
The row count is tracked in process and recounted before evicting; several processes sharing the
file can each overshoot the bound by the puts they made since their last recount. Rows past
`stale_until` are skipped by `get` and deleted every `_SWEEP_EVERY` puts.
"""

from __future__ import annotations

import logging
import sqlite3

from keel.store.protocols import CacheEntry
from keel.store.sqlite.thread import SqliteThread

log = logging.getLogger("keel.store.sqlite_cache")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS cache_entries (
  tenant TEXT NOT NULL,
  key TEXT NOT NULL,
  value BLOB NOT NULL,
  created_at REAL NOT NULL,
  expires_at REAL NOT NULL,
  stale_until REAL NOT NULL,
  cost_usd REAL,
  user TEXT,
  last_used REAL NOT NULL,
  PRIMARY KEY (tenant, key)
);
CREATE INDEX IF NOT EXISTS cache_entries_last_used ON cache_entries (last_used);
CREATE INDEX IF NOT EXISTS cache_entries_stale_until ON cache_entries (stale_until);
"""
_UPSERT = (
    "INSERT INTO cache_entries (tenant, key, value, created_at, expires_at, stale_until, cost_usd, user, last_used)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (tenant, key) DO UPDATE SET value = excluded.value,"
    " created_at = excluded.created_at, expires_at = excluded.expires_at, stale_until = excluded.stale_until,"
    " cost_usd = excluded.cost_usd, user = excluded.user, last_used = excluded.last_used"
)
_TOUCH = "UPDATE cache_entries SET last_used = ? WHERE tenant = ? AND key = ? AND last_used < ?"
_EVICT = "DELETE FROM cache_entries WHERE rowid IN (SELECT rowid FROM cache_entries ORDER BY last_used LIMIT ?)"
_TOUCH_BATCH = 256  # hits remembered before their last_used is written without waiting for a put
_SWEEP_EVERY = 1000  # puts between deletions of rows past stale_until


class SqliteCache:
    def __init__(self, url: str, max_entries: int) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self._max = max_entries
        self._keep = max_entries - max_entries // 20  # eviction leaves this many
        self._db = SqliteThread(url, _SCHEMA, "keel-cache")
        self._touched: dict[tuple[str, str], float] = {}  # hits whose last_used is not written yet
        # worker thread only: the row count as last known plus puts since, and puts since the last sweep
        self._rows: int | None = None
        self._puts = 0

    async def get(self, tenant: str, key: str, now: float) -> CacheEntry | None:
        def read(conn: sqlite3.Connection) -> tuple[bytes, float, float, float, float | None, str | None] | None:
            return conn.execute(  # type: ignore[no-any-return]
                "SELECT value, created_at, expires_at, stale_until, cost_usd, user FROM cache_entries"
                " WHERE tenant = ? AND key = ?",
                (tenant, key),
            ).fetchone()

        row = await self._db.run(read)
        if row is None or row[3] <= now:
            return None
        self._touched[(tenant, key)] = now
        if len(self._touched) >= _TOUCH_BATCH:
            touches = self._take_touches()
            self._db.submit(lambda conn: _touch(conn, touches))
        return CacheEntry(tenant, key, row[0], row[1], row[2], row[3], row[4], row[5])

    def _take_touches(self) -> list[tuple[float, str, str, float]]:
        touches = [(at, t, k, at) for (t, k), at in self._touched.items()]
        self._touched.clear()
        return touches

    async def put(self, entry: CacheEntry) -> None:
        touches = self._take_touches()
        e = entry
        values = (e.tenant, e.key, e.value, e.created_at, e.expires_at, e.stale_until, e.cost_usd, e.user, e.created_at)

        def write(conn: sqlite3.Connection) -> None:
            conn.execute("BEGIN IMMEDIATE")
            try:
                _touch(conn, touches)
                conn.execute(_UPSERT, values)
                self._housekeep(conn, e.created_at)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

        await self._db.run(write)

    def _housekeep(self, conn: sqlite3.Connection, now: float) -> None:
        """Worker thread: sweep dead rows now and then; evict the least recently used past the bound."""
        self._puts += 1
        if self._puts >= _SWEEP_EVERY:
            self._puts = 0
            conn.execute("DELETE FROM cache_entries WHERE stale_until <= ?", (now,))
            self._rows = None
        self._rows = (self._rows + 1) if self._rows is not None else _count(conn, None)
        if self._rows <= self._max:
            return
        self._rows = _count(conn, None)  # other processes may have added or evicted rows
        if self._rows > self._max:
            self._rows -= conn.execute(_EVICT, (self._rows - self._keep,)).rowcount

    async def purge(self, tenant: str, user: str | None = None) -> int:
        touches = self._take_touches()

        def delete(conn: sqlite3.Connection) -> int:
            _touch(conn, touches)
            if user is None:
                n = conn.execute("DELETE FROM cache_entries WHERE tenant = ?", (tenant,)).rowcount
            else:
                n = conn.execute("DELETE FROM cache_entries WHERE tenant = ? AND user = ?", (tenant, user)).rowcount
            self._rows = None
            return int(n)

        return await self._db.run(delete)

    async def count(self, tenant: str | None = None) -> int:
        return await self._db.run(lambda conn: _count(conn, tenant))

    async def aclose(self) -> None:
        touches = self._take_touches()
        if touches:
            await self._db.run(lambda conn: _touch(conn, touches))
        await self._db.aclose()


def _touch(conn: sqlite3.Connection, touches: list[tuple[float, str, str, float]]) -> None:
    if touches:
        conn.executemany(_TOUCH, touches)


def _count(conn: sqlite3.Connection, tenant: str | None) -> int:
    if tenant is None:
        return int(conn.execute("SELECT count(*) FROM cache_entries").fetchone()[0])
    return int(conn.execute("SELECT count(*) FROM cache_entries WHERE tenant = ?", (tenant,)).fetchone()[0])
