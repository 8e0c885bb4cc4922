"""PostgreSQL backend: psycopg 3 with a small connection pool, migrations applied on open.

Connections run in autocommit; anything that must be atomic (a trace batch, a migration with its
ledger row) opens an explicit transaction. JSON columns are JSONB: rows.py hands us JSON text,
cast with `::jsonb` on the way in; psycopg decodes them (with orjson) on the way out.
Migrations serialise on a transaction-level advisory lock, so processes starting together are safe.

Outages: no request waits on this store (keys, limits and traces are served from memory and
written from background threads), but those threads must come back when the database does. So a
caller waits at most `POOL_WAIT_S` for a connection, a connection attempt at most 5 s, a pooled
connection whose peer vanished is dropped by TCP keepalive and `tcp_user_timeout` within ~30 s, and
the pool retries a failed connection for at most `RECONNECT_S` (its backoff would otherwise grow to
minutes) before the next caller starts a fresh attempt. URL parameters of the same names win.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

import orjson
import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import TupleRow
from psycopg.types.json import set_json_loads
from psycopg_pool import ConnectionPool

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

_JSONB = frozenset({"tags", "request", "response", "models", "route", "attempt_log"})


def _marks(columns: Sequence[str]) -> str:
    return ", ".join("%s::jsonb" if c in _JSONB else "%s" for c in columns)


_KEYS = ", ".join(KEY_COLUMNS)
_TENANTS = ", ".join(TENANT_COLUMNS)
_TRACES = ", ".join(TRACE_COLUMNS)
_LIMITS = ", ".join(LIMIT_COLUMNS)
# insert or replace, but only for a tenant or key that exists
_SET_LIMITS = (
    f"INSERT INTO limit_overrides ({_LIMITS}) SELECT %s, %s, %s::jsonb, %s, %s WHERE EXISTS ({{owner}})"
    " ON CONFLICT (scope, subject) DO UPDATE SET limits = excluded.limits,"
    " on_store_error = excluded.on_store_error, updated_at = excluded.updated_at"
)
# SQLSTATE classes that blame a record's content: data exception, integrity, program limit (an
# index row too large); psycopg's own DataError (NUL in text) has no SQLSTATE
_REFUSED = ("22", "23", "54")
_DELETE_BATCH = 1000  # rollup rows per DELETE statement
_OWNER = {"tenant": "SELECT 1 FROM tenants WHERE name = %s", "key": "SELECT 1 FROM api_keys WHERE id = %s"}
_INSERT_KEY = f"INSERT INTO api_keys ({_KEYS}) VALUES ({_marks(KEY_COLUMNS)})"
_INSERT_TRACE = (
    f"INSERT INTO traces ({_TRACES}) VALUES ({_marks(TRACE_COLUMNS)}) ON CONFLICT (id) DO NOTHING RETURNING id"
)
_LEDGER = (
    "CREATE TABLE IF NOT EXISTS keel_migrations"
    " (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at DOUBLE PRECISION NOT NULL)"
)

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


def _first_of(records: Sequence[TraceRecord], ids: set[str]) -> list[TraceRecord]:
    """The records whose id is in `ids`, each id once: a batch may carry one id twice, only the first went in."""
    out = []
    for r in records:
        if r.id in ids:
            ids.discard(r.id)
            out.append(r)
    return out


class PostgresStore:
    def __init__(self, url: str, *, max_size: int = 8) -> None:
        self.url = url
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

    def close(self) -> None:
        self._pool.close()

    # ---- migrations

    def migrate(self) -> list[str]:
        """Apply pending migrations one per transaction, each under the advisory lock."""
        done = []
        while (name := self._migrate_next()) is not None:
            done.append(name)
        return done

    def _migrate_next(self) -> str | None:
        with self._pool.connection() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(hashtext('keel_migrations'))")
            conn.execute(_LEDGER)
            applied = {version for (version,) in conn.execute("SELECT version FROM keel_migrations")}
            todo = migrations.pending("postgres", applied)
            if not todo:
                return None
            version, name, sql = todo[0]
            for statement in migrations.statements(sql):
                conn.execute(statement)
            conn.execute(
                "INSERT INTO keel_migrations VALUES (%s, %s, %s)",
                (version, name, time.time()),
            )
            return name

    # ---- KeyStore

    def create_tenant(self, name: str, regions: tuple[str, ...] | None = None) -> TenantRow:
        row = TenantRow(name, time.time(), regions)
        sql = "INSERT INTO tenants (name, created_at, regions, updated_at) VALUES (%s, %s, %s::jsonb, %s)"
        try:
            with self._pool.connection() as conn:
                conn.execute(sql, (name, row.created_at, regions_json(regions), row.created_at))
        except psycopg.errors.UniqueViolation:
            raise ValueError(f"tenant '{name}' already exists") from None
        return row

    def list_tenants(self) -> list[TenantRow]:
        with self._pool.connection() as conn:
            rows = conn.execute(f"SELECT {_TENANTS} FROM tenants ORDER BY name").fetchall()
        return [tenant_from_row(r) for r in rows]

    def get_tenant(self, name: str) -> TenantRow | None:
        with self._pool.connection() as conn:
            r = conn.execute(f"SELECT {_TENANTS} FROM tenants WHERE name = %s", (name,)).fetchone()
        return tenant_from_row(r) if r else None

    def set_tenant_regions(self, name: str, regions: tuple[str, ...] | None) -> TenantRow | None:
        sql = f"UPDATE tenants SET regions = %s::jsonb, updated_at = %s WHERE name = %s RETURNING {_TENANTS}"
        with self._pool.connection() as conn:
            r = conn.execute(sql, (regions_json(regions), time.time(), name)).fetchone()
        return tenant_from_row(r) if r else None

    def tenants_changed_since(self, since: float) -> list[tuple[str, float]]:
        sql = "SELECT name, updated_at FROM tenants WHERE updated_at >= %s"
        with self._pool.connection() as conn:
            return [(name, at) for name, at in conn.execute(sql, (since,))]

    def create_key(self, row: KeyRow) -> None:
        try:
            with self._pool.connection() as conn:
                conn.execute(_INSERT_KEY, key_to_row(row))
        except psycopg.IntegrityError as exc:
            raise ValueError(f"cannot create key: {exc}") from None

    def list_keys(self, tenant: str | None = None) -> list[KeyRow]:
        sql = f"SELECT {_KEYS} FROM api_keys"
        with self._pool.connection() as conn:
            if tenant:
                rows = conn.execute(sql + " WHERE tenant = %s ORDER BY created_at", (tenant,)).fetchall()
            else:
                rows = conn.execute(sql + " ORDER BY created_at").fetchall()
        return [key_from_row(r) for r in rows]

    def find_key(self, key_hash: str) -> KeyRow | None:
        with self._pool.connection() as conn:
            r = conn.execute(f"SELECT {_KEYS} FROM api_keys WHERE key_hash = %s", (key_hash,)).fetchone()
        return key_from_row(r) if r else None

    def revoke_key(self, key_id: str, at: float) -> KeyRow | None:
        with self._pool.connection() as conn:
            conn.execute(
                "UPDATE api_keys SET revoked_at = %s WHERE id = %s AND revoked_at IS NULL",
                (at, key_id),
            )
            r = conn.execute(f"SELECT {_KEYS} FROM api_keys WHERE id = %s", (key_id,)).fetchone()
        return key_from_row(r) if r else None

    def revoked_since(self, since: float) -> list[tuple[str, float]]:
        sql = "SELECT key_hash, revoked_at FROM api_keys WHERE revoked_at IS NOT NULL AND revoked_at >= %s"
        with self._pool.connection() as conn:
            return [(h, at) for h, at in conn.execute(sql, (since,))]

    # ---- TraceStore

    def append_traces(self, records: Sequence[TraceRecord]) -> None:
        if not records:
            return
        # in id order: writers of overlapping batches (a spill reloaded by another process) lock
        # the same ids in the same order, so they wait for each other instead of deadlocking
        rows, stored = trace_rows(sorted(records, key=lambda r: r.id))
        try:
            with self._pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
                cur.executemany(_INSERT_TRACE, rows, returning=True)
                new = {row[0] for _ in cur.results() for row in cur.fetchall()}  # ids this batch inserted
                for sql, values in usage.upserts(_first_of(stored, new), "%s", "LEAST", "GREATEST", ordered=True):
                    cur.executemany(sql, values)
        except psycopg.Error as exc:
            if isinstance(exc, psycopg.DataError | psycopg.IntegrityError) or (exc.sqlstate or "")[:2] in _REFUSED:
                raise UnstorableRecords(f"{type(exc).__name__}: {exc}") from exc
            raise

    def list_traces(self, query: TraceQuery) -> list[TraceRecord]:
        where, params = trace_where(query, "%s")
        sql = f"SELECT {_TRACES} FROM traces WHERE {where} ORDER BY started_at DESC LIMIT %s"
        with self._pool.connection() as conn:
            rows = conn.execute(sql, (*params, query.limit)).fetchall()
        return [trace_from_row(r) for r in rows]

    def get_trace(self, trace_id: str) -> TraceRecord | None:
        with self._pool.connection() as conn:
            r = conn.execute(f"SELECT {_TRACES} FROM traces WHERE id = %s", (trace_id,)).fetchone()
        return trace_from_row(r) if r else None

    def count_traces(self, since: float, until: float) -> int:
        sql = "SELECT count(*) FROM traces WHERE started_at >= %s AND started_at < %s"
        with self._pool.connection() as conn:
            r = conn.execute(sql, (since, until)).fetchone()
        return int(r[0]) if r else 0

    def usage(self, query: UsageQuery) -> list[UsageRow]:
        with self._pool.connection() as conn:
            return usage.read(query, lambda sql, params: conn.execute(sql, params).fetchall(), "%s")

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
        # SKIP LOCKED: two sweeping processes take different rows instead of waiting on each other
        sql, params = deletion.trace_delete(
            "%s", limit=limit, tenant=tenant, user=user, before=before, exclude=exclude, lock=" FOR UPDATE SKIP LOCKED"
        )
        with self._pool.connection() as conn:
            rows = conn.execute(sql, params).fetchall()
        return deletion.deleted(rows)

    def delete_rollups(self, tenant: str, user: str | None = None, sessions: Sequence[str] = ()) -> int:
        statements = deletion.rollup_deletes("%s", tenant, user, sessions, _DELETE_BATCH)
        with self._pool.connection() as conn:
            return deletion.run_all(lambda sql, params: conn.execute(sql, params).rowcount, statements, _DELETE_BATCH)

    def trace_ids_present(self, ids: Sequence[str]) -> set[str]:
        found: set[str] = set()
        with self._pool.connection() as conn:
            for chunk in deletion.chunks(list(ids), deletion.IN_CHUNK):
                found.update(r[0] for r in conn.execute(*deletion.present_query("%s", chunk)).fetchall())
        return found

    def delete_tenant(self, name: str) -> dict[str, int]:
        counts = {"limit_overrides": 0, "keys": 0, "tenants": 0}
        with self._pool.connection() as conn, conn.transaction():
            for kind, sql, params in deletion.tenant_deletes("%s", name):
                counts[kind] += conn.execute(sql, params).rowcount
        return counts

    # ---- LimitConfigStore

    def set_limits(
        self, scope: str, subject: str, limits: Mapping[str, float], on_store_error: str | None
    ) -> LimitOverride:
        text = limits_json(scope, limits, on_store_error)
        at = time.time()
        with self._pool.connection() as conn:
            cur = conn.execute(
                _SET_LIMITS.format(owner=_OWNER[scope]), (scope, subject, text, on_store_error, at, subject)
            )
            if cur.rowcount == 0:
                raise UnknownSubject(missing_owner(scope, subject))
        return limit_from_row((scope, subject, text, on_store_error, at))

    def clear_limits(self, scope: str, subject: str) -> bool:
        sql = "DELETE FROM limit_overrides WHERE scope = %s AND subject = %s"
        with self._pool.connection() as conn:
            return conn.execute(sql, (scope, subject)).rowcount > 0

    def list_limits(self) -> list[LimitOverride]:
        sql = f"SELECT {_LIMITS} FROM limit_overrides ORDER BY scope, subject"
        with self._pool.connection() as conn:
            rows = conn.execute(sql).fetchall()
        return [limit_from_row(r) for r in rows]

    def claim_alert(self, counter: str, period: str, threshold: float, at: float) -> bool:
        sql = "INSERT INTO limit_alerts VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING"
        with self._pool.connection() as conn:
            return conn.execute(sql, (counter, period, threshold, at)).rowcount == 1

    def flip_alert(self, key: str, firing: bool, at: float) -> bool:
        sql, params = flip_sql(firing, key, at, "%s")
        with self._pool.connection() as conn:
            return conn.execute(sql, params).rowcount == 1

    def alert_states(self) -> dict[str, float]:
        with self._pool.connection() as conn:
            return {k: float(s) for k, s in conn.execute(ALERT_STATES_SQL).fetchall()}

    # ---- SpanStore (statements in keel/store/spans.py)

    def append_spans(self, spans: Sequence[Span]) -> None:
        if not spans:
            return
        rows = [span_sql.span_to_row(s) for s in sorted(spans, key=lambda s: (s.trace_id, s.span_id))]  # lock order
        try:
            with self._pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
                cur.executemany(span_sql.insert_sql("%s", "::jsonb"), rows)
        except psycopg.Error as exc:
            if isinstance(exc, psycopg.DataError | psycopg.IntegrityError) or (exc.sqlstate or "")[:2] in _REFUSED:
                raise UnstorableRecords(f"{type(exc).__name__}: {exc}") from exc
            raise

    def trace_spans(self, trace_id: str) -> list[Span]:
        with self._pool.connection() as conn:
            rows = conn.execute(span_sql.select_sql("%s"), (trace_id,)).fetchall()
        return [span_sql.span_from_row(r) for r in rows]

    def delete_trace_spans(self, trace_ids: Sequence[str]) -> int:
        with self._pool.connection() as conn:
            return sum(conn.execute(sql, params).rowcount for sql, params in span_sql.delete_of_traces("%s", trace_ids))

    def delete_spans(
        self, *, limit: int, tenant: str | None = None, before: float | None = None, exclude: Sequence[str] = ()
    ) -> int:
        sql, params = span_sql.delete_where(
            "%s", limit=limit, tenant=tenant, before=before, exclude=exclude, lock=" FOR UPDATE SKIP LOCKED"
        )
        with self._pool.connection() as conn:
            return int(conn.execute(sql, params).rowcount)
