"""The OnlineEvalStore contract over every SQL backend (SQLite and PostgreSQL): rules replace by name
and read back whole; scores are written once per (trace, rule, scorer), roll up per dimension over a
window, filter, list newest first; a tenant's deletion takes its scores."""

from __future__ import annotations

import pytest

from keel.store.protocols import OnlineRule, ScoreQuery, ScoreRow, Store


def row(trace: str, at: float, value: float, scorer: str = "quality", **kw: str | None) -> ScoreRow:
    attribution: dict[str, str | None] = {
        "tenant": "t1", "feature": "support", "alias": "gpt", "model": "gpt-4o", "prompt_version": "v1", **kw
    }  # fmt: skip
    return ScoreRow(trace, "r", scorer, at, value, value >= 0.5, **attribution)


def test_rules_replace_by_name_and_read_back_whole(store: Store) -> None:
    first = OnlineRule(
        "b", 0.1, ({"type": "is-json"},), alias="gpt", tags=(("team", "x"),), delay_s=2.5, updated_at=1.0
    )
    store.put_online_rule(first)
    store.put_online_rule(OnlineRule("a", 1.0, ({"type": "contains", "value": "é"},), enabled=False))
    changed = OnlineRule("b", 0.5, ({"type": "regex", "value": "^x"}, {"type": "is-json"}), feature="f", updated_at=2.0)
    store.put_online_rule(changed)
    assert [r.name for r in store.list_online_rules()] == ["a", "b"]
    assert store.list_online_rules()[1] == changed
    assert store.delete_online_rule("a") and not store.delete_online_rule("a")


def test_scores_once_per_trace_rule_and_scorer_and_their_rollups(store: Store) -> None:
    rows = [row("t1", 10.0, 1.0), row("t2", 11.0, 0.0, prompt_version="v2"), row("t3", 12.0, 0.5, feature=None)]
    rows.append(row("t1", 10.0, 0.25, scorer="other"))
    assert store.add_scores(rows) == 4
    assert store.add_scores([row("t1", 10.0, 0.0), row("t4", 13.0, 1.0)]) == 1  # t1 is there already
    total = store.score_rollup(ScoreQuery(since=0, until=100))
    assert [(g.scorer, g.group, g.count, g.passed) for g in total] == [("quality", None, 4, 3), ("other", None, 1, 0)]
    assert total[0].mean == pytest.approx(0.625)
    by_version = store.score_rollup(ScoreQuery(since=0, until=100, by="prompt_version", scorer="quality"))
    assert sorted((g.group, g.count) for g in by_version) == [("v1", 3), ("v2", 1)]
    by_feature = store.score_rollup(ScoreQuery(since=0, until=100, by="feature", scorer="quality"))
    assert sorted((g.group or "", g.count) for g in by_feature) == [("", 1), ("support", 3)]
    assert store.score_rollup(ScoreQuery(since=11, until=13, scorer="quality"))[0].count == 2  # [since, until)
    assert [r.trace_id for r in store.list_scores(ScoreQuery(since=0, until=100, scorer="quality", limit=2))] == [
        "t4",
        "t3",
    ]
    assert store.erase_subject("eval_scores", "t1", None, 2, lambda keys: None) == 5  # the purge's path
    assert store.score_rollup(ScoreQuery(since=0, until=100)) == []
