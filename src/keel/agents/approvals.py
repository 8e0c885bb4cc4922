"""Deciding a pending tool call: one conditional move (pending → approved | denied), so a second decision,
from any process, changes nothing. The run goes on from whichever gateway's runs worker claims it."""

from __future__ import annotations

import time

from keel.audit.log import AuditLog
from keel.store.protocols.agents import AgentStore, CallRow, CallState


def decide(
    store: AgentStore, audit: AuditLog, call_id: str, approve: bool, *, by: str, tenant: str | None = None,
    source_ip: str | None = None,
) -> tuple[CallRow | None, bool]:  # fmt: skip
    """(the call as it is now, whether this decision moved it); (None, False) when there is no such call."""
    row = store.get_call(call_id)
    if row is None or (tenant is not None and row.tenant != tenant):
        return None, False
    to: CallState = "approved" if approve else "denied"
    result = None if approve else f"error: a person denied the call of '{row.tool}'"
    moved = store.move_call(call_id, ("pending",), to, now=time.time(), result=result, decided_by=by)
    if moved is None:
        return store.get_call(call_id) or row, False
    audit.append(by, f"approval.{to}", row.tool, tenant=row.tenant, arguments=row.arguments, source_ip=source_ip,
                 result={"call": call_id, "run": row.run_id})  # fmt: skip
    return moved, True
