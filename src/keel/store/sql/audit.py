"""The audit chain over any SQL dialect (`AuditStore`).

An append's first statement takes the head row: on PostgreSQL that row lock queues every other appender
until this transaction commits, on SQLite BEGIN IMMEDIATE already did; so each entry is sealed with the
hash of the one committed before it, whatever the number of processes. A tool call's claim (and, for a
call that needed no approval, its row) goes in the transaction of its `tool.run` entry, after the head:
every writer locks the head first, then call rows.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from keel.store.protocols.agents import CallClaim, CallOutcome, CallRow
from keel.store.protocols.audit import SUBJECT_FIELDS, AuditDraft, AuditEntry, entry_hash
from keel.store.sql.agents import CALL_COLUMNS, call_values
from keel.store.sql.dialect import NO_FLUSH, Database, Row, Session

_COLS = "seq, at, tenant, actor, action, target, detail, source_ip, prev_hash, hash, salts, digests"
CHAIN = "main"
PURGE_ACTIONS = ("tenant.purge", "user.purge")  # the entries recording a deletion: never erased


def _entry(r: Row) -> AuditEntry:
    return AuditEntry(int(r[0]), float(r[1]), r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9], r[10], r[11])


def _json_string(value: str) -> str:
    """A LIKE pattern matching `value` as a whole JSON string inside a detail."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return '%"' + escaped.replace("!", "!!").replace("%", "!%").replace("_", "!_") + '"%'


class SqlAudit:
    _db: Database

    _audit_seen: tuple[int, str] | None = None  # the head as this store's last append left it

    def append_audit(self, draft: AuditDraft) -> AuditEntry:
        entry = self.append_audits([draft])[0]
        assert entry is not None  # unconditional: no claim
        return entry

    def append_audits(
        self,
        drafts: Sequence[AuditDraft],
        *,
        durable: bool = True,
        outcomes: Sequence[CallOutcome] = (),
        claims: Sequence[CallClaim | None] = (),
    ) -> list[AuditEntry | None]:
        """Several entries in one transaction (one commit flush), numbered and chained in the given order,
        with `outcomes` moved and `claims` made in it (a draft whose claim is lost is left out);
        `durable=False`: committed without waiting for the flush (`Database.transaction`). On PostgreSQL the
        entries are first chained after the head this store last wrote and stored in one statement (one
        round trip) that moves the head only if it is still there and fails whole if a claim is lost; else
        (another appender moved the head, or a claim was lost) the head is read under its row lock, as on
        SQLite, and the claims are made one by one before the entries are chained."""
        if not drafts:
            return []
        moves = [c for c in claims if c is not None and c.row is None]
        new = [c for c in claims if c is not None and c.row is not None]
        seen = self._audit_seen
        ids = [c.call_id for c in (*moves, *new)]
        if seen is not None and self._db.dialect.name == "postgres" and len(set(ids)) == len(ids):
            entries = _chain(drafts, *seen)
            sql = _one_trip(len(entries), len(outcomes), tuple(len(c.sources) for c in moves), len(new), durable)
            try:
                with self._db.session() as s:
                    stored = s.execute(sql, _one_trip_params(seen, entries, outcomes, moves, new))
            except self._db.duplicate:  # a claim was lost (the statement's guard): nothing was written
                stored = -1
            if stored == len(entries):
                self._audit_seen = (entries[-1].seq, entries[-1].hash)
                return list(entries)
        return self._append_locked(drafts, durable, outcomes, claims)

    def _append_locked(
        self,
        drafts: Sequence[AuditDraft],
        durable: bool,
        outcomes: Sequence[CallOutcome],
        claims: Sequence[CallClaim | None],
    ) -> list[AuditEntry | None]:
        m = self._db.dialect.mark
        take = f"UPDATE audit_head SET seq = seq WHERE chain = {m} RETURNING seq, hash"  # its row lock, first
        insert = f"INSERT INTO audit_log ({_COLS}) VALUES ({self._db.dialect.marks(12)})"
        seal = f"UPDATE audit_head SET seq = {m}, hash = {m} WHERE chain = {m}"
        move = (
            f"UPDATE agent_calls SET state = {m}, updated_at = {m}, result = {m} WHERE id = {m} AND state = 'running'"
        )
        with self._db.transaction(durable=durable) as s:
            head = s.fetchone(take, (CHAIN,))
            assert head is not None, "audit_head has no chain row: run `keel db migrate`"
            kept = [i for i in range(len(drafts)) if i >= len(claims) or _claim(s, m, claims[i])]
            entries = _chain([drafts[i] for i in kept], int(head[0]), str(head[1]))
            if entries:
                s.executemany(insert, [(e.seq, e.at, e.tenant, e.actor, e.action, e.target, e.detail, e.source_ip,
                                        e.prev_hash, e.hash, e.salts, None) for e in entries])  # fmt: skip
                s.execute(seal, (entries[-1].seq, entries[-1].hash, CHAIN))
            if outcomes:
                s.executemany(move, [(o.state, o.at, o.result, o.call_id) for o in outcomes])
        last = entries[-1] if entries else None
        self._audit_seen = (last.seq, last.hash) if last else (int(head[0]), str(head[1]))
        out: list[AuditEntry | None] = [None] * len(drafts)
        for i, e in zip(kept, entries, strict=True):
            out[i] = e
        return out

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

    def audit_naming(self, tenant: str, user: str | None, *, after_seq: int, limit: int) -> list[AuditEntry]:
        m = self._db.dialect.mark
        # a target is a name, or the JSON of an admin route's path parameters (the guard's entries)
        if user is None:
            who = f"(tenant = {m} OR target = {m} OR target LIKE {m} ESCAPE '!' OR detail LIKE {m} ESCAPE '!')"
            params: list[Any] = [tenant, tenant, _json_string(tenant), _json_string(tenant)]
        else:
            who = (
                f"tenant = {m} AND (actor = {m} OR actor = {m} OR target = {m} OR target LIKE {m} ESCAPE '!'"
                f" OR detail LIKE {m} ESCAPE '!')"
            )
            params = [tenant, user, f"user:{user}", user, _json_string(user), _json_string(user)]
        skip = ", ".join([m] * len(PURGE_ACTIONS))
        sql = f"SELECT {_COLS} FROM audit_log WHERE seq > {m} AND {who} AND action NOT IN ({skip}) ORDER BY seq"
        with self._db.session() as s:
            rows = s.fetchall(f"{sql} LIMIT {int(limit)}", (after_seq, *params, *PURGE_ACTIONS))
        return [_entry(r) for r in rows]

    def erase_audit(self, seq: int, fields: Mapping[str, Any], salts: str | None, digests: str) -> None:
        m = self._db.dialect.mark
        names = [f for f in SUBJECT_FIELDS if f in fields]
        sets = ", ".join(f"{f} = {m}" for f in names)
        sql = f"UPDATE audit_log SET {sets}, salts = {m}, digests = {m} WHERE seq = {m}"
        with self._db.transaction() as s:
            s.execute(sql, (*(fields[f] for f in names), salts, digests, seq))


