"""The alerts capability's builder: the webhook senders (soft limits' and rules') and the rule evaluator.

It offers the `limits.webhook` sender to the limits capability through the `ThresholdAlert` port.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

import orjson

from keel.alerts.rules import RuleEvaluator
from keel.alerts.sender import AlertSender, RuleEvent
from keel.alerts.slo import SloEvaluator, slos_of
from keel.config import WebhookConfig
from keel.gateway.capability import AuditTrail, Context, Contribution, ThresholdAlert, Worker
from keel.store.protocols import Store

log = logging.getLogger("keel.alerts")


@dataclass(frozen=True, slots=True)
class Alerts:
    """What alerting runs (`ctx.get(Alerts)`): each part None when not configured."""

    limits: AlertSender | None  # soft-limit crossings, to `limits.webhook`
    rules: RuleEvaluator | None  # `alerts.rules`
    rule_sender: AlertSender | None  # the rules' own sender, when it is not the limits' one
    slo: SloEvaluator | None = None  # aliases' `slo:` burn-rate alerts, when a webhook is configured


def build(ctx: Context) -> Contribution:
    config, store = ctx.config, ctx.store
    hook = config.limits.webhook
    limits = sender(hook, store) if hook is not None else None
    rules, own = _rules(ctx, limits)
    slo, slo_own = _slo(ctx, limits, own)
    ctx.add(Alerts(limits, rules, own, slo))
    if limits is not None:
        ctx.add(limits.threshold_crossed, as_=ThresholdAlert)
    workers = [Worker("alerts", limits.run)] if limits is not None else []
    workers += [Worker("rule-alerts", own.run)] if own is not None else []
    workers += [Worker("alert-rules", rules.tick, rules.every_s)] if rules is not None else []
    workers += [Worker("slo-alerts", slo_own.run)] if slo_own is not None else []
    workers += [Worker("slo-burn", slo.tick, slo.every_s)] if slo is not None else []

    async def close() -> None:
        for s in (limits, own, slo_own):
            if s is not None:
                await s.aclose()  # sends what is queued, within its drain time

    return Contribution(workers=workers, close=[close])


def sender(hook: WebhookConfig, store: Store) -> AlertSender:
    return AlertSender(hook.url, hook.secret, claim=store.claim_alert, timeout_s=hook.timeout_s, retries=hook.retries)


def _rules(ctx: Context, limit_alerts: AlertSender | None) -> tuple[RuleEvaluator | None, AlertSender | None]:
    """The rule evaluator, and a sender of its own unless the rules share the limits' webhook."""
    config = ctx.config
    a = config.alerts
    if not a.rules:
        return None, None
    hook = a.webhook or config.limits.webhook
    assert hook is not None  # the config check requires one
    own = None if limit_alerts is not None and hook == config.limits.webhook else sender(hook, ctx.store)
    out = own or limit_alerts
    assert out is not None
    return RuleEvaluator(a.rules, ctx.store, audited(out.send, ctx), every_s=a.evaluate_every_s), own


def _slo(
    ctx: Context, limit_alerts: AlertSender | None, rule_alerts: AlertSender | None
) -> tuple[SloEvaluator | None, AlertSender | None]:
    """The SLO burn-rate evaluator (aliases with `slo:` and a webhook), and a sender of its own if needed."""
    config = ctx.config
    slos = slos_of(config.models)
    hook = config.alerts.webhook or config.limits.webhook
    if not slos or hook is None:
        return None, None
    shared = rule_alerts if rule_alerts is not None and hook == config.alerts.webhook else None
    if shared is None and limit_alerts is not None and hook == config.limits.webhook:
        shared = limit_alerts
    own = None if shared is not None else sender(hook, ctx.store)
    out = shared or own
    assert out is not None
    return SloEvaluator(slos, ctx.store, audited(out.send, ctx), every_s=config.alerts.evaluate_every_s), own


def audited(send: Callable[[RuleEvent], None], ctx: Context) -> Callable[[RuleEvent], None]:
    """`send`, and each state change (firing, resolved) an audit entry: appended in a thread, off the loop."""

    def record(trail: AuditTrail, event: RuleEvent) -> None:
        try:
            trail("system:alerts", event.event, event.rule, tenant=event.tenant, result=orjson.loads(event.body()))
        except Exception:
            log.exception("could not record %s in the audit log", event.describe())

    def send_and_record(event: RuleEvent) -> None:
        send(event)
        trail = ctx.find(AuditTrail)  # type: ignore[type-abstract]  # audit builds after alerts
        if trail is None:
            return
        try:
            asyncio.get_running_loop().run_in_executor(None, record, trail, event)
        except RuntimeError:  # no loop: a caller evaluating by hand
            record(trail, event)

    return send_and_record
