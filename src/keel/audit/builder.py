"""The audit capability's builder: offers the `AuditLog` over the runtime's store; its group-commit writer
commits what is queued at shutdown."""

from __future__ import annotations

import asyncio

from keel.audit.log import AuditLog
from keel.gateway.capability import Context, Contribution


def build(ctx: Context) -> Contribution:
    audit = AuditLog(ctx.store)
    ctx.add(audit)

    async def close() -> None:
        await asyncio.to_thread(audit.close)

    return Contribution([], close=[close])
