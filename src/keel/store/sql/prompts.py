"""Prompt versions and labels over any SQL dialect (`PromptStore`), each statement written once.

A push inserts the next version number with ON CONFLICT DO NOTHING on both keys (the number and the
content hash), then reads the row that holds the hash: a concurrent push of the same content returns
the one version; a concurrent push of other content that took the number makes this one try the next.
"""

from __future__ import annotations

from typing import Any

import orjson

from keel.store.protocols.prompts import (
    LabelMove,
    PromptContent,
    PromptLabel,
    PromptRollout,
    PromptVersion,
    RolloutPlan,
)
from keel.store.sql.dialect import Database, Row, Session

_VERSION_COLS = "tenant, name, version, hash, content, message, author, created_at"
_LABEL_COLS = "tenant, name, label, version, protected, updated_at, updated_by, rollout"
_ROLLOUT_COLS = (
    "tenant, name, label, stable, version, weight, plan, state, started_at, started_by, stepped_at, held_since,"
    " updated_at, reason, rev"
)
_HISTORY_COLS = "tenant, name, label, at, version, rollout, actor, reason"
_PUSH_TRIES = 20
Shares = tuple[tuple[int, float], ...]


def content_from_json(data: Any) -> PromptContent:
    return PromptContent(
        messages=tuple(data.get("messages") or ()),
        variables=data.get("variables"),
        alias=data.get("alias"),
        params=data.get("params"),
        tools=tuple(data.get("tools") or ()),
        response_format=data.get("response_format"),
    )


def _version(r: Row) -> PromptVersion:
    return PromptVersion(r[0], r[1], r[2], r[3], content_from_json(orjson.loads(r[4])), r[5], r[6], r[7])


def _label(r: Row) -> PromptLabel:
    rollout = tuple((int(v), float(w)) for v, w in orjson.loads(r[7])) if r[7] else ()
    return PromptLabel(r[0], r[1], r[2], r[3], bool(r[4]), r[5], r[6], rollout)


def _shares(shares: Shares) -> str | None:
    return orjson.dumps([[v, w] for v, w in shares]).decode() if shares else None


def _plan(text: str) -> RolloutPlan:
    d = orjson.loads(text)
    return RolloutPlan(
        tuple(d.get("guards") or ()), tuple(float(w) for w in d.get("steps") or ()), d.get("every_s"),
        float(d.get("window_s", 300.0)), int(d.get("min_calls", 50)),
    )  # fmt: skip


def _rollout(r: Row) -> PromptRollout:
    return PromptRollout(
        r[0], r[1], r[2], r[3], r[4], float(r[5]), _plan(r[6]), r[7], r[8], r[9], r[10], r[11], r[12], r[13], r[14]
    )


def _move(r: Row) -> LabelMove:
    rollout = tuple((int(v), float(w)) for v, w in orjson.loads(r[5])) if r[5] else ()
    return LabelMove(r[0], r[1], r[2], r[3], r[4], rollout, r[6], r[7])


def _where(clauses: list[tuple[str, Any]], mark: str) -> tuple[str, tuple[Any, ...]]:
    kept = [(c, v) for c, v in clauses if v is not None]
    if not kept:
        return "", ()
    return " WHERE " + " AND ".join(f"{c} {mark}" for c, _ in kept), tuple(v for _, v in kept)


