"""Monitors on online scores, and scheduled drift checks: each fires once and resolves once.

A monitor reads its scorer's scores of the last `window` (calls that started then) per value of `by`,
from the score rows (`score_rollup`, off the event loop), and judges each group: its mean (or pass
rate) is below `below`, or fell by `drop` or more against the window before it. A group with fewer
than `min_samples` scores has no verdict and counts as not holding. Episodes are the alert rules'
(keel.alerts.rules): `flip_alert` in the shared store picks the one process that sends `alert.firing`
when a condition starts holding and `alert.resolved` when it stops, so several gateways and restarts
agree. Keys: "online:<monitor>|<group>" and "drift:<check>|". Events go out as `RuleEvent`s through the
alerts sender: the same body, id and HMAC signature as the other alert rules (`metric` names the
monitor's figure: `score_mean:<scorer>`, `pass_rate:<scorer>`, `drift:<test>`).

A drift check runs `keel.evals.drift` on its schedule (embedding and permutations take seconds, in a
thread) and holds while any test is significant at `alpha`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from keel.alerts.rules import Evaluator
from keel.alerts.sender import RuleEvent
from keel.config.sections.online_evals import DriftCheckConfig, MonitorConfig
from keel.evals import drift
from keel.store.protocols import ScoreGroup, ScoreQuery, Store

log = logging.getLogger("keel.evals.monitors")
MAX_GROUPS = 1000


def figure(monitor: MonitorConfig, group: ScoreGroup | None) -> float | None:
    if group is None or group.count < monitor.min_samples:
        return None
    return group.mean if monitor.metric == "mean" else group.pass_rate


def holds(monitor: MonitorConfig, now: float | None, before: float | None) -> bool:
    if now is None:
        return False
    if monitor.below is not None and now < monitor.below:
        return True
    return monitor.drop is not None and before is not None and before - now >= monitor.drop - 1e-12


class Monitors(Evaluator):
    """Judges every monitor on a clock (`tick`, the runtime's `online-monitors` worker)."""

    what = "online eval monitors"

    def __init__(
        self,
        monitors: Sequence[MonitorConfig],
        store: Store,
        send: Callable[[RuleEvent], None],
        *,
        every_s: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._monitors = tuple(monitors)
        self._store = store
        self._send = send
        self.every_s = every_s
        self._clock = clock
        self.evaluations = 0  # ticks completed: tests wait for later ticks instead of sleeping
        self.firing: dict[str, int] = {m.name: 0 for m in monitors}

    def evaluate(self, now: float) -> list[RuleEvent]:
        states = self._store.alert_states()
        events: list[RuleEvent] = []
        for m in self._monitors:
            try:
                events += self._judge(m, states, now)
            except Exception:
                log.exception("online monitor %s: reading scores failed; skipped this tick", m.name)
        self.evaluations += 1
        return events

    def _groups(self, m: MonitorConfig, since: float, until: float) -> dict[str, ScoreGroup]:
        q = ScoreQuery(since=since, until=until, by=m.by, rule=m.rule, scorer=m.scorer, limit=MAX_GROUPS)
        return {g.group or "": g for g in self._store.score_rollup(q)}

    def _judge(self, m: MonitorConfig, states: dict[str, float], now: float) -> list[RuleEvent]:
        w = m.window_s
        current = self._groups(m, now - w, now)
        previous = self._groups(m, now - 2 * w, now - w) if m.drop is not None else {}
        prefix = f"online:{m.name}|"
        events = []
        held = 0
        for key in sorted({*current, *(k.removeprefix(prefix) for k in states if k.startswith(prefix))}):
            group = current.get(key)
            value = figure(m, group)
            on = holds(m, value, figure(m, previous.get(key)))
            held += on
            state_key = prefix + key
            if on and state_key not in states and self._store.flip_alert(state_key, True, now):
                events.append(self._event("alert.firing", m, key, group, value, now, now))
            elif not on and state_key in states and self._store.flip_alert(state_key, False, now):
                events.append(self._event("alert.resolved", m, key, group, value, states[state_key], now))
        self.firing[m.name] = held
        return events

    @staticmethod
    def _event(
        kind: str, m: MonitorConfig, key: str, group: ScoreGroup | None, value: float | None, since: float, now: float
    ) -> RuleEvent:
        metric = f"{'score_mean' if m.metric == 'mean' else 'pass_rate'}:{m.scorer}"
        threshold = m.below if m.below is not None else m.drop
        assert threshold is not None
        return RuleEvent(
            event=kind,
            rule=m.name,
            metric=metric,
            scope=m.by if m.by != "none" else "global",
            value=key or None,
            tenant=None,
            threshold=threshold,
            observed=value,
            calls=group.count if group is not None else 0,
            window=m.window,
            since=since,
            at=now,
        )


class DriftChecks:
    """Runs one scheduled drift check (`run`, a worker on the check's `every`) and alerts on a change."""

    def __init__(
        self,
        check: DriftCheckConfig,
        store: Store,
        blobs: Any,
        embed: drift.Embed | None,
        send: Callable[[RuleEvent], None],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._check = check
        self._store = store
        self._blobs = blobs
        self._embed = embed
        self._send = send
        self._clock = clock
        self.last: drift.DriftReport | None = None

    async def run(self) -> None:
        try:
            report = await asyncio.to_thread(self.report, self._clock())
        except Exception:
            log.exception("drift check %s failed; will retry", self._check.name)
            return
        self.last = report
        for event in await asyncio.to_thread(self.judge, report, self._clock()):
            self._send(event)

    def report(self, now: float) -> drift.DriftReport:
        c = self._check
        recent, reference = drift.windows(c.since, c.reference, now)
        spec = drift.DriftSpec(
            recent, reference, feature=c.feature, alias=c.alias, tenant=c.tenant, max_samples=c.max_samples,
            alpha=c.alpha,
        )  # fmt: skip
        before = drift.sample(self._store, self._blobs, spec, reference)
        after = drift.sample(self._store, self._blobs, spec, recent)
        scores = drift.window_scores(self._store, spec, reference), drift.window_scores(self._store, spec, recent)
        return drift.compare(spec, before, after, self._embed, scores)

    def judge(self, report: drift.DriftReport, now: float) -> list[RuleEvent]:
        c = self._check
        key = f"drift:{c.name}|"
        since = self._store.alert_states().get(key)
        changed = report.drifted
        if changed and since is None and self._store.flip_alert(key, True, now):
            return [self._event("alert.firing", report, changed, now, now)]
        if not changed and since is not None and self._store.flip_alert(key, False, now):
            return [self._event("alert.resolved", report, changed, since, now)]
        return []

    def _event(self, kind: str, report: drift.DriftReport, changed: list[str], since: float, now: float) -> RuleEvent:
        c = self._check
        worst = min((report.tests[n].p_value for n in changed), default=None)
        return RuleEvent(
            event=kind,
            rule=c.name,
            metric="drift:" + (",".join(changed) or "none"),
            scope="feature" if c.feature is not None else "alias",
            value=c.feature or c.alias,
            tenant=c.tenant,
            threshold=c.alpha,
            observed=worst,
            calls=report.calls[1],
            window=c.since,
            since=since,
            at=now,
        )