def _chain(drafts: Sequence[AuditDraft], seq: int, prev: str) -> list[AuditEntry]:
    """The drafts numbered and sealed after the entry (seq, prev)."""
    entries = []
    for d in drafts:
        seq += 1
        sealed = entry_hash(seq, d, prev)
        entries.append(AuditEntry(seq, d.at, d.tenant, d.actor, d.action, d.target, d.detail, d.source_ip, prev,
                                  sealed, d.salts))  # fmt: skip
        prev = sealed
    return entries


def _claim(s: Session, m: str, claim: CallClaim | None) -> bool:
    """Make the claim (None: nothing to make) in the transaction of `s`; did the call move (or go in)?"""
    if claim is None:
        return True
    if claim.row is not None:
        sql = f"INSERT INTO agent_calls ({CALL_COLUMNS}) VALUES ({', '.join([m] * 11)}) {_UPSERT}"
        return s.execute(sql, _stored(claim, claim.row)) > 0
    sources = ", ".join([m] * len(claim.sources))
    sql = f"UPDATE agent_calls SET state = 'running', updated_at = {m} WHERE id = {m} AND state IN ({sources})"
    return s.execute(sql, (claim.at, claim.call_id, *claim.sources)) > 0


def _stored(claim: CallClaim, row: CallRow) -> tuple[Any, ...]:
    """The values of a call stored by its claim (it needed no approval): running since the claim."""
    return call_values(replace(row, state="running", updated_at=claim.at))


