"""The prompts capability's builder: the `prompt` slot, the in-memory book it reads, the registry the
edges write through, the book's refresh worker and the rollouts' guard worker (with its webhook sender,
`alerts.webhook` else `limits.webhook`, when one is configured)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from keel.alerts.builder import sender
from keel.audit.log import AuditLog
from keel.gateway.capability import Context, Contribution, Worker
from keel.prompts.book import PromptBook, PromptSync
from keel.prompts.registry import Registry
from keel.prompts.rollouts import Rollouts
from keel.prompts.stage import PromptStage

REFRESH_S = 2.0  # a version or label written by another process is served within this
GUARD_S = 1.0  # running rollouts are judged this often (a list of them and one rollup read each)


@dataclass(frozen=True, slots=True)
class Prompts:
    """What the edges use: the registry (writes, views), the sync (refresh after a write here) and the
    rollouts' guard worker."""

    registry: Registry
    book: PromptBook
    sync: PromptSync
    rollouts: Rollouts


def build(ctx: Context) -> Contribution:
    book = PromptBook()
    sync = PromptSync(ctx.store, book)
    sync.load()
    hook = ctx.config.alerts.webhook or ctx.config.limits.webhook
    out = sender(hook, ctx.store) if hook is not None else None
    audit = ctx.find(AuditLog)
    rollouts = Rollouts(ctx.store, moved=sync.refresh, send=out.send if out is not None else None, audit=audit)
    ctx.add(Prompts(Registry(ctx.store, audit), book, sync, rollouts))
    workers = [Worker("prompt-refresh", sync.refresh, REFRESH_S), Worker("prompt-rollouts", rollouts.tick, GUARD_S)]
    close: list[Callable[[], Awaitable[None]]] = []
    if out is not None:
        workers.append(Worker("prompt-webhooks", out.run))
        close.append(out.aclose)
    return Contribution([("prompt", PromptStage(book))], workers=workers, close=close)
