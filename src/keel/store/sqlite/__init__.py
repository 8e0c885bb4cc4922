"""SQLite backend: WAL, one connection per thread, migrations applied on open.

The trace writer's thread is the one steady writer; admin writes are rare and wait on
`busy_timeout`. Readers (admin API, CLI) get their own connections, so reads never block writes.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from keel.store import deletion, migrations, usage
from keel.store import spans as span_sql
from keel.store.protocols import (
    DeletedTraces,
    KeyRow,
    LimitOverride,
    TenantRow,
    TraceQuery,
    UnknownSubject,
    UnstorableRecords,
    UsageQuery,
    UsageRow,
)
from keel.store.rows import (
    ALERT_STATES_SQL,
    KEY_COLUMNS,
    LIMIT_COLUMNS,
    TENANT_COLUMNS,
    TRACE_COLUMNS,
    flip_sql,
    key_from_row,
    key_to_row,
    limit_from_row,
    limits_json,
    missing_owner,
    regions_json,
    tenant_from_row,
    trace_from_row,
    trace_rows,
    trace_where,
)
from keel.types import Span, TraceRecord

_INSERT_TRACE = (
    f"INSERT INTO traces ({', '.join(TRACE_COLUMNS)}) VALUES ({', '.join('?' * len(TRACE_COLUMNS))})"
    " ON CONFLICT (id) DO NOTHING"
)
_KEYS = ", ".join(KEY_COLUMNS)
_TENANTS = ", ".join(TENANT_COLUMNS)
_TRACES = ", ".join(TRACE_COLUMNS)
_LIMITS = ", ".join(LIMIT_COLUMNS)
# insert or replace, but only for a tenant or key that exists
_SET_LIMITS = (
    f"INSERT INTO limit_overrides ({_LIMITS}) SELECT ?, ?, ?, ?, ? WHERE EXISTS ({{owner}})"
    " ON CONFLICT (scope, subject) DO UPDATE SET limits = excluded.limits,"
    " on_store_error = excluded.on_store_error, updated_at = excluded.updated_at"
)
# what a record's content makes SQLite (or its binding) refuse: an int beyond 64 bits, a value too big
_REFUSED = (OverflowError, UnicodeError, sqlite3.DataError, sqlite3.IntegrityError, sqlite3.InterfaceError)
_DELETE_BATCH = 1000  # rollup rows per DELETE statement
_OWNER = {"tenant": "SELECT 1 FROM tenants WHERE name = ?", "key": "SELECT 1 FROM api_keys WHERE id = ?"}


_GIL_ROWS = 256  # rows per executemany call in the trace writer's transaction (see _executemany)


def _executemany(conn: sqlite3.Connection, sql: str, rows: Sequence[Sequence[object]]) -> None:
    """executemany in slices: one call over thousands of rows holds the GIL throughout (5,000 trace rows:
    ~75 ms during which the event loop cannot run); between slices the loop gets it back. Same
    transaction, same statement: the cost is the same (bench/tail.py, bench/README.md)."""
    for i in range(0, len(rows), _GIL_ROWS):
        conn.executemany(sql, rows[i : i + _GIL_ROWS])


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


class SqliteStore:
    def __init__(self, url: str) -> None:
        self.url = url
        path = url.removeprefix("sqlite:///")
        self.path = path
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            _set_wal(conn)
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    def close(self) -> None:
        with self._lock:
            for conn in self._all:
                conn.close()
            self._all.clear()
        self._local = threading.local()

    # ---- migrations

    def migrate(self) -> list[str]:
        done = []
        while (name := self._migrate_next()) is not None:
            done.append(name)
        return done

    def _migrate_next(self) -> str | None:
        """Apply the first pending migration under the write lock, so concurrent migrators agree."""
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS keel_migrations"
                " (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at REAL NOT NULL)"
            )
            applied = {row[0] for row in conn.execute("SELECT version FROM keel_migrations")}
            todo = migrations.pending("sqlite", applied)
            if not todo:
                conn.execute("COMMIT")
                return None
            version, name, sql = todo[0]
            for statement in migrations.statements(sql):
                conn.execute(statement)
            conn.execute("INSERT INTO keel_migrations VALUES (?, ?, ?)", (version, name, time.time()))
            conn.execute("COMMIT")
            return name
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    # ---- KeyStore

    def create_tenant(self, name: str, regions: tuple[str, ...] | None = None) -> TenantRow:
        row = TenantRow(name, time.time(), regions)
        sql = "INSERT INTO tenants (name, created_at, regions, updated_at) VALUES (?, ?, ?, ?)"
        try:
            self._conn().execute(sql, (name, row.created_at, regions_json(regions), row.created_at))
        except sqlite3.IntegrityError:
            raise ValueError(f"tenant '{name}' already exists") from None
        return row

    def list_tenants(self) -> list[TenantRow]:
        return [tenant_from_row(r) for r in self._conn().execute(f"SELECT {_TENANTS} FROM tenants ORDER BY name")]

    def get_tenant(self, name: str) -> TenantRow | None:
        r = self._conn().execute(f"SELECT {_TENANTS} FROM tenants WHERE name = ?", (name,)).fetchone()
        return tenant_from_row(r) if r else None

    def set_tenant_regions(self, name: str, regions: tuple[str, ...] | None) -> TenantRow | None:
        sql = f"UPDATE tenants SET regions = ?, updated_at = ? WHERE name = ? RETURNING {_TENANTS}"
        # fetchall: the implicit transaction ends only once the statement has run to completion
        rows = self._conn().execute(sql, (regions_json(regions), time.time(), name)).fetchall()
        return tenant_from_row(rows[0]) if rows else None

    def tenants_changed_since(self, since: float) -> list[tuple[str, float]]:
        sql = "SELECT name, updated_at FROM tenants WHERE updated_at >= ?"
        return [(name, at) for name, at in self._conn().execute(sql, (since,))]

    def create_key(self, row: KeyRow) -> None:
        marks = ", ".join("?" * len(KEY_COLUMNS))
        try:
            self._conn().execute(f"INSERT INTO api_keys ({_KEYS}) VALUES ({marks})", key_to_row(row))
        except sqlite3.IntegrityError as exc:
            raise ValueError(f"cannot create key: {exc}") from None

    def list_keys(self, tenant: str | None = None) -> list[KeyRow]:
        sql = f"SELECT {_KEYS} FROM api_keys"
        rows = (
            self._conn().execute(sql + " WHERE tenant = ? ORDER BY created_at", (tenant,))
            if tenant
            else self._conn().execute(sql + " ORDER BY created_at")
        )
        return [key_from_row(r) for r in rows]

    def find_key(self, key_hash: str) -> KeyRow | None:
        r = self._conn().execute(f"SELECT {_KEYS} FROM api_keys WHERE key_hash = ?", (key_hash,)).fetchone()
        return key_from_row(r) if r else None

    def revoke_key(self, key_id: str, at: float) -> KeyRow | None:
        conn = self._conn()
        conn.execute("UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL", (at, key_id))
        r = conn.execute(f"SELECT {_KEYS} FROM api_keys WHERE id = ?", (key_id,)).fetchone()
        return key_from_row(r) if r else None

    def revoked_since(self, since: float) -> list[tuple[str, float]]:
        sql = "SELECT key_hash, revoked_at FROM api_keys WHERE revoked_at IS NOT NULL AND revoked_at >= ?"
        return [(h, at) for h, at in self._conn().execute(sql, (since,))]

    # ---- TraceStore

    def append_traces(self, records: Sequence[TraceRecord]) -> None:
        if not records:
            return
        rows, stored = trace_rows(records)
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            inserted = self._insert_new(conn, rows, stored)
            for sql, values in usage.upserts(inserted, "?", "min", "max", ordered=False):
                _executemany(conn, sql, values)
            conn.execute("COMMIT")
        except BaseException as exc:
            conn.execute("ROLLBACK")
            if isinstance(exc, _REFUSED):
                raise UnstorableRecords(f"{type(exc).__name__}: {exc}") from exc
            raise

    def _insert_new(
        self, conn: sqlite3.Connection, rows: list[tuple[object, ...]], records: list[TraceRecord]
    ) -> list[TraceRecord]:
        """Insert the rows whose id is not there yet; the records inserted. Under the write lock no
        other writer can add ids meanwhile."""
        ids = list({r.id for r in records})
        present: set[str] = set()
        for i in range(0, len(ids), 900):  # within SQLite's bound-parameter limit
            chunk = ids[i : i + 900]
            sql = f"SELECT id FROM traces WHERE id IN ({','.join('?' * len(chunk))})"
            present.update(row[0] for row in conn.execute(sql, chunk))
        inserted: list[TraceRecord] = []
        new_rows = []
        for r, row in zip(records, rows, strict=True):
            if r.id not in present:
                present.add(r.id)  # a batch may carry one id twice: the first one counts
                inserted.append(r)
                new_rows.append(row)
        _executemany(conn, _INSERT_TRACE, new_rows)
        return inserted

    def list_traces(self, query: TraceQuery) -> list[TraceRecord]:
        where, params = trace_where(query, "?")
        sql = f"SELECT {_TRACES} FROM traces WHERE {where} ORDER BY started_at DESC LIMIT ?"
        return [trace_from_row(r) for r in self._conn().execute(sql, (*params, query.limit))]

    def get_trace(self, trace_id: str) -> TraceRecord | None:
        r = self._conn().execute(f"SELECT {_TRACES} FROM traces WHERE id = ?", (trace_id,)).fetchone()
        return trace_from_row(r) if r else None

    def count_traces(self, since: float, until: float) -> int:
        sql = "SELECT count(*) FROM traces WHERE started_at >= ? AND started_at < ?"
        return int(self._conn().execute(sql, (since, until)).fetchone()[0])

    def usage(self, query: UsageQuery) -> list[UsageRow]:
        return usage.read(query, self._conn().execute, "?", total="TOTAL")  # TOTAL: no int64 overflow

    # ---- TraceDeletion

    def delete_traces(
        self,
        *,
        limit: int,
        tenant: str | None = None,
        user: str | None = None,
        before: float | None = None,
        exclude: Sequence[str] = (),
    ) -> DeletedTraces:
        sql, params = deletion.trace_delete("?", limit=limit, tenant=tenant, user=user, before=before, exclude=exclude)
        rows = self._conn().execute(sql, params).fetchall()  # fetchall: the statement runs to completion
        return deletion.deleted(rows)

    def delete_rollups(self, tenant: str, user: str | None = None, sessions: Sequence[str] = ()) -> int:
        conn = self._conn()
        statements = deletion.rollup_deletes("?", tenant, user, sessions, _DELETE_BATCH)
        return deletion.run_all(lambda sql, params: conn.execute(sql, params).rowcount, statements, _DELETE_BATCH)

    def trace_ids_present(self, ids: Sequence[str]) -> set[str]:
        found: set[str] = set()
        for chunk in deletion.chunks(list(ids), deletion.IN_CHUNK):
            found.update(r[0] for r in self._conn().execute(*deletion.present_query("?", chunk)))
        return found

    def delete_tenant(self, name: str) -> dict[str, int]:
        conn = self._conn()
        counts = {"limit_overrides": 0, "keys": 0, "tenants": 0}
        conn.execute("BEGIN IMMEDIATE")
        try:
            for kind, sql, params in deletion.tenant_deletes("?", name):
                counts[kind] += conn.execute(sql, params).rowcount
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return counts

    # ---- LimitConfigStore

    def set_limits(
        self, scope: str, subject: str, limits: Mapping[str, float], on_store_error: str | None
    ) -> LimitOverride:
        text = limits_json(scope, limits, on_store_error)
        at = time.time()
        sql = _SET_LIMITS.format(owner=_OWNER[scope])
        if self._conn().execute(sql, (scope, subject, text, on_store_error, at, subject)).rowcount == 0:
            raise UnknownSubject(missing_owner(scope, subject))
        return limit_from_row((scope, subject, text, on_store_error, at))

    def clear_limits(self, scope: str, subject: str) -> bool:
        sql = "DELETE FROM limit_overrides WHERE scope = ? AND subject = ?"
        return self._conn().execute(sql, (scope, subject)).rowcount > 0

    def list_limits(self) -> list[LimitOverride]:
        sql = f"SELECT {_LIMITS} FROM limit_overrides ORDER BY scope, subject"
        return [limit_from_row(r) for r in self._conn().execute(sql)]

    def claim_alert(self, counter: str, period: str, threshold: float, at: float) -> bool:
        sql = "INSERT INTO limit_alerts VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING"
        return self._conn().execute(sql, (counter, period, threshold, at)).rowcount == 1

    def flip_alert(self, key: str, firing: bool, at: float) -> bool:
        sql, params = flip_sql(firing, key, at, "?")
        return self._conn().execute(sql, params).rowcount == 1

    def alert_states(self) -> dict[str, float]:
        return {k: float(s) for k, s in self._conn().execute(ALERT_STATES_SQL)}

    # ---- SpanStore (statements in keel/store/spans.py)

    def append_spans(self, spans: Sequence[Span]) -> None:
        if not spans:
            return
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            _executemany(conn, span_sql.insert_sql("?"), [span_sql.span_to_row(s) for s in spans])
            conn.execute("COMMIT")
        except BaseException as exc:
            conn.execute("ROLLBACK")
            if isinstance(exc, _REFUSED):
                raise UnstorableRecords(f"{type(exc).__name__}: {exc}") from exc
            raise

    def trace_spans(self, trace_id: str) -> list[Span]:
        return [span_sql.span_from_row(r) for r in self._conn().execute(span_sql.select_sql("?"), (trace_id,))]

    def delete_trace_spans(self, trace_ids: Sequence[str]) -> int:
        conn = self._conn()
        return sum(conn.execute(sql, params).rowcount for sql, params in span_sql.delete_of_traces("?", trace_ids))

    def delete_spans(
        self, *, limit: int, tenant: str | None = None, before: float | None = None, exclude: Sequence[str] = ()
    ) -> int:
        sql, params = span_sql.delete_where("?", limit=limit, tenant=tenant, before=before, exclude=exclude)
        return int(self._conn().execute(sql, params).rowcount)
