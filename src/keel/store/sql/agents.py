"""Secrets, tools, runs and tool calls over any SQL dialect (`AgentStore`)."""

from __future__ import annotations

from typing import Any, cast

import orjson

from keel.store.protocols.agents import CallRow, CallState, RunRow, SecretRow, ToolRow
from keel.store.sql.dialect import Database, Row

_SECRET = "tenant, name, sealed, key_id, created_at"
_TOOL = "tenant, name, spec, updated_at"
_RUN = "id, tenant, state, data, created_at, updated_at"
_CALL = "id, run_id, tenant, tool, arguments, state, result, decided_by, expires_at, created_at, updated_at"
CALL_COLUMNS = _CALL  # a call row's columns, in `call_values` order (the audit's claims store calls too)


def _secret(r: Row) -> SecretRow:
    return SecretRow(r[0], r[1], r[2], r[3], float(r[4]))


def _tool(r: Row) -> ToolRow:
    return ToolRow(r[0], r[1], orjson.loads(r[2]), float(r[3]))


def _run(r: Row) -> RunRow:
    return RunRow(r[0], r[1], r[2], orjson.loads(r[3]), float(r[4]), float(r[5]))


def _call(r: Row) -> CallRow:
    state = cast(CallState, r[5])
    return CallRow(
        r[0], r[1], r[2], r[3], orjson.loads(r[4]), state, r[6], r[7], float(r[8]), float(r[9]), float(r[10])
    )


def _dump(value: Any) -> str:
    return orjson.dumps(value).decode()


def call_values(row: CallRow) -> tuple[Any, ...]:
    """`row` as the values of an insert into `CALL_COLUMNS`."""
    return (row.id, row.run_id, row.tenant, row.tool, _dump(row.arguments), row.state, row.result,
            row.decided_by, row.expires_at, row.created_at, row.updated_at)  # fmt: skip


