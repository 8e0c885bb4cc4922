"""The agents capability's builder: the vault, the sandbox, the executor and `Runs`, with the runs worker
that resumes runs whose approvals are decided (here or by another process) or whose process died, and the
signed approval links (posted to the alerts webhook when a call waits for a person)."""

from __future__ import annotations

import logging

from keel.agents.budgets import ToolBudgets
from keel.agents.executor import Executor
from keel.agents.links import ApprovalRequested, Links
from keel.agents.loop import Runs
from keel.agents.sandbox import Sandbox
from keel.agents.secrets import MasterKey, SecretError, Vault
from keel.agents.stage import AgentStage
from keel.alerts.builder import sender as webhook_sender
from keel.audit.log import AuditLog
from keel.gateway.capability import Context, Contribution, Pipeline, Worker
from keel.store.protocols import CallRow, LimitStore
from keel.traces.writer import TraceWriter

log = logging.getLogger("keel.agents")
SWEEP_S = 0.5  # a decision made by another process (keel approvals approve) is picked up within this


def master_key() -> MasterKey | None:
    try:
        return MasterKey.from_env()
    except SecretError as exc:
        if "need a master key" not in str(exc):
            raise
        return None  # secrets refused (with the message) until one is set


def build(ctx: Context) -> Contribution:
    audit = ctx.get(AuditLog)
    vault = Vault(ctx.store, master_key(), audit)
    sandbox = Sandbox()  # per-run cgroups where the host allows; readyz says when it does not
    ctx.add(sandbox)
    executor = Executor(vault, sandbox)
    writer = ctx.get(TraceWriter)
    budgets = ToolBudgets(ctx.get(LimitStore))  # type: ignore[type-abstract]
    runs = Runs(ctx.store, lambda: ctx.get(Pipeline).handler, executor, audit, writer.put_span, writer.put, budgets,
                durable_outcomes=ctx.config.audit.tool_outcomes == "durable")  # fmt: skip
    ctx.add(vault)
    ctx.add(runs)
    workers, close = [Worker("agent-runs", runs.sweep, SWEEP_S)], [executor.aclose]
    token, hook = ctx.config.admin_token, ctx.config.alerts.webhook or ctx.config.limits.webhook
    if token:
        links = Links(token, ctx.config.alerts.public_url)
        ctx.add(links)
        if hook is not None:
            sender = webhook_sender(hook, ctx.store)

            def pending(call: CallRow) -> None:
                sender.send(ApprovalRequested(call, links.url(call.id, "approve", call.expires_at),
                                              links.url(call.id, "deny", call.expires_at)))  # fmt: skip

            runs.on_pending = pending
            workers.append(Worker("approval-webhooks", sender.run))
            close.append(sender.aclose)
    return Contribution([("prompt", AgentStage(runs))], workers=workers, close=close)
