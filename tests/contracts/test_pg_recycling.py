"""The PostgreSQL schemas tests are handed (tests/postgres.py) start exactly as the migrations left them,
though they are recycled: rows, sequences and catalog as `keel_seed`'s, and nothing a previous test left
running can reach them."""

from __future__ import annotations

import time
from typing import Any

import psycopg
import pytest

from keel.keys.auth import issue_key
from keel.store.open import open_store
from keel.types import TraceRecord
from tests.postgres import SEED, Databases

pytestmark = pytest.mark.postgres


def _state(url: str, schema: str) -> dict[str, Any]:
    """Every table's rows and every sequence's position in `schema`."""
    with psycopg.connect(url, autocommit=True) as conn:
        tables = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = %s", (schema,)).fetchall()
        sequences = conn.execute("SELECT sequencename FROM pg_sequences WHERE schemaname = %s", (schema,)).fetchall()
        state: dict[str, Any] = {}
        for (t,) in tables:
            state[t] = sorted(map(repr, conn.execute(f"SELECT * FROM {schema}.{t}".encode()).fetchall()))
        for (q,) in sequences:
            state[q] = conn.execute(f"SELECT last_value, is_called FROM {schema}.{q}".encode()).fetchone()
    return state


def _schema(url: str) -> str:
    return url.rsplit("%3D", 1)[1]


def _use(url: str) -> None:
    """Rows in several tables, and every sequence advanced."""
    store = open_store(url)
    try:
        store.create_tenant("acme")
        issue_key(store, "acme", name="k")
        store.append_traces([TraceRecord(id="t1", started_at=time.time(), tenant="acme")])
    finally:
        store.close()
    with psycopg.connect(url, autocommit=True) as conn:
        for (q,) in conn.execute("SELECT sequencename FROM pg_sequences WHERE schemaname = current_schema()"):
            conn.execute(f"SELECT nextval('{q}')".encode())


def test_a_recycled_schema_is_as_the_migrations_left_it(pg_databases: Databases) -> None:
    url = pg_databases.migrated()
    seed = _state(url, SEED)
    assert seed["keel_migrations"] and seed["audit_head"]  # rows the migrations insert
    assert any(isinstance(v, tuple) for v in seed.values())  # a sequence is compared too
    _use(url)
    assert _state(url, _schema(url)) != seed
    pg_databases.release(url)
    again = pg_databases.migrated()
    try:
        assert _schema(again) != _schema(url)
        assert _state(again, _schema(again)) == seed
    finally:
        pg_databases.release(again)


def test_a_schema_whose_catalog_changed_is_dropped_not_reused(pg_databases: Databases) -> None:
    url = pg_databases.migrated()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("ALTER TABLE traces ADD COLUMN extra INTEGER")
    pg_databases.release(url)
    with psycopg.connect(url, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM pg_namespace WHERE nspname = %s", (_schema(url),)).fetchone() == (0,)
    again = pg_databases.migrated()
    try:
        with psycopg.connect(again, autocommit=True) as conn:
            columns = conn.execute(
                "SELECT column_name FROM information_schema.columns"
                " WHERE table_schema = current_schema() AND table_name = 'traces'"
            ).fetchall()
        assert ("extra",) not in columns
    finally:
        pg_databases.release(again)


def test_what_a_test_left_open_cannot_reach_the_next_schema(pg_databases: Databases) -> None:
    url = pg_databases.migrated()
    leaked = psycopg.connect(url, autocommit=True)
    try:
        pg_databases.release(url)
        again = pg_databases.migrated()
        try:
            with pytest.raises(psycopg.OperationalError):  # terminated
                leaked.execute("SELECT count(*) FROM tenants")
            with psycopg.connect(url, autocommit=True) as late, pytest.raises(psycopg.errors.UndefinedTable):
                late.execute("INSERT INTO tenants VALUES ('stray', 0)")  # a pool reconnecting with the old URL
            with psycopg.connect(again, autocommit=True) as conn:
                assert conn.execute("SELECT count(*) FROM tenants").fetchone() == (0,)
        finally:
            pg_databases.release(again)
    finally:
        leaked.close()
