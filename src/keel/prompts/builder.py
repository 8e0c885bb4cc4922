"""The prompts capability's builder: the `prompt` slot, the in-memory book it reads, the registry the
edges write through, and the book's refresh worker."""

from __future__ import annotations

from dataclasses import dataclass

from keel.gateway.capability import Context, Contribution, Worker
from keel.prompts.book import PromptBook, PromptSync
from keel.prompts.registry import Registry
from keel.prompts.stage import PromptStage

REFRESH_S = 2.0  # a version or label written by another process is served within this


@dataclass(frozen=True, slots=True)
class Prompts:
    """What the edges use: the registry (writes, views) and the sync (refresh after a write here)."""

    registry: Registry
    book: PromptBook
    sync: PromptSync


def build(ctx: Context) -> Contribution:
    book = PromptBook()
    sync = PromptSync(ctx.store, book)
    sync.load()
    ctx.add(Prompts(Registry(ctx.store), book, sync))
    return Contribution([("prompt", PromptStage(book))], workers=[Worker("prompt-refresh", sync.refresh, REFRESH_S)])
