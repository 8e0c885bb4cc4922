"""Online eval monitors on a real SQLite store with a clock of the test's: below a threshold, dropping
against the previous window, one episode per group; and the sampling decision and the score store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from keel.alerts.sender import RuleEvent
from keel.config.sections.online_evals import DriftCheckConfig, MonitorConfig
from keel.evals.monitors import DriftChecks, Monitors
from keel.evals.online import picked
from keel.store.open import open_store
from keel.store.protocols import OnlineRule, ScoreQuery, ScoreRow, Store
from keel.types import TraceRecord

HOUR = 3600.0


def scores(store: Store, start: float, values: list[float], feature: str = "support", prefix: str = "t") -> None:
    rows = [
        ScoreRow(f"{prefix}{start}-{i}", "r", "quality", start + i, v, v >= 0.5, "t1", feature, "gpt", "m1", "v3")
        for i, v in enumerate(values)
    ]
    store.add_scores(rows)


def monitors(store: Store, **fields: Any) -> Monitors:
    """`evaluate` returns the events this process won; `send` (the webhook) is not exercised here."""
    sent: list[RuleEvent] = []
    config = MonitorConfig(name="q", scorer="quality", window="1h", min_samples=10, **fields)
    return Monitors([config], store, sent.append, every_s=1)


def test_a_drop_against_the_previous_window_fires_once_and_resolves_once(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path}/keel.db")
    try:
        m = monitors(store, drop=0.2)
        t0 = 1_000_000.0
        scores(store, t0, [0.9] * 30)  # hour 1: 0.9
        assert m.evaluate(t0 + HOUR) == []  # no previous window yet
        scores(store, t0 + HOUR, [0.6] * 30)  # hour 2: 0.6, a drop of 0.3
        [fired] = m.evaluate(t0 + 2 * HOUR)
        assert (fired.event, fired.metric, fired.observed, fired.threshold) == (
            "alert.firing",
            "score_mean:quality",
            0.6,
            0.2,
        )
        assert m.evaluate(t0 + 2 * HOUR + 1) == []  # still holds: nothing more
        scores(store, t0 + 2 * HOUR, [0.6] * 30)  # hour 3 level with hour 2: no longer a drop
        [resolved] = m.evaluate(t0 + 3 * HOUR)
        assert (resolved.event, resolved.since) == ("alert.resolved", fired.since)
        assert m.evaluate(t0 + 3 * HOUR + 1) == []
    finally:
        store.close()


def test_below_a_threshold_per_feature_each_its_own_episode(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path}/keel.db")
    try:
        m = monitors(store, below=0.7, by="feature")
        t0 = 2_000_000.0
        scores(store, t0, [0.9] * 20, "search", prefix="a")
        scores(store, t0, [0.5] * 20, "support", prefix="b")
        scores(store, t0, [0.1] * 5, "tiny", prefix="c")  # fewer than min_samples: no verdict
        [fired] = m.evaluate(t0 + 60)
        assert (fired.scope, fired.value, fired.observed, fired.calls) == ("feature", "support", 0.5, 20)
        scores(store, t0 + 60, [1.0] * 40, "support", prefix="d")  # mean 0.83
        [resolved] = m.evaluate(t0 + 120)
        assert (resolved.event, resolved.value) == ("alert.resolved", "support")
    finally:
        store.close()


def test_scores_are_written_once_and_roll_up_per_dimension(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path}/keel.db")
    try:
        scores(store, 100.0, [1.0, 0.0, 0.5, 1.0])
        scores(store, 100.0, [1.0, 0.0, 0.5, 1.0])  # a job run twice
        [group] = store.score_rollup(ScoreQuery(since=0, until=1000, by="prompt_version"))
        assert (group.scorer, group.group, group.count, group.mean, group.passed) == ("quality", "v3", 4, 0.625, 3)
        assert [g.group for g in store.score_rollup(ScoreQuery(since=0, until=1000, by="model"))] == ["m1"]
        assert store.score_rollup(ScoreQuery(since=200, until=1000)) == []  # another window
        rule = OnlineRule("r", 0.25, ({"type": "is-json"},), feature="support", tags=(("team", "a"),), delay_s=5.0)
        store.put_online_rule(rule)
        assert store.list_online_rules() == [rule]
        assert store.delete_online_rule("r") and store.list_online_rules() == []
    finally:
        store.close()


def test_the_sampling_decision_is_stable_per_rule_and_call() -> None:
    ids = [f"{i:016x}abcdef01{i & 0xFFFFFF:06x}" for i in range(20_000)]  # time-ordered ids, like new_trace_id
    kept = [t for t in ids if picked("r", t, 0.1)]
    assert 1800 <= len(kept) <= 2200
    assert kept == [t for t in ids if picked("r", t, 0.1)]  # the same calls every time
    assert set(kept) != {t for t in ids if picked("other", t, 0.1)}  # each rule draws its own
    assert not any(picked("r", t, 0.0) for t in ids[:1000]) and all(picked("r", t, 1.0) for t in ids[:1000])


def test_a_scheduled_drift_check_fires_on_a_change_and_resolves_when_it_is_gone(tmp_path: Path) -> None:
    """Output drift only (no embedder): refusals appear in the recent day, then the window moves on."""
    store = open_store(f"sqlite:///{tmp_path}/keel.db")
    day = 86400.0
    now = 50 * day

    def calls(start: float, n: int, refusing: bool, first: int) -> list[TraceRecord]:
        answer = "I'm sorry, but I can't help with that." if refusing else "Sure, here it is."
        return [
            TraceRecord(f"c{first + i}", start + i * 60, tenant="t1", feature="support", output_tokens=30,
                        request={"messages": [{"role": "user", "content": "q"}]},
                        response={"content": answer if i % 2 else "Sure.", "finish_reason": "stop"})
            for i in range(n)
        ]  # fmt: skip

    try:
        store.append_traces(calls(now - 5 * day, 100, False, 0) + calls(now - day / 2, 100, True, 1000))
        sent: list[RuleEvent] = []
        config = DriftCheckConfig(name="support-out", feature="support", since="1d", reference="7d..1d")
        check = DriftChecks(config, store, None, None, sent.append)
        report = check.report(now)
        assert report.drifted == ["refusal_rate"] and "input" in report.unavailable
        [fired] = check.judge(report, now)
        assert (fired.event, fired.rule, fired.metric, fired.scope, fired.value) == (
            "alert.firing", "support-out", "drift:refusal_rate", "feature", "support",
        )  # fmt: skip
        assert check.judge(check.report(now + 60), now + 60) == []  # still drifted: nothing more
        later = now + 8 * day  # nothing recent, nothing in the reference: no test is significant
        [resolved] = check.judge(check.report(later), later)
        assert (resolved.event, resolved.since) == ("alert.resolved", fired.since)
    finally:
        store.close()


def test_a_scoring_job_for_a_rule_written_by_another_process_reads_it_from_the_store(tmp_path: Path) -> None:
    """A worker process's rules may be up to a refresh old: a job naming an unknown rule re-reads them."""
    import asyncio

    from keel.evals.assertions import Scoring
    from keel.evals.online import JOB_KIND, RuleBook, Scorer
    from keel.store.protocols import JobSpec
    from keel.types import Span

    store = open_store(f"sqlite:///{tmp_path}/keel.db")
    try:
        book = RuleBook(store)
        book.load()  # before the rule exists, as in a worker that has not refreshed yet
        store.put_online_rule(OnlineRule("fresh", 1.0, ({"type": "icontains", "value": "paris", "metric": "paris"},)))
        response = {"content": "Paris.", "tool_calls": [], "finish_reason": "stop"}
        store.append_traces([TraceRecord("c1", 100.0, tenant="t1", feature="f", model="m", response=response)])
        [job] = store.enqueue_jobs([JobSpec(JOB_KIND, {"rule": "fresh", "traces": ["c1"]})], 100.0)
        spans: list[Span] = []
        scorer = Scorer(store, None, book, spans.append, Scoring())
        result = asyncio.run(scorer.run(job, None))  # type: ignore[arg-type]  # the handler reads no context
        assert result == {"scored": 1, "scores": 1, "new": 1}
        [row] = store.list_scores(ScoreQuery(since=0, until=1000))
        assert (row.rule, row.scorer, row.value, row.feature, row.model) == ("fresh", "paris", 1.0, "f", "m")
        assert [(s.kind, s.span_id, s.parent_id) for s in spans] == [("score", "score:fresh:paris", "c1")]
        store.delete_online_rule("fresh")
        book.load()
        assert asyncio.run(scorer.run(job, None))["skipped"] == "rule deleted"  # type: ignore[arg-type]
    finally:
        store.close()
