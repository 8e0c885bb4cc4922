"""Rollouts that watch themselves: the guard worker, its transitions and their signed webhooks.

Every pass (`Rollouts.tick`, a capability worker in every gateway process) reads the running rollouts,
and for each the usage rollups of its tenant by prompt version over the rollout's window (never before
it started), plus feedback scores when a guard needs them; `guards.judge` compares the new version
with the stable one. A breach moves the label back to the stable version alone; guards that hold for
the plan's `every` step the weight up (the last step, 100%, makes the new version the label's stable
one and ends the rollout). Each transition is a compare-and-set on the rollout's `rev` in the store,
label move and history entry in the same transaction, so of several processes exactly one moves the
label and sends the webhook (`alerts.webhook`, else `limits.webhook`; signed as alerts are).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from keel.audit.log import AuditLog
from keel.prompts.guards import SCORE, Figures, judge
from keel.store.protocols import FeedbackRow, PromptRollout, ScoreGroup, ScoreQuery, UsageQuery, UsageRow

log = logging.getLogger("keel.prompts.rollouts")
ACTOR = "keel:rollout-guard"
MAX_GROUPS = 10_000


class RolloutStore(Protocol):
    def usage(self, query: UsageQuery) -> list[UsageRow]: ...

    def feedback_summary(self, tenant: str, since: float, until: float, by: str) -> list[FeedbackRow]: ...

    def score_rollup(self, query: ScoreQuery) -> list[ScoreGroup]: ...

    def list_prompt_rollouts(
        self, tenant: str | None = None, name: str | None = None, *, running: bool = False
    ) -> list[PromptRollout]: ...

    def advance_prompt_rollout(
        self, rollout: PromptRollout, *, label: tuple[int, tuple[tuple[int, float], ...]] | None, actor: str
    ) -> bool: ...


@dataclass(frozen=True, slots=True)
class RolloutEvent:
    """`prompt.rollout.rolled_back` | `.stepped` | `.completed`, as the webhook body says it."""

    event: str
    rollout: PromptRollout  # after the transition

    @property
    def id(self) -> str:
        r = self.rollout
        key = f"{r.tenant}|{r.name}|{r.label}|{r.started_at}|{r.rev}|{self.event}"
        return hashlib.sha256(key.encode()).hexdigest()

    def describe(self) -> str:
        r = self.rollout
        return f"{self.event} {r.name}@{r.label} v{r.version}"

    def body(self) -> bytes:
        r = self.rollout
        return orjson.dumps({
            "event": self.event, "tenant": r.tenant, "prompt": r.name, "label": r.label, "stable": r.stable,
            "version": r.version, "weight": r.weight, "state": r.state, "reason": r.reason,
            "guards": list(r.plan.guards), "started_at": r.started_at, "at": r.updated_at, "id": self.id,
        })  # fmt: skip


@dataclass(frozen=True, slots=True)
class Step:
    """A transition decided for one rollout: its new row, the label's new place, and the event."""

    rollout: PromptRollout
    label: tuple[int, tuple[tuple[int, float], ...]] | None
    event: str | None


def decide(r: PromptRollout, new: Figures, stable: Figures, now: float) -> Step | None:
    """What a pass does to `r`, given both versions' figures; None when nothing changes."""
    verdict = judge(r.plan.guards, r.plan.min_calls, new, stable, (f"v{r.version}", f"v{r.stable}"))
    if verdict.kind == "breach":
        back = dataclasses.replace(r, state="rolled_back", held_since=None, updated_at=now, reason=verdict.why)
        return Step(back, (r.stable, ()), "prompt.rollout.rolled_back")
    if verdict.kind == "wait":
        return (
            None if r.held_since is None else Step(dataclasses.replace(r, held_since=None, updated_at=now), None, None)
        )
    if r.plan.every_s is None:
        return None
    if r.held_since is None:
        return Step(dataclasses.replace(r, held_since=now, updated_at=now), None, None)
    if now - r.held_since < r.plan.every_s:
        return None
    weight = next((w for w in r.plan.steps if w > r.weight), 100.0)
    why = f"{verdict.why} for {r.plan.every_s:g} s: {r.weight:g}% → {weight:g}%"
    if weight >= 100:
        done = dataclasses.replace(
            r, weight=100.0, state="done", stepped_at=now, held_since=None, updated_at=now, reason=why
        )
        return Step(done, (r.version, ()), "prompt.rollout.completed")
    up = dataclasses.replace(r, weight=weight, stepped_at=now, held_since=None, updated_at=now, reason=why)
    return Step(up, (r.stable, ((r.version, weight),)), "prompt.rollout.stepped")


