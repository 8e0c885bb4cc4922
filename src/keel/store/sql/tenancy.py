"""Users, teams and personal access tokens over any SQL dialect (`TenancyStore`)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import orjson

from keel.store.protocols.tenancy import TeamRow, TokenRow, UserRow
from keel.store.sql.dialect import Database

_USER_COLS = ("id", "tenant", "email", "name", "roles", "created_at", "team", "issuer", "subject", "disabled_at")
_TOKEN_COLS = (
    "id", "token_hash", "user_id", "tenant", "scopes", "created_at", "expires_at", "last_used_at",
    "revoked_at", "name",
)  # fmt: skip
_USERS = ", ".join(_USER_COLS)
_TOKENS = ", ".join(_TOKEN_COLS)


def _user(r: Sequence[Any]) -> UserRow:
    return UserRow(r[0], r[1], r[2], r[3], tuple(orjson.loads(r[4])), float(r[5]), r[6], r[7], r[8],
                   None if r[9] is None else float(r[9]))  # fmt: skip


def _token(r: Sequence[Any]) -> TokenRow:
    scopes = None if r[4] is None else tuple(orjson.loads(r[4]))
    at = [None if v is None else float(v) for v in r[5:9]]
    return TokenRow(r[0], r[1], r[2], r[3], scopes, float(r[5]), at[1], at[2], at[3], r[9])


class SqlTenancy:
    _db: Database

    # ---- users -----------------------------------------------------------------------------------

    def create_user(self, row: UserRow) -> None:
        d = self._db.dialect
        sql = f"INSERT INTO tenancy_users ({_USERS}) VALUES ({d.marks(len(_USER_COLS))})"
        values = (row.id, row.tenant, row.email, row.name, orjson.dumps(list(row.roles)).decode(), row.created_at,
                  row.team, row.issuer, row.subject, row.disabled_at)  # fmt: skip
        try:
            with self._db.session() as s:
                s.execute(sql, values)
        except self._db.duplicate:
            raise ValueError(f"user '{row.id}' (or its SSO subject) already exists") from None

    def get_user(self, user_id: str) -> UserRow | None:
        m = self._db.dialect.mark
        with self._db.session() as s:
            r = s.fetchone(f"SELECT {_USERS} FROM tenancy_users WHERE id = {m}", (user_id,))
        return _user(r) if r else None

    def find_user_by_subject(self, issuer: str, subject: str) -> UserRow | None:
        m = self._db.dialect.mark
        sql = f"SELECT {_USERS} FROM tenancy_users WHERE issuer = {m} AND subject = {m}"
        with self._db.session() as s:
            r = s.fetchone(sql, (issuer, subject))
        return _user(r) if r else None

    def list_users(self, tenant: str | None = None) -> list[UserRow]:
        m = self._db.dialect.mark
        with self._db.session() as s:
            if tenant is None:
                rows = s.fetchall(f"SELECT {_USERS} FROM tenancy_users ORDER BY id")
            else:
                rows = s.fetchall(f"SELECT {_USERS} FROM tenancy_users WHERE tenant = {m} ORDER BY id", (tenant,))
        return [_user(r) for r in rows]

    def update_user(
        self,
        user_id: str,
        *,
        roles: tuple[str, ...] | None = None,
        team: str | None = None,
        clear_team: bool = False,
        email: str | None = None,
        name: str | None = None,
        disabled_at: float | None = None,
        enable: bool = False,
    ) -> UserRow | None:
        m = self._db.dialect.mark
        sets: list[tuple[str, Any]] = []
        if roles is not None:
            sets.append(("roles", orjson.dumps(list(roles)).decode()))
        if team is not None or clear_team:
            sets.append(("team", team))
        if email is not None:
            sets.append(("email", email))
        if name is not None:
            sets.append(("name", name))
        if disabled_at is not None or enable:
            sets.append(("disabled_at", disabled_at))
        with self._db.session() as s:
            if sets:
                assignments = ", ".join(f"{c} = {m}" for c, _ in sets)
                s.execute(f"UPDATE tenancy_users SET {assignments} WHERE id = {m}", (*(v for _, v in sets), user_id))
            r = s.fetchone(f"SELECT {_USERS} FROM tenancy_users WHERE id = {m}", (user_id,))
        return _user(r) if r else None

    def delete_user(self, user_id: str) -> bool:
        m = self._db.dialect.mark
        with self._db.transaction() as s:
            s.execute(f"DELETE FROM tenancy_tokens WHERE user_id = {m}", (user_id,))
            return s.execute(f"DELETE FROM tenancy_users WHERE id = {m}", (user_id,)) > 0

    # ---- teams -----------------------------------------------------------------------------------

    def create_team(self, tenant: str, name: str) -> TeamRow:
        row = TeamRow(tenant, name, time.time())
        sql = f"INSERT INTO tenancy_teams (tenant, name, created_at) VALUES ({self._db.dialect.marks(3)})"
        try:
            with self._db.session() as s:
                s.execute(sql, (tenant, name, row.created_at))
        except self._db.duplicate:
            raise ValueError(f"team '{name}' already exists in tenant '{tenant}'") from None
        return row

    def list_teams(self, tenant: str | None = None) -> list[TeamRow]:
        m = self._db.dialect.mark
        sql = "SELECT tenant, name, created_at FROM tenancy_teams"
        with self._db.session() as s:
            if tenant is None:
                rows = s.fetchall(sql + " ORDER BY tenant, name")
            else:
                rows = s.fetchall(sql + f" WHERE tenant = {m} ORDER BY name", (tenant,))
        return [TeamRow(r[0], r[1], float(r[2])) for r in rows]

    def delete_team(self, tenant: str, name: str) -> bool:
        m = self._db.dialect.mark
        with self._db.session() as s:
            return s.execute(f"DELETE FROM tenancy_teams WHERE tenant = {m} AND name = {m}", (tenant, name)) > 0

    # ---- personal access tokens ------------------------------------------------------------------

    def create_token(self, row: TokenRow) -> None:
        d = self._db.dialect
        scopes = None if row.scopes is None else orjson.dumps(list(row.scopes)).decode()
        values = (row.id, row.token_hash, row.user_id, row.tenant, scopes, row.created_at, row.expires_at,
                  row.last_used_at, row.revoked_at, row.name)  # fmt: skip
        try:
            with self._db.session() as s:
                s.execute(f"INSERT INTO tenancy_tokens ({_TOKENS}) VALUES ({d.marks(len(_TOKEN_COLS))})", values)
        except self._db.duplicate:
            raise ValueError(f"token '{row.id}' already exists") from None

    def find_token(self, token_hash: str) -> TokenRow | None:
        m = self._db.dialect.mark
        with self._db.session() as s:
            r = s.fetchone(f"SELECT {_TOKENS} FROM tenancy_tokens WHERE token_hash = {m}", (token_hash,))
        return _token(r) if r else None

    def get_token(self, token_id: str) -> TokenRow | None:
        m = self._db.dialect.mark
        with self._db.session() as s:
            r = s.fetchone(f"SELECT {_TOKENS} FROM tenancy_tokens WHERE id = {m}", (token_id,))
        return _token(r) if r else None

    def list_tokens(self, *, user_id: str | None = None, tenant: str | None = None) -> list[TokenRow]:
        m = self._db.dialect.mark
        kept = [(c, v) for c, v in (("user_id", user_id), ("tenant", tenant)) if v is not None]
        where = (" WHERE " + " AND ".join(f"{c} = {m}" for c, _ in kept)) if kept else ""
        with self._db.session() as s:
            rows = s.fetchall(f"SELECT {_TOKENS} FROM tenancy_tokens{where} ORDER BY created_at, id",
                              tuple(v for _, v in kept))  # fmt: skip
        return [_token(r) for r in rows]

    def revoke_token(self, token_id: str, at: float) -> TokenRow | None:
        m = self._db.dialect.mark
        with self._db.session() as s:
            s.execute(f"UPDATE tenancy_tokens SET revoked_at = {m} WHERE id = {m} AND revoked_at IS NULL",
                      (at, token_id))  # fmt: skip
            r = s.fetchone(f"SELECT {_TOKENS} FROM tenancy_tokens WHERE id = {m}", (token_id,))
        return _token(r) if r else None

    def touch_token(self, token_id: str, at: float) -> None:
        m = self._db.dialect.mark
        with self._db.session() as s:
            s.execute(f"UPDATE tenancy_tokens SET last_used_at = {m} WHERE id = {m}", (at, token_id))
