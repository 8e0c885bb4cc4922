"""Named leases over any SQL dialect (`LeaseStore`): each call is one short transaction.

Acquiring is one conditional UPDATE (the row is free, expired, or already the caller's) and, when there is
no row, one INSERT that does nothing on a conflict: two processes racing for a free name cannot both get
it, on SQLite (one writer) or PostgreSQL (the row lock, the primary key).
"""

from __future__ import annotations

from keel.store.protocols.leases import Lease
from keel.store.sql.dialect import Database, Row


def _lease(r: Row) -> Lease:
    return Lease(r[0], r[1], int(r[2]), float(r[3]))


class SqlLeases:
    _db: Database

    def acquire_lease(self, name: str, holder: str, ttl_s: float, now: float) -> Lease | None:
        m = self._db.dialect.mark
        with self._db.transaction() as s:
            row = s.fetchone(
                f"UPDATE leases SET token = CASE WHEN holder = {m} AND expires_at > {m} THEN token ELSE token + 1 END,"
                f" acquired_at = CASE WHEN holder = {m} AND expires_at > {m} THEN acquired_at ELSE {m} END,"
                f" holder = {m}, expires_at = {m} WHERE name = {m} AND (holder = {m} OR expires_at <= {m})"
                " RETURNING name, holder, token, expires_at",
                (holder, now, holder, now, now, holder, now + ttl_s, name, holder, now),
            )
            if row is None:
                row = s.fetchone(
                    f"INSERT INTO leases (name, holder, token, expires_at, acquired_at) VALUES ({m}, {m}, 1, {m}, {m})"
                    " ON CONFLICT (name) DO NOTHING RETURNING name, holder, token, expires_at",
                    (name, holder, now + ttl_s, now),
                )
        return None if row is None else _lease(row)

    def renew_lease(self, lease: Lease, ttl_s: float, now: float) -> Lease | None:
        m = self._db.dialect.mark
        with self._db.transaction() as s:
            row = s.fetchone(
                f"UPDATE leases SET expires_at = {m} WHERE name = {m} AND holder = {m} AND token = {m}"
                " RETURNING name, holder, token, expires_at",
                (now + ttl_s, lease.name, lease.holder, lease.token),
            )
        return None if row is None else _lease(row)

    def release_lease(self, lease: Lease) -> bool:
        m = self._db.dialect.mark
        with self._db.transaction() as s:
            n = s.execute(  # the row stays (expired), so the next holder's token is still a new one
                f"UPDATE leases SET expires_at = 0 WHERE name = {m} AND holder = {m} AND token = {m}",
                (lease.name, lease.holder, lease.token),
            )
        return n > 0

    def get_lease(self, name: str) -> Lease | None:
        m = self._db.dialect.mark
        with self._db.session() as s:
            row = s.fetchone(f"SELECT name, holder, token, expires_at FROM leases WHERE name = {m}", (name,))
        return None if row is None else _lease(row)