class SqlPrompts:
    _db: Database

    def push_prompt(
        self, tenant: str, name: str, content: PromptContent, hash: str, *, message: str | None, author: str | None,
        now: float,
    ) -> tuple[PromptVersion, bool]:  # fmt: skip
        d = self._db.dialect
        by_hash = f"SELECT {_VERSION_COLS} FROM prompt_versions WHERE tenant = {d.mark} AND name = {d.mark} AND hash = {d.mark}"
        top = f"SELECT MAX(version) FROM prompt_versions WHERE tenant = {d.mark} AND name = {d.mark}"
        insert = (
            f"INSERT INTO prompt_versions ({_VERSION_COLS}) VALUES ({d.marks(8)}) ON CONFLICT DO NOTHING"
            f" RETURNING {_VERSION_COLS}"
        )
        body = orjson.dumps(content.json()).decode()
        for _ in range(_PUSH_TRIES):
            with self._db.transaction() as s:
                found = s.fetchone(by_hash, (tenant, name, hash))
                if found is not None:
                    return _version(found), False
                row = s.fetchone(top, (tenant, name))
                number = (row[0] if row is not None and row[0] is not None else 0) + 1
                made = s.fetchone(insert, (tenant, name, number, hash, body, message, author, now))
                if made is not None:
                    return _version(made), True
        raise RuntimeError(f"prompt '{name}': {_PUSH_TRIES} concurrent pushes took every version number tried")

    def claim_prompt(self, tenant: str, name: str, team: str | None) -> str | None:
        m = self._db.dialect.mark
        claim = f"INSERT INTO prompts (tenant, name, team) VALUES ({m}, {m}, {m}) ON CONFLICT DO NOTHING"
        with self._db.transaction() as s:
            s.execute(claim, (tenant, name, team))
            row = s.fetchone(f"SELECT team FROM prompts WHERE tenant = {m} AND name = {m}", (tenant, name))
        return None if row is None else row[0]

    def set_prompt_team(self, tenant: str, name: str, team: str | None) -> None:
        m = self._db.dialect.mark
        sql = (
            f"INSERT INTO prompts (tenant, name, team) VALUES ({m}, {m}, {m})"
            " ON CONFLICT (tenant, name) DO UPDATE SET team = excluded.team"
        )
        with self._db.transaction() as s:
            s.execute(sql, (tenant, name, team))

    def prompt_teams(self, tenant: str | None = None, name: str | None = None) -> dict[tuple[str, str], str | None]:
        where, params = _where([("tenant =", tenant), ("name =", name)], self._db.dialect.mark)
        sql = f"SELECT tenant, name, team FROM prompts{where}"
        with self._db.session() as s:
            return {(r[0], r[1]): r[2] for r in s.fetchall(sql, params)}

    def get_prompt_version(self, tenant: str, name: str, version: int) -> PromptVersion | None:
        m = self._db.dialect.mark
        sql = f"SELECT {_VERSION_COLS} FROM prompt_versions WHERE tenant = {m} AND name = {m} AND version = {m}"
        with self._db.session() as s:
            row = s.fetchone(sql, (tenant, name, version))
        return None if row is None else _version(row)

    def list_prompt_versions(
        self, tenant: str | None = None, name: str | None = None, *, since: float | None = None
    ) -> list[PromptVersion]:
        m = self._db.dialect.mark
        where, params = _where([("tenant =", tenant), ("name =", name), ("created_at >=", since)], m)
        sql = f"SELECT {_VERSION_COLS} FROM prompt_versions{where} ORDER BY tenant, name, version"
        with self._db.session() as s:
            return [_version(r) for r in s.fetchall(sql, params)]

    def list_prompt_labels(self, tenant: str | None = None, name: str | None = None) -> list[PromptLabel]:
        m = self._db.dialect.mark
        where, params = _where([("tenant =", tenant), ("name =", name)], m)
        sql = f"SELECT {_LABEL_COLS} FROM prompt_labels{where} ORDER BY tenant, name, label"
        with self._db.session() as s:
            return [_label(r) for r in s.fetchall(sql, params)]

    def set_prompt_label(
        self,
        tenant: str,
        name: str,
        label: str,
        version: int,
        *,
        protected: bool | None,
        by: str | None,
        now: float,
        rollout: tuple[tuple[int, float], ...] = (),
        reason: str | None = None,
    ) -> PromptLabel | None:
        d = self._db.dialect
        m = d.mark
        wanted = sorted({version, *(v for v, _ in rollout)})
        exists = (
            f"SELECT COUNT(*) FROM prompt_versions WHERE tenant = {m} AND name = {m}"
            f" AND version IN ({d.marks(len(wanted))})"
        )
        keep = "prompt_labels.protected" if protected is None else "excluded.protected"
        upsert = (
            f"INSERT INTO prompt_labels ({_LABEL_COLS}) VALUES ({d.marks(8)})"
            f" ON CONFLICT (tenant, name, label) DO UPDATE SET version = excluded.version, protected = {keep},"
            f" updated_at = excluded.updated_at, updated_by = excluded.updated_by, rollout = excluded.rollout"
            f" RETURNING {_LABEL_COLS}"
        )
        with self._db.transaction() as s:
            found = s.fetchone(exists, (tenant, name, *wanted))
            if found is None or found[0] != len(wanted):
                return None
            row = s.fetchone(upsert, (tenant, name, label, version, bool(protected), now, by, _shares(rollout)))
            self._end_rollout(s, tenant, name, label, version, rollout, by, reason, now)
            self._record(s, tenant, name, label, version, rollout, by, reason, now)
        assert row is not None
        return _label(row)

    def _end_rollout(
        self, s: Session, tenant: str, name: str, label: str, version: int, rollout: Shares, by: str | None,
        reason: str | None, now: float,
    ) -> None:  # fmt: skip
        """A label moved by hand ends its running rollout: `rolled_back` when it returns to that rollout's
        stable version alone, else `ended`."""
        m = self._db.dialect.mark
        back = "rolled_back" if not rollout else "ended"
        s.execute(
            f"UPDATE prompt_rollouts SET state = CASE WHEN stable = {m} THEN {m} ELSE 'ended' END, reason = {m},"
            f" updated_at = {m}, rev = rev + 1 WHERE tenant = {m} AND name = {m} AND label = {m} AND state = 'running'",
            (version, back, reason or f"label moved by {by or 'hand'}", now, tenant, name, label),
        )

    def _record(
        self, s: Session, tenant: str, name: str, label: str, version: int, rollout: Shares, actor: str | None,
        reason: str | None, now: float,
    ) -> None:  # fmt: skip
        d = self._db.dialect
        s.execute(
            f"INSERT INTO prompt_label_history ({_HISTORY_COLS}) VALUES ({d.marks(8)})",
            (tenant, name, label, now, version, _shares(rollout), actor, reason),
        )

    def start_prompt_rollout(self, rollout: PromptRollout) -> PromptLabel | None:
        r = rollout
        d = self._db.dialect
        m = d.mark
        exists = f"SELECT COUNT(*) FROM prompt_versions WHERE tenant = {m} AND name = {m} AND version IN ({m}, {m})"
        label_upsert = (
            f"INSERT INTO prompt_labels ({_LABEL_COLS}) VALUES ({d.marks(8)})"
            f" ON CONFLICT (tenant, name, label) DO UPDATE SET version = excluded.version,"
            f" updated_at = excluded.updated_at, updated_by = excluded.updated_by, rollout = excluded.rollout"
            f" RETURNING {_LABEL_COLS}"
        )
        rollout_upsert = (
            f"INSERT INTO prompt_rollouts ({_ROLLOUT_COLS}) VALUES ({d.marks(15)})"
            f" ON CONFLICT (tenant, name, label) DO UPDATE SET stable = excluded.stable, version = excluded.version,"
            f" weight = excluded.weight, plan = excluded.plan, state = excluded.state,"
            f" started_at = excluded.started_at, started_by = excluded.started_by, stepped_at = excluded.stepped_at,"
            f" held_since = excluded.held_since, updated_at = excluded.updated_at, reason = excluded.reason,"
            f" rev = prompt_rollouts.rev + 1"
        )
        shares = ((r.version, r.weight),)
        plan = orjson.dumps(r.plan.json()).decode()
        with self._db.transaction() as s:
            found = s.fetchone(exists, (r.tenant, r.name, r.stable, r.version))
            if found is None or found[0] != 2:
                return None
            row = s.fetchone(
                label_upsert, (r.tenant, r.name, r.label, r.stable, False, r.started_at, r.started_by, _shares(shares))
            )
            s.execute(
                rollout_upsert,
                (r.tenant, r.name, r.label, r.stable, r.version, r.weight, plan, "running", r.started_at,
                 r.started_by, r.stepped_at, r.held_since, r.updated_at, r.reason, 0),
            )  # fmt: skip
            why = f"rollout started: v{r.version} {r.weight:g}%" + (
                f", guards {', '.join(r.plan.guards)}" if r.plan.guards else ""
            )
            self._record(s, r.tenant, r.name, r.label, r.stable, shares, r.started_by, why, r.started_at)
        assert row is not None
        return _label(row)

    def list_prompt_rollouts(
        self, tenant: str | None = None, name: str | None = None, *, running: bool = False
    ) -> list[PromptRollout]:
        m = self._db.dialect.mark
        where, params = _where([("tenant =", tenant), ("name =", name), ("state =", "running" if running else None)], m)
        sql = f"SELECT {_ROLLOUT_COLS} FROM prompt_rollouts{where} ORDER BY tenant, name, label"
        with self._db.session() as s:
            return [_rollout(r) for r in s.fetchall(sql, params)]

    def advance_prompt_rollout(self, rollout: PromptRollout, *, label: tuple[int, Shares] | None, actor: str) -> bool:
        r = rollout
        m = self._db.dialect.mark
        update = (
            f"UPDATE prompt_rollouts SET weight = {m}, state = {m}, stepped_at = {m}, held_since = {m},"
            f" updated_at = {m}, reason = {m}, rev = rev + 1"
            f" WHERE tenant = {m} AND name = {m} AND label = {m} AND rev = {m} AND state = 'running'"
        )
        move = (
            f"UPDATE prompt_labels SET version = {m}, rollout = {m}, updated_at = {m}, updated_by = {m}"
            f" WHERE tenant = {m} AND name = {m} AND label = {m}"
        )
        with self._db.transaction() as s:
            won = s.execute(
                update,
                (
                    r.weight,
                    r.state,
                    r.stepped_at,
                    r.held_since,
                    r.updated_at,
                    r.reason,
                    r.tenant,
                    r.name,
                    r.label,
                    r.rev,
                ),
            )
            if won != 1:
                return False
            if label is not None:
                version, shares = label
                s.execute(move, (version, _shares(shares), r.updated_at, actor, r.tenant, r.name, r.label))
                self._record(s, r.tenant, r.name, r.label, version, shares, actor, r.reason, r.updated_at)
        return True

    def prompt_label_history(
        self, tenant: str, name: str, label: str | None = None, *, limit: int = 100
    ) -> list[LabelMove]:
        m = self._db.dialect.mark
        where, params = _where([("tenant =", tenant), ("name =", name), ("label =", label)], m)
        sql = f"SELECT {_HISTORY_COLS} FROM prompt_label_history{where} ORDER BY at DESC LIMIT {m}"
        with self._db.session() as s:
            return [_move(r) for r in s.fetchall(sql, (*params, max(1, min(limit, 10_000))))]
