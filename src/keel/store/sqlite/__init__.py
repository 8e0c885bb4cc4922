"""SQLite backend: WAL, one connection per thread, migrations applied on open.

The trace writer's thread is the one steady writer; admin writes are rare and wait on
`busy_timeout`. Readers (admin API, CLI) get their own connections, so reads never block writes.
The statements are keel.store.sql's; this module holds the connections, the write transaction
(BEGIN IMMEDIATE) and how rows that may exist already are inserted (executemany cannot RETURNING).
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

from keel.errors import ConfigError, ConfigIssue
from keel.store.sql.dialect import Dialect, Row, Session, insert_sql
from keel.store.sql.store import SqlStore

SQLITE = Dialect(
    name="sqlite",
    mark="?",
    json_mark="?",
    least="min",
    greatest="max",
    total="TOTAL",  # a float: SUM raises on int64 overflow
    skip_locked="",
    ordered=False,  # one writer at a time (the write lock): no lock order to keep
    ledger=(
        "CREATE TABLE IF NOT EXISTS keel_migrations"
        " (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at REAL NOT NULL)"
    ),
    migration_lock=None,  # BEGIN IMMEDIATE already holds the write lock
)
# what a record's content makes SQLite (or its binding) refuse: an int beyond 64 bits, a value too big
_REFUSED = (OverflowError, UnicodeError, sqlite3.DataError, sqlite3.IntegrityError, sqlite3.InterfaceError)
_GIL_ROWS = 256  # rows per executemany call in the trace writer's transaction (see _Session.executemany)
_IN_CHUNK = 900  # ids per IN (...), within SQLite's bound-parameter limit


def _set_wal(conn: sqlite3.Connection) -> None:
    """Switch to WAL. On a brand-new file this can fail at once with "locked" (the busy timeout does
    not apply to the switch) while other connections open it too: retry for a while."""
    deadline = time.monotonic() + 30
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.005)


class _Session(AbstractContextManager["_Session"]):
    """This thread's connection; entering it opens nothing (autocommit)."""

    __slots__ = ("conn",)

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __exit__(self, *exc: object) -> None:
        return None

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        return self.conn.execute(sql, params).rowcount

    def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        return self.conn.execute(sql, params).fetchall()

    def fetchone(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        row: Row | None = self.conn.execute(sql, params).fetchone()
        return row

    def executemany(self, sql: str, rows: Sequence[Row]) -> None:
        """executemany in slices: one call over thousands of rows holds the GIL throughout (5,000 trace rows:
        ~75 ms during which the event loop cannot run); between slices the loop gets it back. Same
        transaction, same statement: the cost is the same (bench/tail.py, bench/README.md)."""
        for i in range(0, len(rows), _GIL_ROWS):
            self.conn.executemany(sql, rows[i : i + _GIL_ROWS])

    def insert_new(
        self, table: str, columns: tuple[str, ...], rows: Sequence[Row], json: frozenset[str] = frozenset()
    ) -> list[int]:
        """Under the write lock no other writer can add ids meanwhile: look them up, insert the rest."""
        ids = list({row[0] for row in rows})
        present: set[Any] = set()
        for i in range(0, len(ids), _IN_CHUNK):
            chunk = ids[i : i + _IN_CHUNK]
            sql = f"SELECT {columns[0]} FROM {table} WHERE {columns[0]} IN ({SQLITE.marks(len(chunk))})"
            present.update(found[0] for found in self.conn.execute(sql, chunk))
        inserted: list[int] = []
        new_rows = []
        for i, row in enumerate(rows):
            if row[0] not in present:
                present.add(row[0])  # a batch may carry one id twice: the first one counts
                inserted.append(i)
                new_rows.append(row)
        self.executemany(insert_sql(SQLITE, table, columns, json, False), new_rows)
        return inserted


class _Sqlite:
    """One connection per thread, opened on first use; all closed together."""

    dialect = SQLITE
    duplicate: tuple[type[Exception], ...] = (sqlite3.IntegrityError,)
    integrity: tuple[type[Exception], ...] = (sqlite3.IntegrityError,)

    def __init__(self, path: str) -> None:
        self.path = path
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()

    def session(self) -> _Session:
        session: _Session | None = getattr(self._local, "session", None)
        if session is None:
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            _set_wal(conn)
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
            session = self._local.session = _Session(conn)
            with self._lock:
                self._all.append(conn)
        return session

    @contextmanager
    def transaction(self, *, durable: bool = True) -> Iterator[Session]:
        session = self.session()
        session.conn.execute("BEGIN IMMEDIATE")
        try:
            yield session
            session.conn.execute("COMMIT")
        except BaseException:
            session.conn.execute("ROLLBACK")
            raise

    def refused(self, exc: Exception) -> bool:
        return isinstance(exc, _REFUSED)

    def close(self) -> None:
        with self._lock:
            for conn in self._all:
                conn.close()
            self._all.clear()
        self._local = threading.local()


class SqliteStore(SqlStore):
    def __init__(self, url: str) -> None:
        path = url.removeprefix("sqlite:///")
        self.path = path
        if path != ":memory:":
            _writable_dir(url, Path(path).parent)
        super().__init__(url, _Sqlite(path))


def _writable_dir(url: str, folder: Path) -> None:
    """Create the database's folder; refuse, naming the setting, when it cannot be created or written
    (SQLite itself only says "unable to open database file", at the first statement)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        problem = None if os.access(folder, os.W_OK | os.X_OK) else "is not writable"
    except OSError as exc:
        problem = f"cannot be created ({exc.strerror})"
    if problem is not None:
        fix = "point storage.url at a writable folder (in a container: mount a volume there)"
        raise ConfigError([ConfigIssue("storage.url", f"{url}: the folder {folder} {problem}", fix)])
