"""What the SQL backends do differently, as data (`Dialect`) and as the connection seam (`Database`).

The capability stores in this package write each statement once with `Dialect`'s few spellings
(placeholder, a JSON parameter, two-argument min/max, an overflow-safe sum, a row lock) and run it
through a `Database`: a backend's connections, its transactions and the one operation whose
strategy differs (inserting rows that may already be there, saying which went in). A `Database`
adds no round trip: `session` is the one connection a call would have used, `transaction` the
transaction it would have opened.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol

Row = Sequence[Any]


# PostgreSQL, a FROM item: the autocommitted statement naming it commits without waiting for its WAL flush
# (synchronous_commit off for its own transaction; see Database.transaction's durable=False)
NO_FLUSH = "(SELECT set_config('synchronous_commit', 'off', true)) AS no_flush"


@dataclass(frozen=True, slots=True)
class Dialect:
    name: str  # its migrations' folder: sqlite | postgres
    mark: str  # a parameter: ? | %s
    json_mark: str  # a parameter holding JSON text: ? | %s::jsonb
    least: str  # two-argument minimum: min | LEAST
    greatest: str
    total: str  # a sum that cannot overflow: TOTAL (a float) | SUM
    skip_locked: str  # after a bounded delete's row pick: "" | " FOR UPDATE SKIP LOCKED"
    ordered: bool  # several writer processes: write rows in key order so their locks never deadlock
    ledger: str  # CREATE TABLE IF NOT EXISTS keel_migrations, in its types
    migration_lock: str | None  # a statement serialising migrators inside their transaction
    notify: str | None = None  # wakes other processes' job workers (one parameter: the queue); None: they poll

    def marks(self, n: int) -> str:
        return ", ".join([self.mark] * n)

    def values(self, columns: Sequence[str], json: frozenset[str] = frozenset()) -> str:
        """One parameter per column, JSON ones cast as the dialect needs."""
        return ", ".join(self.json_mark if c in json else self.mark for c in columns)


@functools.cache
def insert_sql(dialect: Dialect, table: str, columns: tuple[str, ...], json: frozenset[str], returning: bool) -> str:
    """INSERT of one row that does nothing when its id (the first column) is there already."""
    sql = (
        f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({dialect.values(columns, json)})"
        f" ON CONFLICT ({columns[0]}) DO NOTHING"
    )
    return sql + f" RETURNING {columns[0]}" if returning else sql


class Session(Protocol):
    """One connection: autocommit, or inside the transaction that `Database.transaction` opened."""

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one statement; the rows it changed."""
        ...

    def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Row]: ...

    def fetchone(self, sql: str, params: Sequence[Any] = ()) -> Row | None: ...

    def executemany(self, sql: str, rows: Sequence[Row]) -> None:
        """One statement over many rows, batched as the backend batches best."""
        ...

    def insert_new(
        self, table: str, columns: tuple[str, ...], rows: Sequence[Row], json: frozenset[str] = frozenset()
    ) -> list[int]:
        """Insert the rows whose id (first column) is not in `table` yet; the indexes of those inserted,
        in order. A batch may carry one id twice: only the first goes in. Inside a transaction."""
        ...


class Database(Protocol):
    """A backend's connections, as the capability stores use them."""

    dialect: Dialect
    duplicate: tuple[type[Exception], ...]  # a unique key refused the row
    integrity: tuple[type[Exception], ...]  # any constraint refused it

    def session(self) -> AbstractContextManager[Session]:
        """A connection for a few autocommitted statements."""
        ...

    def transaction(self, *, durable: bool = True) -> AbstractContextManager[Session]:
        """A connection in one transaction: committed at the end of the block, rolled back on an error.
        SQLite takes the write lock at once (BEGIN IMMEDIATE). `durable=False`: the commit may return
        before its WAL reaches the disk (PostgreSQL's synchronous_commit off for this transaction; SQLite's
        commits never wait for a flush here, synchronous=NORMAL): a crash of the database server or the OS
        can lose the last such commits, in commit order, never one without those after it."""
        ...

    def refused(self, exc: Exception) -> bool:
        """Did the database refuse a row for its content (so the same rows would be refused again)?"""
        ...

    def close(self) -> None: ...
