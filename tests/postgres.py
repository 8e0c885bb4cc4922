"""PostgreSQL for tests: each test gets a migrated schema of its own, without paying for the migrations.

Creating a schema's ~50 tables and ~100 indexes and dropping them again is catalog work that cost
0.4 s idle and 1–2 s on the loaded CI machine, for ~600 cases. So each process (each xdist worker:
they never share anything) has a database of its own, `keel_w_…`, migrated once into a `seed` schema
nobody is handed, and recycles the schemas its tests used. Giving one back (`release`), in order:

1. every other connection to the worker's database is terminated (waiting until it is gone): what a
   test left behind cannot write into the next test's schema;
2. a schema whose catalog (tables, columns, defaults, indexes, constraints, sequences, functions,
   types) no longer matches `seed`'s is dropped, never reused;
3. otherwise every row is deleted, the rows the migrations seeded are copied back from `seed`, every
   sequence is set back to `seed`'s state, and the schema is renamed to a fresh random name — so a pool reconnecting with
   the old URL finds nothing rather than the next test's tables.

A test thus starts from exactly what the migrations leave: the same catalog, the same rows, fresh
sequences. Tests of the migrations themselves ask for an empty schema (`empty`).
URLs keep the shape the per-test schemas always had: `…/<db>?options=-csearch_path%3D<schema>`.
"""

from __future__ import annotations

import secrets
import threading
from typing import Any
from urllib.parse import urlsplit, urlunsplit

SEED = "keel_seed"
FINGERPRINT = """
SELECT md5(string_agg(replace(item, %(s)s || '.', ''), E'\\n' ORDER BY item)) FROM (
  SELECT 'rel ' || c.relname || ' ' || c.relkind::text || ' ' || coalesce(pg_get_indexdef(c.oid), '') AS item
    FROM pg_class c WHERE c.relnamespace = %(s)s::regnamespace
  UNION ALL
  SELECT 'col ' || c.relname || '.' || a.attname || ' ' || format_type(a.atttypid, a.atttypmod) || ' '
         || a.attnotnull::text || ' ' || a.attgenerated::text || ' ' || coalesce(pg_get_expr(d.adbin, d.adrelid), '')
    FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
    LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
    WHERE c.relnamespace = %(s)s::regnamespace AND a.attnum > 0 AND NOT a.attisdropped
  UNION ALL
  SELECT 'con ' || conname || ' ' || pg_get_constraintdef(oid) FROM pg_constraint
    WHERE connamespace = %(s)s::regnamespace
  UNION ALL
  SELECT 'trg ' || tgname || ' ' || pg_get_triggerdef(t.oid) FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
    WHERE c.relnamespace = %(s)s::regnamespace AND NOT t.tgisinternal
  UNION ALL
  SELECT 'fn ' || p.oid::regprocedure::text || ' ' || md5(p.prosrc) FROM pg_proc p
    WHERE p.pronamespace = %(s)s::regnamespace
  UNION ALL
  SELECT 'type ' || typname FROM pg_type WHERE typnamespace = %(s)s::regnamespace
) AS catalog
"""


def _name(prefix: str) -> str:
    return prefix + secrets.token_hex(6)