# a call stored by its claim: inserted as running, or moved from allowed if it is stored already
_UPSERT = (
    "ON CONFLICT (id) DO UPDATE SET state = 'running', updated_at = excluded.updated_at"
    " WHERE agent_calls.state = 'allowed'"
)


# PostgreSQL, one statement: the head moves from (seq, hash) to the last entry's only if it is still there
# (the CTE's row lock, re-checked after a concurrent appender commits); only then do the entries go in and
# the calls move (both join `head`, which is empty otherwise). Scalar parameters (not arrays), so the
# server settles on one generic plan per shape instead of planning every execution (~0.4 ms here).
_ENTRY = "(%s::bigint, %s::float8, " + ", ".join(["%s::text"] * 10) + ")"
_OUTCOME = "(%s::text, %s::text, %s::float8, %s::text)"
_CLAIM = "(%%s::text, %%s::float8, ARRAY[%s]::text[])"
_NEW = "(" + ", ".join(["%s::text"] * 8 + ["%s::float8"] * 3) + ")"  # CALL_COLUMNS


@functools.lru_cache(maxsize=64)
def _one_trip(entries: int, outcomes: int, moves: tuple[int, ...], new: int, durable: bool) -> str:
    """`moves`: the number of source states of each claim of a stored call; `new`: claims that store their
    call. A lost claim (fewer calls moved than claimed) fails the whole statement with a duplicate key on
    the head row, so nothing of it is written."""
    ctes = ["head AS (UPDATE audit_head SET seq = %s, hash = %s WHERE chain = %s AND seq = %s AND hash = %s"
            " RETURNING seq)"]  # fmt: skip
    if moves:
        ctes.append(
            "claimed AS (UPDATE agent_calls c SET state = 'running', updated_at = k.at FROM (VALUES"
            f" {', '.join(_CLAIM % ', '.join(['%s'] * n) for n in moves)}) AS k(id, at, sources), head"
            " WHERE c.id = k.id AND c.state = ANY(k.sources) RETURNING 1)"
        )
    if new:
        ctes.append(
            f"stored AS (INSERT INTO agent_calls ({CALL_COLUMNS}) SELECT n.* FROM (VALUES"
            f" {', '.join([_NEW] * new)}) AS n, head {_UPSERT} RETURNING 1)"
        )
    if moves or new:
        counted = " + ".join(f"(SELECT count(*) FROM {c})" for c, k in (("claimed", moves), ("stored", new)) if k)
        ctes.append(
            "lost AS (INSERT INTO audit_head (chain, seq, hash) SELECT chain, 0, '' FROM audit_head WHERE chain = %s"
            f" AND EXISTS (SELECT FROM head) AND {counted} <> {len(moves) + new} RETURNING 1)"
        )
    if outcomes:
        ctes.append(
            "moved AS (UPDATE agent_calls c SET state = o.state, updated_at = o.at, result = o.result FROM (VALUES"
            f" {', '.join([_OUTCOME] * outcomes)}) AS o(id, state, at, result), head WHERE c.id = o.id"
            " AND c.state = 'running' RETURNING 1)"
        )
    rows = ", ".join([_ENTRY] * entries)
    fast = "" if durable else f", {NO_FLUSH}"
    return (
        f"WITH {', '.join(ctes)} INSERT INTO audit_log ({_COLS})"
        f" SELECT e.* FROM (VALUES {rows}) AS e({_COLS}), head{fast}"
    )


def _one_trip_params(
    seen: tuple[int, str],
    entries: Sequence[AuditEntry],
    outcomes: Sequence[CallOutcome],
    moves: Sequence[CallClaim],
    new: Sequence[CallClaim],
) -> tuple[Any, ...]:
    claimed = [x for c in moves for x in (c.call_id, c.at, *c.sources)]
    stored = [x for c in new if c.row is not None for x in _stored(c, c.row)]
    guard = (CHAIN,) if moves or new else ()
    moved = [x for o in outcomes for x in (o.call_id, o.state, o.at, o.result)]
    rows = [x for e in entries for x in (e.seq, e.at, e.tenant, e.actor, e.action, e.target, e.detail, e.source_ip,
                                         e.prev_hash, e.hash, e.salts, None)]  # fmt: skip
    return (entries[-1].seq, entries[-1].hash, CHAIN, seen[0], seen[1], *claimed, *stored, *guard, *moved, *rows)