class SqlAgents:
    _db: Database

    def _where(self, pairs: list[tuple[str, Any]]) -> tuple[str, tuple[Any, ...]]:
        kept = [(c, v) for c, v in pairs if v is not None]
        if not kept:
            return "", ()
        m = self._db.dialect.mark
        return " WHERE " + " AND ".join(f"{c} = {m}" for c, _ in kept), tuple(v for _, v in kept)

    def put_secret(self, row: SecretRow) -> None:
        d = self._db.dialect
        sql = (
            f"INSERT INTO agent_secrets ({_SECRET}) VALUES ({d.marks(5)}) ON CONFLICT (tenant, name) DO UPDATE"
            " SET sealed = excluded.sealed, key_id = excluded.key_id, created_at = excluded.created_at"
        )
        with self._db.session() as s:
            s.execute(sql, (row.tenant, row.name, row.sealed, row.key_id, row.created_at))

    def get_secret(self, tenant: str, name: str) -> SecretRow | None:
        where, params = self._where([("tenant", tenant), ("name", name)])
        with self._db.session() as s:
            row = s.fetchone(f"SELECT {_SECRET} FROM agent_secrets{where}", params)
        return None if row is None else _secret(row)

    def list_secrets(self, tenant: str | None = None) -> list[SecretRow]:
        where, params = self._where([("tenant", tenant)])
        with self._db.session() as s:
            return [
                _secret(r)
                for r in s.fetchall(f"SELECT {_SECRET} FROM agent_secrets{where} ORDER BY tenant, name", params)
            ]

    def delete_secret(self, tenant: str, name: str) -> bool:
        where, params = self._where([("tenant", tenant), ("name", name)])
        with self._db.session() as s:
            return s.execute(f"DELETE FROM agent_secrets{where}", params) > 0

    def put_agent(self, row: ToolRow) -> None:
        d = self._db.dialect
        sql = (
            f"INSERT INTO agent_defs ({_TOOL}) VALUES ({d.marks(4)}) ON CONFLICT (tenant, name) DO UPDATE"
            " SET spec = excluded.spec, updated_at = excluded.updated_at"
        )
        with self._db.session() as s:
            s.execute(sql, (row.tenant, row.name, _dump(row.spec), row.updated_at))

    def get_agent(self, tenant: str, name: str) -> ToolRow | None:
        where, params = self._where([("tenant", tenant), ("name", name)])
        with self._db.session() as s:
            row = s.fetchone(f"SELECT {_TOOL} FROM agent_defs{where}", params)
        return None if row is None else _tool(row)

    def list_agents(self, tenant: str | None = None) -> list[ToolRow]:
        where, params = self._where([("tenant", tenant)])
        with self._db.session() as s:
            return [
                _tool(r) for r in s.fetchall(f"SELECT {_TOOL} FROM agent_defs{where} ORDER BY tenant, name", params)
            ]

    def delete_agent(self, tenant: str, name: str) -> bool:
        where, params = self._where([("tenant", tenant), ("name", name)])
        with self._db.session() as s:
            return s.execute(f"DELETE FROM agent_defs{where}", params) > 0

    def put_tool(self, row: ToolRow) -> None:
        d = self._db.dialect
        sql = (
            f"INSERT INTO agent_tools ({_TOOL}) VALUES ({d.marks(4)}) ON CONFLICT (tenant, name) DO UPDATE"
            " SET spec = excluded.spec, updated_at = excluded.updated_at"
        )
        with self._db.session() as s:
            s.execute(sql, (row.tenant, row.name, _dump(row.spec), row.updated_at))

    def get_tool(self, tenant: str, name: str) -> ToolRow | None:
        where, params = self._where([("tenant", tenant), ("name", name)])
        with self._db.session() as s:
            row = s.fetchone(f"SELECT {_TOOL} FROM agent_tools{where}", params)
        return None if row is None else _tool(row)

    def list_tools(self, tenant: str | None = None) -> list[ToolRow]:
        where, params = self._where([("tenant", tenant)])
        with self._db.session() as s:
            return [
                _tool(r) for r in s.fetchall(f"SELECT {_TOOL} FROM agent_tools{where} ORDER BY tenant, name", params)
            ]

    def delete_tool(self, tenant: str, name: str) -> bool:
        where, params = self._where([("tenant", tenant), ("name", name)])
        with self._db.session() as s:
            return s.execute(f"DELETE FROM agent_tools{where}", params) > 0

    def put_run(self, row: RunRow) -> None:
        d = self._db.dialect
        sql = (
            f"INSERT INTO agent_runs ({_RUN}) VALUES ({d.marks(6)}) ON CONFLICT (id) DO UPDATE"
            " SET state = excluded.state, data = excluded.data, updated_at = excluded.updated_at"
        )
        with self._db.session() as s:
            s.execute(sql, (row.id, row.tenant, row.state, _dump(row.data), row.created_at, row.updated_at))

    def get_run(self, run_id: str) -> RunRow | None:
        where, params = self._where([("id", run_id)])
        with self._db.session() as s:
            row = s.fetchone(f"SELECT {_RUN} FROM agent_runs{where}", params)
        return None if row is None else _run(row)

    def list_runs(self, tenant: str | None = None, state: str | None = None, limit: int = 100) -> list[RunRow]:
        where, params = self._where([("tenant", tenant), ("state", state)])
        sql = f"SELECT {_RUN} FROM agent_runs{where} ORDER BY created_at DESC LIMIT {int(limit)}"
        with self._db.session() as s:
            return [_run(r) for r in s.fetchall(sql, params)]

    def claim_run(
        self, run_id: str, source: str, to: str, *, now: float, updated_before: float | None = None
    ) -> RunRow | None:
        m = self._db.dialect.mark
        stale = f" AND updated_at < {m}" if updated_before is not None else ""
        sql = f"UPDATE agent_runs SET state = {m}, updated_at = {m} WHERE id = {m} AND state = {m}{stale} RETURNING {_RUN}"
        params = (to, now, run_id, source, *(() if updated_before is None else (updated_before,)))
        with self._db.transaction() as s:
            row = s.fetchone(sql, params)
        return None if row is None else _run(row)

    def add_call(self, row: CallRow) -> CallRow:
        d = self._db.dialect
        sql = f"INSERT INTO agent_calls ({_CALL}) VALUES ({d.marks(11)}) ON CONFLICT (id) DO NOTHING"
        values = call_values(row)
        if d.name == "postgres":  # one round trip when the row is new: the insert returns it, committed alone
            with self._db.session() as s:
                found = s.fetchone(f"{sql} RETURNING {_CALL}", values)
            return _call(found) if found is not None else self._stored_call(row.id)
        with self._db.transaction() as s:
            s.execute(sql, values)
            found = s.fetchone(f"SELECT {_CALL} FROM agent_calls WHERE id = {d.mark}", (row.id,))
        assert found is not None
        return _call(found)

    def _stored_call(self, call_id: str) -> CallRow:
        found = self.get_call(call_id)
        assert found is not None  # the insert found it there; calls are never deleted while a run goes on
        return found

    def get_call(self, call_id: str) -> CallRow | None:
        where, params = self._where([("id", call_id)])
        with self._db.session() as s:
            row = s.fetchone(f"SELECT {_CALL} FROM agent_calls{where}", params)
        return None if row is None else _call(row)

    def list_calls(
        self, *, tenant: str | None = None, run_id: str | None = None, state: str | None = None
    ) -> list[CallRow]:
        where, params = self._where([("tenant", tenant), ("run_id", run_id), ("state", state)])
        with self._db.session() as s:
            return [
                _call(r) for r in s.fetchall(f"SELECT {_CALL} FROM agent_calls{where} ORDER BY created_at, id", params)
            ]

    def move_call(
        self,
        call_id: str,
        sources: tuple[CallState, ...],
        to: CallState,
        *,
        now: float,
        result: str | None = None,
        decided_by: str | None = None,
    ) -> CallRow | None:
        d = self._db.dialect
        m = d.mark
        sql = (
            f"UPDATE agent_calls SET state = {m}, updated_at = {m}, result = COALESCE({m}, result),"
            f" decided_by = COALESCE({m}, decided_by) WHERE id = {m} AND state IN ({d.marks(len(sources))})"
            f" RETURNING {_CALL}"
        )
        # PostgreSQL: the statement commits alone (one round trip); SQLite: its write transaction, which a
        # RETURNING row fetched in autocommit would hold open until the statement is reset
        with self._db.session() if d.name == "postgres" else self._db.transaction() as s:
            row = s.fetchone(sql, (to, now, result, decided_by, call_id, *sources))
        return None if row is None else _call(row)
