"""Service level objectives per alias, and alerts on how fast their error budget burns.

An alias's `slo: {availability: 99.9, p95_ms: 3000, window_days: 30}` sets two event-based objectives
over a rolling window, both read from the usage rollups (never raw traces):
- availability: good calls are those that did not fail; the error budget is (1 - 99.9%) of calls.
- latency: good calls answered within `p95_ms`; the budget is 5% of calls (the latency histogram
  gives the slow ones, interpolated inside one √2-wide bucket).

The burn rate of a window is its bad share divided by the budget's share: 1 spends the budget exactly
over the SLO window. Alerts follow the multiwindow, multi-burn-rate scheme of Google's SRE workbook:
`fast` fires when both the last hour and the last 5 minutes burn at 14.4× or more (2% of a 30-day
budget in an hour), `slow` when both the last 6 hours and the last 30 minutes burn at 6× or more; each
resolves when its short window drops below its rate. Episodes use the alert rules' shared state, so
every process agrees and one sends each `alert.firing` / `alert.resolved` to the alert webhook.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from keel.alerts.rules import Evaluator, RuleStore
from keel.alerts.sender import RuleEvent
from keel.config import AliasConfig, SloConfig
from keel.store.protocols import UsageQuery, UsageRow
from keel.store.protocols.usage import count_over, percentile

log = logging.getLogger("keel.slo")
LATENCY_GOOD = 0.95  # p95_ms: 95% of calls within it
MIN_CALLS = 10  # a burn rate over fewer calls is not judged


class UsageReader(Protocol):
    def usage(self, query: UsageQuery) -> list[UsageRow]: ...


@dataclass(frozen=True, slots=True)
class Speed:
    name: str
    long_s: float
    short_s: float
    burn: float


SPEEDS = (Speed("fast", 3600, 300, 14.4), Speed("slow", 6 * 3600, 1800, 6.0))
WINDOWS = sorted({s for sp in SPEEDS for s in (sp.long_s, sp.short_s)})


@dataclass(frozen=True, slots=True)
class Objective:
    """One objective of one alias over its SLO window."""

    name: str  # availability | latency
    target: float  # the good share aimed at, e.g. 0.999
    good: float  # the good share measured over the window (1.0 with no calls)
    calls: int
    bad: float  # bad calls over the window
    budget_remaining: float  # 1 = untouched, 0 = spent, < 0 = overspent
    burn: Mapping[str, float | None]  # per window ("5m", "1h", ...): burn rate; None below MIN_CALLS


@dataclass(frozen=True, slots=True)
class SloStatus:
    alias: str
    window_days: int
    objectives: tuple[Objective, ...]
    p95_ms: float | None  # observed over the window


def label(seconds: float) -> str:
    return f"{seconds / 3600:g}h" if seconds >= 3600 else f"{seconds / 60:g}m"


def _bad(row: UsageRow | None, objective: str, slo: SloConfig) -> tuple[int, float]:
    """(calls, bad calls) of one rollup row for one objective."""
    if row is None:
        return 0, 0.0
    if objective == "availability":
        return row.calls, float(row.errors)
    assert slo.p95_ms is not None
    judged = sum(row.latency_hist)  # calls with a latency (failed calls may have none)
    return judged, count_over(row.latency_hist, slo.p95_ms)


def _target(objective: str, slo: SloConfig) -> float:
    return slo.availability / 100 if objective == "availability" else LATENCY_GOOD


def objectives_of(slo: SloConfig) -> tuple[str, ...]:
    return ("availability", "latency") if slo.p95_ms is not None else ("availability",)


def statuses(slos: Mapping[str, SloConfig], store: UsageReader, now: float) -> list[SloStatus]:
    """Each alias's objectives over its SLO window and burn rates over the alerting windows (one rollup
    read per window for every alias at once)."""
    recent = {w: _rows(store, now - w, now) for w in WINDOWS}
    wholes = {d: _rows(store, now - d * 86400, now) for d in {slo.window_days for slo in slos.values()}}
    return [
        _status(alias, slo, wholes[slo.window_days].get(alias), {w: rows.get(alias) for w, rows in recent.items()})
        for alias, slo in slos.items()
    ]


def _status(alias: str, slo: SloConfig, whole: UsageRow | None, recent: Mapping[float, UsageRow | None]) -> SloStatus:
    objectives = []
    for name in objectives_of(slo):
        target = _target(name, slo)
        calls, bad = _bad(whole, name, slo)
        budget = (1 - target) * calls
        burn: dict[str, float | None] = {}
        for w, row in recent.items():
            n, b = _bad(row, name, slo)
            burn[label(w)] = (b / n) / (1 - target) if n >= MIN_CALLS else None
        objectives.append(
            Objective(
                name=name,
                target=target,
                good=1 - bad / calls if calls else 1.0,
                calls=calls,
                bad=bad,
                budget_remaining=1 - bad / budget if budget else 1.0,
                burn=burn,
            )
        )
    p95 = percentile(whole.latency_hist, 0.95) if whole is not None and whole.latency_hist else None
    return SloStatus(alias, slo.window_days, tuple(objectives), p95)


def _rows(store: UsageReader, since: float, until: float) -> dict[str, UsageRow]:
    rows = store.usage(UsageQuery(since=since, until=until, by="alias", limit=10_000))
    return {r.group: r for r in rows if r.group is not None}


class SloEvaluator(Evaluator):
    """Checks every alias's burn rates on a clock and hands the events this process won to `send`."""

    what = "SLO burn rates"

    def __init__(
        self,
        slos: Mapping[str, SloConfig],
        store: RuleStore,
        send: Callable[[RuleEvent], None],
        *,
        every_s: float = 20.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._slos = dict(slos)
        self._store = store
        self._send = send
        self.every_s = every_s
        self._clock = clock
        self.evaluations = 0

    def evaluate(self, now: float) -> list[RuleEvent]:
        states = self._store.alert_states()
        events: list[RuleEvent] = []
        for st in statuses(self._slos, self._store, now):
            events += self._judge(st, states, now)
        self.evaluations += 1
        return events

    def _judge(self, st: SloStatus, states: Mapping[str, float], now: float) -> list[RuleEvent]:
        events = []
        for objective in st.objectives:
            for speed in SPEEDS:
                key = f"slo:{st.alias}:{objective.name}:{speed.name}|{st.alias}"
                long_burn = objective.burn[label(speed.long_s)]
                short_burn = objective.burn[label(speed.short_s)]
                firing = key in states
                if not firing and _at_least(long_burn, speed.burn) and _at_least(short_burn, speed.burn):
                    if self._store.flip_alert(key, True, now):
                        events.append(_event("alert.firing", key, st, objective, speed, long_burn, now, now))
                elif firing and not _at_least(short_burn, speed.burn) and self._store.flip_alert(key, False, now):
                    events.append(_event("alert.resolved", key, st, objective, speed, short_burn, states[key], now))
        return events


def _at_least(burn: float | None, rate: float) -> bool:
    return burn is not None and burn >= rate


def _event(
    kind: str, key: str, st: SloStatus, o: Objective, speed: Speed, burn: float | None, since: float, now: float
) -> RuleEvent:
    return RuleEvent(
        event=kind,
        rule=key.split("|", 1)[0],
        metric=f"{o.name}_burn_rate",
        scope="alias",
        value=st.alias,
        tenant=None,
        threshold=speed.burn,
        observed=burn,
        calls=o.calls,
        window=label(speed.long_s) if kind == "alert.firing" else label(speed.short_s),
        since=since,
        at=now,
    )


def slos_of(models: Mapping[str, AliasConfig]) -> dict[str, SloConfig]:
    """The aliases that declare an `slo:`, in config order."""
    return {alias: cfg.slo for alias, cfg in models.items() if cfg.slo is not None}


def view(st: SloStatus) -> dict[str, object]:
    """The JSON shape of `GET /api/slo` and `keel slo --json`."""
    return {
        "alias": st.alias,
        "window_days": st.window_days,
        "p95_ms": None if st.p95_ms is None else round(st.p95_ms, 1),
        "objectives": [
            {
                "objective": o.name,
                "target": o.target,
                "good": round(o.good, 6),
                "calls": o.calls,
                "bad": round(o.bad, 1),
                "budget_remaining": round(o.budget_remaining, 4),
                "burn_rate": {w: None if b is None else round(b, 3) for w, b in o.burn.items()},
            }
            for o in st.objectives
        ],
    }
