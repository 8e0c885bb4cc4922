"""The audit chain over any SQL dialect (`AuditStore`).

An append's first statement moves the head row (seq + 1): on PostgreSQL that row lock queues every
other appender until this transaction commits, on SQLite BEGIN IMMEDIATE already did; so each entry
is sealed with the hash of the one committed before it, whatever the number of processes.
"""

from __future__ import annotations

from typing import Any

from keel.store.protocols.audit import AuditDraft, AuditEntry, entry_hash
from keel.store.sql.dialect import Database, Row

_COLS = "seq, at, tenant, actor, action, target, detail, source_ip, prev_hash, hash"
CHAIN = "main"


def _entry(r: Row) -> AuditEntry:
    return AuditEntry(int(r[0]), float(r[1]), r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9])


class SqlAudit:
    _db: Database

    def append_audit(self, draft: AuditDraft) -> AuditEntry:
        m = self._db.dialect.mark
        take = f"UPDATE audit_head SET seq = seq + 1 WHERE chain = {m} RETURNING seq, hash"
        insert = f"INSERT INTO audit_log ({_COLS}) VALUES ({self._db.dialect.marks(10)})"
        seal = f"UPDATE audit_head SET hash = {m} WHERE chain = {m}"
        with self._db.transaction() as s:
            head = s.fetchone(take, (CHAIN,))
            assert head is not None, "audit_head has no chain row: run `keel db migrate`"
            seq, prev = int(head[0]), str(head[1])
            sealed = entry_hash(seq, draft, prev)
            entry = AuditEntry(seq, draft.at, draft.tenant, draft.actor, draft.action, draft.target, draft.detail,
                               draft.source_ip, prev, sealed)  # fmt: skip
            s.execute(insert, (seq, draft.at, draft.tenant, draft.actor, draft.action, draft.target, draft.detail,
                               draft.source_ip, prev, sealed))  # fmt: skip
            s.execute(seal, (sealed, CHAIN))
        return entry

    def list_audit(
        self,
        *,
        after_seq: int = 0,
        since: float | None = None,
        until: float | None = None,
        tenant: str | None = None,
        limit: int = 1000,
        actor: str | None = None,
        action: str | None = None,
        target: str | None = None,
    ) -> list[AuditEntry]:
        m = self._db.dialect.mark
        clauses: list[tuple[str, Any]] = [("seq >", after_seq), ("at >=", since), ("at <", until), ("tenant =", tenant)]
        clauses += [("actor =", actor), ("target =", target)]
        if action:  # a prefix, compared as text (no LIKE: '%' and '_' in it mean themselves)
            clauses.append((f"substr(action, 1, {len(action)}) =", action))
        kept = [(c, v) for c, v in clauses if v is not None]
        where = " AND ".join(f"{c} {m}" for c, _ in kept)
        sql = f"SELECT {_COLS} FROM audit_log WHERE {where} ORDER BY seq LIMIT {int(limit)}"
        with self._db.session() as s:
            return [_entry(r) for r in s.fetchall(sql, tuple(v for _, v in kept))]

    def audit_head(self) -> tuple[int, str]:
        m = self._db.dialect.mark
        with self._db.session() as s:
            row = s.fetchone(f"SELECT seq, hash FROM audit_head WHERE chain = {m}", (CHAIN,))
        assert row is not None, "audit_head has no chain row: run `keel db migrate`"
        return int(row[0]), str(row[1])

    def audit_seq_range(self, since: float | None, until: float | None) -> tuple[int, int] | None:
        m = self._db.dialect.mark
        kept = [(c, v) for c, v in (("at >=", since), ("at <", until)) if v is not None]
        where = " AND ".join(f"{c} {m}" for c, _ in kept) or "TRUE"
        with self._db.session() as s:
            row = s.fetchone(f"SELECT MIN(seq), MAX(seq) FROM audit_log WHERE {where}", tuple(v for _, v in kept))
        return None if row is None or row[0] is None else (int(row[0]), int(row[1]))

    def audit_mark(self, name: str) -> str | None:
        m = self._db.dialect.mark
        with self._db.session() as s:
            row = s.fetchone(f"SELECT value FROM audit_marks WHERE name = {m}", (name,))
        return None if row is None else str(row[0])

    def set_audit_mark(self, name: str, value: str, at: float) -> None:
        m = self._db.dialect.mark
        sql = (
            f"INSERT INTO audit_marks (name, value, at) VALUES ({m}, {m}, {m})"
            " ON CONFLICT (name) DO UPDATE SET value = excluded.value, at = excluded.at"
        )
        with self._db.transaction() as s:
            s.execute(sql, (name, value, at))
