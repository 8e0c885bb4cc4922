"""The audit capability's builder: offers the `AuditLog` over the runtime's store."""

from __future__ import annotations

from keel.audit.log import AuditLog
from keel.gateway.capability import Context, Contribution


def build(ctx: Context) -> Contribution:
    ctx.add(AuditLog(ctx.store))
    return Contribution([])
