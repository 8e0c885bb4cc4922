"""`batches:` (the OpenAI Files and Batch APIs, run by Keel's job queue) and `async_calls:` (chat and
embeddings calls answered later, by polling or a signed webhook). README "Batch API" and "Async calls
and webhooks"."""

from __future__ import annotations

from pydantic import Field

from keel.config.parts import Model, Outline
from keel.errors import ConfigIssue


class BatchesConfig(Model):
    max_file_bytes: int = Field(100 * 1024 * 1024, ge=1)  # an uploaded JSONL file; beyond: 413
    max_lines: int = Field(50_000, ge=1)  # requests in one input file (OpenAI's bound)
    concurrency: int = Field(64, ge=1, le=1024)  # lines of one batch in flight at once, per worker
    priority: int = -10  # its lines' priority in a saturated target's wait queue: below live calls (0)
    line_timeout_s: float = Field(600.0, gt=0)  # one line's total budget, failover included


class AsyncCallsConfig(Model):
    webhook_secret: str | None = None  # HMAC-SHA256 key of x-keel-signature; needed to accept a webhook_url
    webhook_attempts: int = Field(6, ge=1, le=50)  # deliveries tried per result, with exponential backoff
    webhook_timeout_s: float = Field(10.0, gt=0)
    allow_private_webhooks: bool = False  # webhook URLs on loopback or private addresses (tests, one host)
    async_only_aliases: list[str] = []  # calls to these aliases always go to the queue (202)
    async_only_max_tokens: int | None = Field(None, ge=1)  # calls asking for more go to the queue (202)
    priority: int = 0  # the job's priority in the queue; the call itself keeps its key's priority


def check(a: AsyncCallsConfig, outline: Outline) -> list[ConfigIssue]:
    """`async_only_aliases` name declared aliases."""
    known = ", ".join(sorted(outline.aliases)) or "(none configured)"
    return [
        ConfigIssue(f"async_calls.async_only_aliases[{i}]", f"unknown alias '{alias}'", f"use one of: {known}")
        for i, alias in enumerate(a.async_only_aliases)
        if alias not in outline.aliases
    ]
