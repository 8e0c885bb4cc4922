"""One SQLite connection owned by one worker thread, awaited from the event loop.

The caches' SQLite backends run every statement here, so the loop never blocks on disk and the
connection is never shared between threads. Statements queue in order: a write submitted before a
read is visible to it. WAL mode, synchronous=NORMAL (a disposable cache needs no fsync per commit).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from keel.store.sqlite import _set_wal

T = TypeVar("T")


def sqlite_path(url: str) -> str:
    if not url.startswith("sqlite:///"):
        raise ValueError(f"not a SQLite URL: {url!r} (use sqlite:///path/to/file.db)")
    path = url.removeprefix("sqlite:///")
    if path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    return path


class SqliteThread:
    def __init__(self, url: str, schema: str, name: str) -> None:
        self._path = sqlite_path(url)
        self._schema = schema
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._conn: sqlite3.Connection | None = None
        self._closed = False

    def _open(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self._path, timeout=30, isolation_level=None, check_same_thread=False)
        _set_wal(conn)
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.executescript(self._schema)
        return conn

    def _call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._conn is None:
            self._conn = self._open()
        return fn(self._conn)

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn(connection)` in the worker thread."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, self._call, fn)

    def submit(self, fn: Callable[[sqlite3.Connection], object]) -> None:
        """Queue `fn(connection)` without waiting for it."""
        self._pool.submit(self._call, fn)

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    async def aclose(self) -> None:
        """Finish what is queued, close the connection, end the thread. Idempotent."""
        if self._closed:
            return
        self._closed = True
        await asyncio.get_running_loop().run_in_executor(self._pool, self._close)
        self._pool.shutdown(wait=False)