class Databases:
    """This process's PostgreSQL database for tests on the server of `base` (a postgresql:// URL)."""

    def __init__(self, base: str) -> None:
        self._base = base
        self._db: str | None = None
        self._spare: list[str] = []  # clean, migrated schemas
        self._seeded: list[str] = []  # tables whose rows the migrations insert
        self._fingerprint = ""
        self._lock = threading.Lock()

    def url(self, schema: str, db: str | None = None) -> str:
        parts = urlsplit(self._base)
        query = "&".join(q for q in (parts.query, f"options=-csearch_path%3D{schema}") if q)
        return urlunsplit(parts._replace(path="/" + (db or self._database()), query=query))

    def migrated(self) -> str:
        """The URL of a migrated schema of the caller's own."""
        db = self._database()
        with self._lock:
            schema = self._spare.pop() if self._spare else None
        if schema is None:
            schema = _name("keel_s_")
            self._admin(db, f"CREATE SCHEMA {schema}")
            self._migrate(self.url(schema, db))
        return self.url(schema, db)

    def empty(self) -> str:
        """The URL of an empty schema of the caller's own."""
        db, schema = self._database(), _name("keel_e_")
        self._admin(db, f"CREATE SCHEMA {schema}")
        return self.url(schema, db)

    def release(self, url: str) -> None:
        """Give back a schema from `migrated` or `empty`: recycled if still as migrated, else dropped."""
        import psycopg

        schema = url.rsplit("%3D", 1)[1]
        db = self._database()
        with psycopg.connect(self.url("pg_catalog", db), autocommit=True) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid, 10000) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
            if not schema.startswith("keel_s_") or self._catalog(conn, schema) != self._fingerprint:
                conn.execute(f"DROP SCHEMA {schema} CASCADE".encode())
                return
            fresh = _name("keel_s_")
            with conn.transaction():
                conn.execute(self._reset_sql(conn, schema).encode())
                conn.execute(f"ALTER SCHEMA {schema} RENAME TO {fresh}".encode())
        with self._lock:
            self._spare.append(fresh)

    def close(self) -> None:
        """Drop this process's database, if it made one."""
        with self._lock:
            db, self._db = self._db, None
        if db is not None:
            self._admin(None, f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")

    def _reset_sql(self, conn: Any, schema: str) -> str:
        """Empty every table (DELETE: a TRUNCATE makes new files for ~150 relations, as slow as a new
        schema), copy the seeded rows back, and put every sequence where `seed` has it."""
        tables = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = %s", (schema,)).fetchall()
        sequences = conn.execute("SELECT sequencename FROM pg_sequences WHERE schemaname = %s", (schema,)).fetchall()
        return "".join(
            ["SET LOCAL session_replication_role = replica;"]  # no foreign key checks: any order empties them
            + [f"DELETE FROM {schema}.{t};" for (t,) in tables]
            + [f"INSERT INTO {schema}.{t} SELECT * FROM {SEED}.{t};" for t in self._seeded]
            + [f"SELECT setval('{schema}.{q}', last_value, is_called) FROM {SEED}.{q};" for (q,) in sequences]
        )

    def _catalog(self, conn: Any, schema: str) -> str:
        with conn.transaction():
            conn.execute(f"SET LOCAL search_path = {schema}".encode())  # names print unqualified (not an index's)
            (digest,) = conn.execute(FINGERPRINT, {"s": schema}).fetchone()
        return str(digest)

    def _database(self) -> str:
        with self._lock:
            if self._db is None:
                self._db = self._create_database()
            return self._db

    def _create_database(self) -> str:
        import psycopg

        db = _name("keel_w_")
        self._admin(None, f"CREATE DATABASE {db} TEMPLATE template0")
        try:
            self._admin(db, f"CREATE SCHEMA {SEED}")
            self._migrate(self.url(SEED, db))
            with psycopg.connect(self.url(SEED, db), autocommit=True) as conn:
                self._fingerprint = self._catalog(conn, SEED)
                tables = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = %s", (SEED,)).fetchall()
                self._seeded = [t for (t,) in tables if conn.execute(f"SELECT 1 FROM {t} LIMIT 1".encode()).fetchone()]
        except BaseException:
            self._admin(None, f"DROP DATABASE {db} WITH (FORCE)")
            raise
        return db

    @staticmethod
    def _migrate(url: str) -> None:
        from keel.store.open import open_store

        open_store(url).close()  # every migration, as the product applies them

    def _admin(self, db: str | None, sql: str) -> None:
        import psycopg

        url = self._base if db is None else self.url("pg_catalog", db)
        with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
            conn.execute(sql.encode())
