"""PostgreSQL backend: psycopg 3 with a small connection pool, migrations applied on open.

Connections run in autocommit; anything that must be atomic (a trace batch, a migration with its
ledger row) opens an explicit transaction. JSON columns are JSONB: rows.py hands us JSON text,
cast with `::jsonb` on the way in; psycopg decodes them (with orjson) on the way out.
Migrations serialise on a transaction-level advisory lock, so processes starting together are safe.
The statements are keel.store.sql's; this module holds the pool, the dialect and the idempotent insert
(executemany … RETURNING id, one pipeline).

Outages: no request waits on this store (keys, limits and traces are served from memory and
written from background threads), but those threads must come back when the database does. So a
caller waits at most `POOL_WAIT_S` for a connection, a connection attempt at most 5 s, a pooled
connection whose peer vanished is dropped by TCP keepalive and `tcp_user_timeout` within ~30 s, and
the pool retries a failed connection for at most `RECONNECT_S` (its backoff would otherwise grow to
minutes) before the next caller starts a fresh attempt. URL parameters of the same names win.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import orjson
import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import TupleRow
from psycopg.types.json import set_json_loads
from psycopg_pool import ConnectionPool

from keel.store.postgres.rag_vectors import PgRagVectors
from keel.store.sql.dialect import Dialect, Row, Session, insert_sql
from keel.store.sql.store import SqlStore

JOBS_CHANNEL = "keel_jobs"  # LISTEN/NOTIFY: jobs were queued (keel.store.postgres.wakeups)
POSTGRES = Dialect(
    name="postgres",
    mark="%s",
    json_mark="%s::jsonb",
    least="LEAST",
    greatest="GREATEST",
    total="SUM",
    skip_locked=" FOR UPDATE SKIP LOCKED",
    ordered=True,  # several processes write: rows locked in key order never deadlock
    ledger=(
        "CREATE TABLE IF NOT EXISTS keel_migrations"
        " (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at DOUBLE PRECISION NOT NULL)"
    ),
    migration_lock="SELECT pg_advisory_xact_lock(hashtext('keel_migrations'))",
    notify=f"SELECT pg_notify('{JOBS_CHANNEL}', %s)",
)
# SQLSTATE classes that blame a record's content: data exception, integrity, program limit (an
# index row too large); psycopg's own DataError (NUL in text) has no SQLSTATE
_REFUSED = ("22", "23", "54")

Conn = psycopg.Connection[TupleRow]
POOL_WAIT_S = 5.0
RECONNECT_S = 10.0
LINK_DEFAULTS = {
    "connect_timeout": 5,
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
    "tcp_user_timeout": 30_000,  # ms that sent data may go unacknowledged before the connection is dropped
}


def link_options(url: str) -> dict[str, object]:
    """Connection timeouts and keepalives for `url`, except those the URL sets itself."""
    given = conninfo_to_dict(url)
    return {k: v for k, v in LINK_DEFAULTS.items() if k not in given}


def _configure(conn: Conn) -> None:
    set_json_loads(orjson.loads, conn)


class _Session:
    """A pooled connection (autocommit unless inside `transaction`). No parameters → none sent, so
    a statement without any (a migration) is taken as written, `%` and all."""

    __slots__ = ("_conn",)

    def __init__(self, conn: Conn) -> None:
        self._conn = conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        return self._conn.execute(sql, params or None).rowcount

    def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        return list(self._conn.execute(sql, params or None).fetchall())

    def fetchone(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        return self._conn.execute(sql, params or None).fetchone()

    def executemany(self, sql: str, rows: Sequence[Row]) -> None:
        with self._conn.cursor() as cur:
            cur.executemany(sql, rows)

    def copy_rows(self, table: str, columns: Sequence[str], types: Sequence[str], rows: Sequence[Row]) -> None:
        """Rows into `table` by one binary COPY: `types` are the columns' types, in order (a value typed
        "bytea" is sent as it is: the column's type reads it, e.g. pgvector's binary form)."""
        with (
            self._conn.cursor() as cur,
            cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN (FORMAT BINARY)") as cp,
        ):
            cp.set_types(list(types))
            for row in rows:
                cp.write_row(row)

    def insert_new(
        self, table: str, columns: tuple[str, ...], rows: Sequence[Row], json: frozenset[str] = frozenset()
    ) -> list[int]:
        with self._conn.cursor() as cur:
            cur.executemany(insert_sql(POSTGRES, table, columns, json, True), rows, returning=True)
            new = {found[0] for _ in cur.results() for found in cur.fetchall()}  # ids this batch inserted
        inserted = []
        for i, row in enumerate(rows):
            if row[0] in new:
                new.discard(row[0])  # a batch may carry one id twice: only the first went in
                inserted.append(i)
        return inserted


class _Postgres:
    dialect = POSTGRES
    duplicate: tuple[type[Exception], ...] = (psycopg.errors.UniqueViolation,)
    integrity: tuple[type[Exception], ...] = (psycopg.IntegrityError,)

    def __init__(self, url: str, max_size: int) -> None:
        self._pool: ConnectionPool[Conn] = ConnectionPool(
            url,
            min_size=1,
            max_size=max_size,
            kwargs={"autocommit": True, **link_options(url)},
            configure=_configure,
            name="keel-store",
            open=True,
            timeout=POOL_WAIT_S,
            reconnect_timeout=RECONNECT_S,
        )

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self._pool.connection() as conn:
            yield _Session(conn)

    @contextmanager
    def transaction(self, *, durable: bool = True) -> Iterator[Session]:
        with self._pool.connection() as conn, conn.transaction():
            if not durable:  # this transaction's commit returns before its WAL flush
                conn.execute("SET LOCAL synchronous_commit = off")
            yield _Session(conn)

    def refused(self, exc: Exception) -> bool:
        if not isinstance(exc, psycopg.Error):
            return False
        return isinstance(exc, psycopg.DataError | psycopg.IntegrityError) or (exc.sqlstate or "")[:2] in _REFUSED

    def close(self) -> None:
        self._pool.close()


class PostgresStore(PgRagVectors, SqlStore):
    def __init__(self, url: str, *, max_size: int = 8) -> None:
        super().__init__(url, _Postgres(url, max_size))
