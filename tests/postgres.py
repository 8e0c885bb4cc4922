"""PostgreSQL for tests: each test gets a migrated schema of its own, without paying for the migrations.

Creating a schema's ~50 tables and ~100 indexes and dropping them again is catalog work that cost
0.4 s idle and 1–2 s on the loaded CI machine, for ~600 cases. So each process (each xdist worker)
claims a slot — a session advisory lock held while it runs — and with it a database of its own,
`keel_w_<slot>`, which no other process touches meanwhile. Its `keel_seed` schema is migrated once,
and rebuilt only when the migration files change (their digest is the database's comment); it is never
handed out. The schemas tests used are recycled; giving one back (`release`), in order:

1. every other connection to the slot's database is terminated (waiting until it is gone): what a
   test left behind cannot write into the next test's schema;
2. a schema whose catalog (tables, columns, defaults, indexes, constraints, sequences, functions,
   types) no longer matches `keel_seed`'s is dropped, never reused;
3. otherwise every row is deleted, the rows the migrations seeded are copied back from `keel_seed`,
   every sequence is set back to `keel_seed`'s state, and the schema is renamed to a fresh random
   name — so a pool reconnecting with the old URL finds nothing rather than the next test's tables.

A test thus starts from what the migrations leave: the same catalog, the same rows, the same
sequences. Tests of the migrations themselves ask for an empty schema (`empty`). The databases stay
between sessions (schemas a killed session left are recycled the same way when the slot is next
claimed). URLs keep the shape the per-test schemas always had: `…/<db>?options=-csearch_path%3D<schema>`.
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


CLAIM = "SELECT pg_try_advisory_lock(hashtext('keel_test_slot'), %s)"


def _migrations_digest() -> str:
    """Names and text of every PostgreSQL migration: a slot's database migrated by others is rebuilt."""
    import hashlib

    from keel.store import migrations

    text = "".join(f"{name}\n{sql}\n" for _, name, sql in migrations.pending("postgres", set()))
    return hashlib.sha256(text.encode()).hexdigest()


def _name(prefix: str) -> str:
    return prefix + secrets.token_hex(6)


class Databases:
    """This process's PostgreSQL database for tests on the server of `base` (a postgresql:// URL)."""

    def __init__(self, base: str) -> None:
        self._base = base
        self._db: str | None = None
        self._holder: Any = None  # the connection holding this process's slot (a session advisory lock)
        self._spare: list[str] = []  # clean, migrated schemas
        self._seeded: list[str] = []  # tables whose rows the migrations insert
        self._fingerprint = ""
        self._lock = threading.RLock()  # claiming the database recycles what a previous session left

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
        self._recycle(self._database(), url.rsplit("%3D", 1)[1])

    def _recycle(self, db: str, schema: str) -> None:
        import psycopg

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
        """Free this process's slot; its database stays, for the next session to recycle."""
        with self._lock:
            holder, self._holder, self._db = self._holder, None, None
        if holder is not None:
            holder.close()

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
                self._db = self._claim_database()
            return self._db

    def _claim_database(self) -> str:
        """The database of the first free slot, migrated (again, if the migrations changed since)."""
        import psycopg

        holder = psycopg.connect(self._base, autocommit=True, connect_timeout=10, application_name="keel-test-slot")
        try:
            slot = next(i for i in range(1000) if holder.execute(CLAIM, (i,)).fetchone() == (True,))
            db, version = f"keel_w_{slot}", _migrations_digest()
            found = holder.execute(
                "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s", (db,)
            ).fetchone()
            if found != (version,):  # absent, half-built, or migrated by other files
                holder.execute(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)".encode())
                holder.execute(f"CREATE DATABASE {db} TEMPLATE template0".encode())
                self._admin(db, f"CREATE SCHEMA {SEED}")
                self._migrate(self.url(SEED, db))
                holder.execute(f"COMMENT ON DATABASE {db} IS '{version}'".encode())
            self._load_seed(db)
        except BaseException:
            holder.close()
            raise
        self._holder = holder
        return db

    def _load_seed(self, db: str) -> None:
        """What a clean schema looks like, and the schemas a previous session left, recycled."""
        import psycopg

        with psycopg.connect(self.url(SEED, db), autocommit=True) as conn:
            self._fingerprint = self._catalog(conn, SEED)
            tables = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = %s", (SEED,)).fetchall()
            self._seeded = [t for (t,) in tables if conn.execute(f"SELECT 1 FROM {t} LIMIT 1".encode()).fetchone()]
            left = conn.execute("SELECT nspname FROM pg_namespace WHERE nspname ~ '^keel_[se]_'").fetchall()
        for (schema,) in left:
            self._recycle(db, schema)

    @staticmethod
    def _migrate(url: str) -> None:
        from keel.store.open import open_store

        open_store(url).close()  # every migration, as the product applies them

    def _admin(self, db: str | None, sql: str) -> None:
        import psycopg

        url = self._base if db is None else self.url("pg_catalog", db)
        with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
            conn.execute(sql.encode())