class FigureStore(Protocol):
    def usage(self, query: UsageQuery) -> list[UsageRow]: ...

    def feedback_summary(self, tenant: str, since: float, until: float, by: str) -> list[FeedbackRow]: ...

    def score_rollup(self, query: ScoreQuery) -> list[ScoreGroup]: ...


def figures(store: FigureStore, r: PromptRollout, now: float, *, scores: bool | None = None) -> tuple[Figures, Figures]:
    """The new and the stable version's figures over the window (not before the rollout started).
    Feedback is read when a guard needs it (or `scores` says so)."""
    since = max(now - r.plan.window_s, r.started_at)
    query = UsageQuery(since=since, until=now + 60, by="prompt_version", tenant=r.tenant, limit=MAX_GROUPS)
    rows = {row.group: row for row in store.usage(query)}
    fb: dict[str | None, FeedbackRow] = {}
    if scores or (scores is None and any(g.startswith("feedback") for g in r.plan.guards)):
        fb = {f.group: f for f in store.feedback_summary(r.tenant, since, now + 60, "prompt_version")}

    evals: dict[str, dict[str, tuple[int, float]]] = {}  # prompt version → scorer → (count, mean)
    if any(g.startswith(SCORE) for g in r.plan.guards):
        scored = ScoreQuery(since=since, until=now + 60, by="prompt_version", tenant=r.tenant, limit=MAX_GROUPS)
        for g in store.score_rollup(scored):
            evals.setdefault(g.group or "", {})[g.scorer] = (g.count, g.mean)

    def of(version: int) -> Figures:
        key = f"{r.name}@{version}"
        u, f = rows.get(key), fb.get(key)
        return Figures(
            u.calls if u else 0, u.errors if u else 0, u.latency_p95_ms if u else None, u.cost_usd if u else 0.0,
            f.count if f else 0, f.score_sum if f else 0.0, evals.get(key, {}),
        )  # fmt: skip

    return of(r.version), of(r.stable)


class Rollouts:
    """The guard worker: `tick` judges every running rollout once."""

    def __init__(
        self,
        store: RolloutStore,
        *,
        moved: Callable[[], Any] | None = None,
        send: Callable[[RolloutEvent], None] | None = None,
        clock: Callable[[], float] = time.time,
        audit: AuditLog | None = None,
    ) -> None:
        self._store = store
        self._moved = moved  # async: refresh this process's served labels
        self._send = send
        self._audit = audit  # every label move the guards make is an audit entry
        self._clock = clock
        self._warned_at = float("-inf")

    async def tick(self) -> None:
        try:
            running = await asyncio.to_thread(self._store.list_prompt_rollouts, running=True)
        except Exception as exc:  # a store outage: said once per 30 s, not every pass
            if time.monotonic() - self._warned_at >= 30.0:
                self._warned_at = time.monotonic()
                log.warning("reading rollouts failed (%s: %s); trying again each pass", type(exc).__name__, exc)
            return
        moved = False
        for r in running:
            try:
                event = await asyncio.to_thread(self.advance, r)
            except Exception:
                log.exception("judging the rollout of %s@%s (tenant %s) failed", r.name, r.label, r.tenant)
                continue
            if event is not None:
                moved = True
                if self._send is not None:
                    self._send(event)
        if moved and self._moved is not None:
            await self._moved()

    def advance(self, r: PromptRollout) -> RolloutEvent | None:
        """Judge one rollout and write its transition; the event when this process made one."""
        now = self._clock()
        new, stable = self.figures(r, now)
        step = decide(r, new, stable, now)
        if step is None or not self._store.advance_prompt_rollout(step.rollout, label=step.label, actor=ACTOR):
            return None
        if self._audit is not None and step.label is not None:
            version, shares = step.label
            placed = {"version": version, "rollout": [list(x) for x in shares], "state": step.rollout.state}
            target = f"{r.name}:{r.label}"
            self._audit.append(
                ACTOR, "prompt.label.move", target, tenant=r.tenant, after=placed, result=step.rollout.reason
            )
        if step.event is not None:
            log.warning("prompt %s@%s (tenant %s): %s", r.name, r.label, r.tenant, step.rollout.reason)
        after = dataclasses.replace(step.rollout, rev=r.rev + 1)
        return RolloutEvent(step.event, after) if step.event is not None else None

    def figures(self, r: PromptRollout, now: float) -> tuple[Figures, Figures]:
        return figures(self._store, r, now)
