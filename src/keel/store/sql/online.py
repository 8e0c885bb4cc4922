"""Online eval rules and scores over any SQL dialect (`OnlineEvalStore`), each statement written once."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from keel.store.protocols.online import OnlineRule, ScoreGroup, ScoreQuery, ScoreRow
from keel.store.sql.dialect import Database, Row

_SCORE_COLS = "trace_id, rule, scorer, at, value, passed, tenant, feature, alias, model, prompt_version"
_GROUP_COLUMN = {
    "none": "NULL",
    "rule": "rule",
    "feature": "feature",
    "model": "model",
    "alias": "alias",
    "prompt_version": "prompt_version",
    "tenant": "tenant",
}
MAX_LIMIT = 10_000


def rule_from_json(data: dict[str, Any]) -> OnlineRule:
    tags = data.get("tags") or {}
    return OnlineRule(
        name=str(data["name"]),
        rate=float(data["rate"]),
        scorers=tuple(data.get("scorers") or ()),
        tenant=data.get("tenant"),
        alias=data.get("alias"),
        feature=data.get("feature"),
        prompt_version=data.get("prompt_version"),
        tags=tuple(sorted((str(k), str(v)) for k, v in tags.items())),
        delay_s=float(data.get("delay_s") or 0.0),
        enabled=bool(data.get("enabled", True)),
        updated_at=float(data.get("updated_at") or 0.0),
    )


def _score(r: Row) -> ScoreRow:
    return ScoreRow(r[0], r[1], r[2], float(r[3]), float(r[4]), bool(r[5]), r[6], r[7], r[8], r[9], r[10])


def _where(q: ScoreQuery, mark: str) -> tuple[str, list[Any]]:
    clauses, params = [f"at >= {mark}", f"at < {mark}"], [q.since, q.until]
    for column in ("rule", "scorer", "feature", "alias", "tenant"):
        value = getattr(q, column)
        if value is not None:
            clauses.append(f"{column} = {mark}")
            params.append(value)
    return " AND ".join(clauses), params


class SqlOnline:
    _db: Database

    def put_online_rule(self, rule: OnlineRule) -> None:
        m = self._db.dialect.mark
        sql = (
            f"INSERT INTO online_rules (name, spec, updated_at) VALUES ({m}, {m}, {m})"
            " ON CONFLICT (name) DO UPDATE SET spec = excluded.spec, updated_at = excluded.updated_at"
        )
        with self._db.transaction() as s:
            s.execute(sql, (rule.name, orjson.dumps(rule.json()).decode(), rule.updated_at))

    def list_online_rules(self) -> list[OnlineRule]:
        with self._db.session() as s:
            rows = s.fetchall("SELECT spec FROM online_rules ORDER BY name")
        return [rule_from_json(orjson.loads(r[0])) for r in rows]

    def delete_online_rule(self, name: str) -> bool:
        with self._db.transaction() as s:
            return s.execute(f"DELETE FROM online_rules WHERE name = {self._db.dialect.mark}", (name,)) > 0

    def add_scores(self, rows: Sequence[ScoreRow]) -> int:
        if not rows:
            return 0
        d = self._db.dialect
        sql = (
            f"INSERT INTO eval_scores ({_SCORE_COLS}) VALUES ({d.marks(11)})"
            " ON CONFLICT (trace_id, rule, scorer) DO NOTHING"
        )
        ordered = sorted(rows, key=lambda r: (r.trace_id, r.rule, r.scorer))
        added = 0
        with self._db.transaction() as s:
            for r in ordered:
                added += s.execute(sql, (r.trace_id, r.rule, r.scorer, r.at, r.value, r.passed, r.tenant,
                                         r.feature, r.alias, r.model, r.prompt_version))  # fmt: skip
        return added

    def score_rollup(self, query: ScoreQuery) -> list[ScoreGroup]:
        d = self._db.dialect
        where, params = _where(query, d.mark)
        group = _GROUP_COLUMN[query.by]
        grouped = "scorer" if query.by == "none" else f"scorer, {group}"
        passed = "SUM(CASE WHEN passed THEN 1 ELSE 0 END)"
        sql = (
            f"SELECT scorer, {group}, COUNT(*), AVG(value), {passed} FROM eval_scores WHERE {where}"
            f" GROUP BY {grouped} ORDER BY COUNT(*) DESC, scorer LIMIT {d.mark}"
        )
        with self._db.session() as s:
            rows = s.fetchall(sql, (*params, min(max(1, query.limit), MAX_LIMIT)))
        return [ScoreGroup(r[0], None if r[1] is None else str(r[1]), int(r[2]), float(r[3]), int(r[4])) for r in rows]

    def list_scores(self, query: ScoreQuery) -> list[ScoreRow]:
        d = self._db.dialect
        where, params = _where(query, d.mark)
        sql = f"SELECT {_SCORE_COLS} FROM eval_scores WHERE {where} ORDER BY at DESC LIMIT {d.mark}"
        with self._db.session() as s:
            rows = s.fetchall(sql, (*params, min(max(1, query.limit), MAX_LIMIT)))
        return [_score(r) for r in rows]
