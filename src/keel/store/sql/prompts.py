"""Prompt versions and labels over any SQL dialect (`PromptStore`), each statement written once.

A push inserts the next version number with ON CONFLICT DO NOTHING on both keys (the number and the
content hash), then reads the row that holds the hash: a concurrent push of the same content returns
the one version; a concurrent push of other content that took the number makes this one try the next.
"""

from __future__ import annotations

from typing import Any

import orjson

from keel.store.protocols.prompts import PromptContent, PromptLabel, PromptVersion
from keel.store.sql.dialect import Database, Row

_VERSION_COLS = "tenant, name, version, hash, content, message, author, created_at"
_LABEL_COLS = "tenant, name, label, version, protected, updated_at, updated_by, rollout"
_PUSH_TRIES = 20


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
        shares = orjson.dumps([[v, w] for v, w in rollout]).decode() if rollout else None
        with self._db.transaction() as s:
            found = s.fetchone(exists, (tenant, name, *wanted))
            if found is None or found[0] != len(wanted):
                return None
            row = s.fetchone(upsert, (tenant, name, label, version, bool(protected), now, by, shares))
        assert row is not None
        return _label(row)
