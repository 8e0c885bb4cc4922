"""Limit overrides and the alert ledgers over any SQL dialect (`LimitConfigStore`)."""

from __future__ import annotations

import time
from collections.abc import Mapping

from keel.store.protocols import LimitOverride, UnknownSubject
from keel.store.sql.dialect import Database
from keel.store.sql.rows import ALERT_STATES_SQL, LIMIT_COLUMNS, flip_sql, limit_from_row, limits_json, missing_owner

_LIMITS = ", ".join(LIMIT_COLUMNS)
_OWNER = {
    "tenant": "SELECT 1 FROM tenants WHERE name = {m}",
    "key": "SELECT 1 FROM api_keys WHERE id = {m}",
    "team": "SELECT 1 FROM tenancy_teams WHERE tenant || ':' || name = {m}",  # a team's subject: tenant:team
}


def _set_limits_sql(mark: str, json_mark: str, scope: str) -> str:
    """Insert or replace, but only for a tenant or key that exists."""
    return (
        f"INSERT INTO limit_overrides ({_LIMITS}) SELECT {mark}, {mark}, {json_mark}, {mark}, {mark}"
        f" WHERE EXISTS ({_OWNER[scope].format(m=mark)})"
        " ON CONFLICT (scope, subject) DO UPDATE SET limits = excluded.limits,"
        " on_store_error = excluded.on_store_error, updated_at = excluded.updated_at"
    )


class SqlLimits:
    _db: Database

    def set_limits(
        self, scope: str, subject: str, limits: Mapping[str, float], on_store_error: str | None
    ) -> LimitOverride:
        text = limits_json(scope, limits, on_store_error)
        at = time.time()
        d = self._db.dialect
        with self._db.session() as s:
            if (
                s.execute(
                    _set_limits_sql(d.mark, d.json_mark, scope), (scope, subject, text, on_store_error, at, subject)
                )
                == 0
            ):
                raise UnknownSubject(missing_owner(scope, subject))
        return limit_from_row((scope, subject, text, on_store_error, at))

    def clear_limits(self, scope: str, subject: str) -> bool:
        mark = self._db.dialect.mark
        with self._db.session() as s:
            return (
                s.execute(f"DELETE FROM limit_overrides WHERE scope = {mark} AND subject = {mark}", (scope, subject))
                > 0
            )

    def list_limits(self) -> list[LimitOverride]:
        with self._db.session() as s:
            rows = s.fetchall(f"SELECT {_LIMITS} FROM limit_overrides ORDER BY scope, subject")
        return [limit_from_row(r) for r in rows]

    def claim_alert(self, counter: str, period: str, threshold: float, at: float) -> bool:
        sql = f"INSERT INTO limit_alerts VALUES ({self._db.dialect.marks(4)}) ON CONFLICT DO NOTHING"
        with self._db.session() as s:
            return s.execute(sql, (counter, period, threshold, at)) == 1

    def flip_alert(self, key: str, firing: bool, at: float) -> bool:
        sql, params = flip_sql(firing, key, at, self._db.dialect.mark)
        with self._db.session() as s:
            return s.execute(sql, params) == 1

    def alert_states(self) -> dict[str, float]:
        with self._db.session() as s:
            return {k: float(since) for k, since in s.fetchall(ALERT_STATES_SQL)}
