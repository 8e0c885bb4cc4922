"""The audit capability's builder: offers the `AuditLog` over the runtime's store and the `AuditTrail` port;
records the config a start brings (audit.changes); streams the log to a SIEM when `audit.siem` is set; its
group-commit writer commits what is queued at shutdown."""

from __future__ import annotations

import asyncio
import time

from keel.audit.changes import Trail, record_config
from keel.audit.log import AuditLog
from keel.audit.siem import SiemShipper
from keel.gateway.capability import AuditTrail, Context, Contribution, Worker


def build(ctx: Context) -> Contribution:
    audit = AuditLog(ctx.store)
    ctx.add(audit)
    ctx.add(Trail(audit), as_=AuditTrail)
    config, store = ctx.config, ctx.store
    workers: list[Worker] = []
    if config.audit.siem is not None:
        shipper = SiemShipper(store, config.audit.siem)
        ctx.add(shipper)
        workers.append(Worker("audit-siem", shipper.run))

    def recorded() -> None:
        record_config(audit, store, config, time.time())

    async def close() -> None:
        await asyncio.to_thread(audit.close)

    return Contribution(workers=workers, start=[recorded], close=[close])
