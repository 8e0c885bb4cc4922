"""Tenants and API keys over any SQL dialect (`KeyStore`)."""

from __future__ import annotations

import time

from keel.store.protocols import KeyRow, TenantRow
from keel.store.sql.dialect import Database
from keel.store.sql.rows import KEY_COLUMNS, TENANT_COLUMNS, key_from_row, key_to_row, regions_json, tenant_from_row

_KEYS = ", ".join(KEY_COLUMNS)
_TENANTS = ", ".join(TENANT_COLUMNS)
_KEY_JSON = frozenset({"models"})


class SqlKeys:
    _db: Database

    def create_tenant(self, name: str, regions: tuple[str, ...] | None = None) -> TenantRow:
        d = self._db.dialect
        row = TenantRow(name, time.time(), regions)
        sql = f"INSERT INTO tenants (name, created_at, regions, updated_at) VALUES ({d.mark}, {d.mark}, {d.json_mark}, {d.mark})"
        try:
            with self._db.session() as s:
                s.execute(sql, (name, row.created_at, regions_json(regions), row.created_at))
        except self._db.duplicate:
            raise ValueError(f"tenant '{name}' already exists") from None
        return row

    def list_tenants(self) -> list[TenantRow]:
        with self._db.session() as s:
            rows = s.fetchall(f"SELECT {_TENANTS} FROM tenants ORDER BY name")
        return [tenant_from_row(r) for r in rows]

    def get_tenant(self, name: str) -> TenantRow | None:
        with self._db.session() as s:
            r = s.fetchone(f"SELECT {_TENANTS} FROM tenants WHERE name = {self._db.dialect.mark}", (name,))
        return tenant_from_row(r) if r else None

    def set_tenant_regions(self, name: str, regions: tuple[str, ...] | None) -> TenantRow | None:
        d = self._db.dialect
        sql = f"UPDATE tenants SET regions = {d.json_mark}, updated_at = {d.mark} WHERE name = {d.mark} RETURNING {_TENANTS}"
        # fetchall: SQLite's implicit transaction ends only once the statement has run to completion
        with self._db.session() as s:
            rows = s.fetchall(sql, (regions_json(regions), time.time(), name))
        return tenant_from_row(rows[0]) if rows else None

    def set_tenant_viewer_content(self, name: str, allowed: bool) -> TenantRow | None:
        d = self._db.dialect
        sql = f"UPDATE tenants SET viewer_content = {d.mark}, updated_at = {d.mark} WHERE name = {d.mark} RETURNING {_TENANTS}"
        with self._db.session() as s:
            rows = s.fetchall(sql, (int(allowed), time.time(), name))
        return tenant_from_row(rows[0]) if rows else None

    def tenants_changed_since(self, since: float) -> list[tuple[str, float]]:
        sql = f"SELECT name, updated_at FROM tenants WHERE updated_at >= {self._db.dialect.mark}"
        with self._db.session() as s:
            return [(name, at) for name, at in s.fetchall(sql, (since,))]

    def create_key(self, row: KeyRow) -> None:
        sql = f"INSERT INTO api_keys ({_KEYS}) VALUES ({self._db.dialect.values(KEY_COLUMNS, _KEY_JSON)})"
        try:
            with self._db.session() as s:
                s.execute(sql, key_to_row(row))
        except self._db.integrity as exc:
            raise ValueError(f"cannot create key: {exc}") from None

    def list_keys(self, tenant: str | None = None) -> list[KeyRow]:
        sql = f"SELECT {_KEYS} FROM api_keys"
        with self._db.session() as s:
            if tenant:
                rows = s.fetchall(sql + f" WHERE tenant = {self._db.dialect.mark} ORDER BY created_at", (tenant,))
            else:
                rows = s.fetchall(sql + " ORDER BY created_at")
        return [key_from_row(r) for r in rows]

    def find_key(self, key_hash: str) -> KeyRow | None:
        with self._db.session() as s:
            r = s.fetchone(f"SELECT {_KEYS} FROM api_keys WHERE key_hash = {self._db.dialect.mark}", (key_hash,))
        return key_from_row(r) if r else None

    def revoke_key(self, key_id: str, at: float) -> KeyRow | None:
        mark = self._db.dialect.mark
        with self._db.session() as s:
            s.execute(f"UPDATE api_keys SET revoked_at = {mark} WHERE id = {mark} AND revoked_at IS NULL", (at, key_id))
            r = s.fetchone(f"SELECT {_KEYS} FROM api_keys WHERE id = {mark}", (key_id,))
        return key_from_row(r) if r else None

    def revoked_since(self, since: float) -> list[tuple[str, float]]:
        mark = self._db.dialect.mark
        sql = f"SELECT key_hash, revoked_at FROM api_keys WHERE revoked_at IS NOT NULL AND revoked_at >= {mark}"
        with self._db.session() as s:
            return [(h, at) for h, at in s.fetchall(sql, (since,))]
