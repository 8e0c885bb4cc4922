"""Alert rules: cost, error rate and p95 latency per scope over a window, checked from the usage rollups.

Every `evaluate_every_s` a background task reads each rule's window from `TraceStore.usage` (rollups
only, never raw traces; in a worker thread, off the request path) and compares each scope value's
figure with the threshold. A value that reaches it starts an episode: `flip_alert(key, True)` in the
shared store answers True to exactly one process, which sends one `alert.firing` event; while the
condition holds nothing more is sent. When it no longer holds (the figure fell below the threshold,
the window holds fewer than `min_calls` calls, or no calls at all), `flip_alert(key, False)` picks one
process to send one `alert.resolved`. State lives in the store, so several processes, restarts and
processes that start mid-episode agree. Key: "rule|value" ('' for a global rule).

Figures: cost_usd is the window's sum; error_rate is errors / calls (status error or partial);
p95_latency_ms comes from the rollups' latency histogram (exact to within one √2-wide bucket). The
window is the last `window` widened to whole minutes, read with the trace writer's small lag.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from keel.alerts.sender import RuleEvent
from keel.config import AlertRuleConfig
from keel.store.protocols import UsageQuery, UsageRow

log = logging.getLogger("keel.alert_rules")
MAX_GROUPS = 10_000  # scope values read per rule and tick


class RuleStore(Protocol):
    def usage(self, query: UsageQuery) -> list[UsageRow]: ...

    def flip_alert(self, key: str, firing: bool, at: float) -> bool: ...

    def alert_states(self) -> dict[str, float]: ...


def query_for(rule: AlertRuleConfig, now: float) -> UsageQuery:
    """The rollup query holding the rule's figures: one row per scope value (one row for global)."""
    by = "all" if rule.scope == "global" else rule.scope
    tenant = rule.match if rule.scope == "tenant" else rule.tenant
    return UsageQuery(since=now - rule.window_s, until=now, by=by, tenant=tenant, limit=MAX_GROUPS)


def observed(rule: AlertRuleConfig, row: UsageRow) -> float | None:
    """The rule's figure in one row; None when too few calls to judge a rate or a percentile."""
    if rule.metric == "cost_usd":
        return row.cost_usd
    if row.calls < rule.min_calls:
        return None
    if rule.metric == "error_rate":
        return row.errors / row.calls
    return row.latency_p95_ms


class Evaluator:
    """A clocked evaluator (alert rules, SLO burn rates, score monitors): `tick` runs `evaluate(now)` in a
    worker thread and hands the events this process won to `_send`; a failing pass is logged and retried."""

    what = "alert rules"  # for the log line of a failed pass
    _send: Callable[[RuleEvent], None]
    _clock: Callable[[], float]

    def evaluate(self, now: float) -> list[RuleEvent]:
        raise NotImplementedError

    async def tick(self) -> None:
        """One evaluation, off the event loop; a flaky store is logged and tried again next tick."""
        try:
            events = await asyncio.to_thread(self.evaluate, self._clock())
        except Exception:
            log.exception("evaluating %s failed; will retry", self.what)
            return
        for event in events:
            self._send(event)


class RuleEvaluator(Evaluator):
    """Checks every rule on a clock and hands the events this process won to `send`."""

    def __init__(
        self,
        rules: Sequence[AlertRuleConfig],
        store: RuleStore,
        send: Callable[[RuleEvent], None],
        *,
        every_s: float = 20.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._rules = tuple(rules)
        self._store = store
        self._send = send
        self.every_s = every_s  # how often `tick` runs (the runtime's `alert-rules` worker)
        self._clock = clock
        self.firing: dict[str, int] = {r.name: 0 for r in rules}  # scope values firing per rule, last tick
        self.evaluations = 0  # ticks completed: a test waits for later ticks instead of sleeping through them

    def evaluate(self, now: float) -> list[RuleEvent]:
        """One tick, in a worker thread: the events whose state change this process made."""
        states = self._store.alert_states()
        events: list[RuleEvent] = []
        for rule in self._rules:
            try:
                rows = self._store.usage(query_for(rule, now))
            except Exception:
                log.exception("alert rule %s: reading usage failed; skipped this tick", rule.name)
                continue
            events += self._judge(rule, rows, states, now)
        self.evaluations += 1
        return events

    def _judge(
        self, rule: AlertRuleConfig, rows: list[UsageRow], states: dict[str, float], now: float
    ) -> list[RuleEvent]:
        prefix = f"{rule.name}|"
        seen: dict[str, tuple[UsageRow, float | None]] = {}
        for row in rows:
            group = "" if rule.scope == "global" else row.group
            if group is None or (rule.match is not None and group != rule.match):
                continue  # calls without a feature are no feature's
            seen[prefix + group] = (row, observed(rule, row))
        events = []
        for key, (row, figure) in seen.items():
            over = figure is not None and figure >= rule.threshold
            if over and key not in states and self._store.flip_alert(key, True, now):
                events.append(self._event("alert.firing", rule, key, row, figure, now, now))
        for key, since in states.items():
            if not key.startswith(prefix):
                continue
            now_row, now_figure = seen.get(key, (None, None))
            if (now_figure is None or now_figure < rule.threshold) and self._store.flip_alert(key, False, now):
                events.append(self._event("alert.resolved", rule, key, now_row, now_figure, since, now))
        held = {k for k, (_, v) in seen.items() if v is not None and v >= rule.threshold}
        self.firing[rule.name] = len(held)
        return events

    @staticmethod
    def _event(
        kind: str, rule: AlertRuleConfig, key: str, row: UsageRow | None, value: float | None, since: float, now: float
    ) -> RuleEvent:
        group = key.split("|", 1)[1] or None
        return RuleEvent(
            event=kind,
            rule=rule.name,
            metric=rule.metric,
            scope=rule.scope,
            value=group,
            tenant=rule.tenant,
            threshold=rule.threshold,
            observed=value,
            calls=row.calls if row is not None else 0,
            window=rule.window,
            since=since,
            at=now,
        )
