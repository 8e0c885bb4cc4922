"""Per-tool rate limits and budgets on the shared limit counters (memory in one process, Redis across many).

A tool's `limits: {rpm, calls_day, usd_day, usd_per_call}` become charges on counters named
`tenant=T|tool=NAME|KIND`, admitted all or nothing by the `LimitStore` the gateway's limits already use,
so every gateway process sharing Redis counts the same calls. A call is counted when the model proposes
it (before any approval): a refused call goes back to the model as a tool error naming the limit. When the
counters cannot be reached, tool calls with limits are refused (fail closed: a tool acts on the world).
"""

from __future__ import annotations

import time

from keel.agents.tools import ToolLimits, ToolSpec
from keel.store.protocols import Charge, LimitStore, LimitStoreUnavailable, Window

_KINDS: dict[str, Window] = {"rpm": "minute", "calls_day": "day", "usd_day": "day"}


def charges(tenant: str, spec: ToolSpec) -> list[Charge]:
    """The charges of one call of `spec` (none without limits)."""
    lim = spec.limits or ToolLimits()
    values = {"rpm": lim.rpm or spec.rate_per_minute, "calls_day": lim.calls_day, "usd_day": lim.usd_day}
    price = lim.usd_per_call
    return [
        Charge(
            f"tenant={tenant}|tool={spec.name}|{kind}", _KINDS[kind], float(limit), price if kind == "usd_day" else 1.0
        )
        for kind, limit in values.items()
        if limit is not None
    ]


class ToolBudgets:
    def __init__(self, counters: LimitStore) -> None:
        self._counters = counters

    async def admit(self, tenant: str, spec: ToolSpec, now: float | None = None) -> str | None:
        """None when the call fits every limit of its tool (and is counted); else the refusal, for the model."""
        wanted = charges(tenant, spec)
        if not wanted:
            return None
        try:
            got = await self._counters.reserve(wanted, time.time() if now is None else now)
        except LimitStoreUnavailable:
            return f"error: tool '{spec.name}' has limits and the limit counters are unreachable; try later"
        if got.reservation is not None:
            return None
        assert got.refused is not None
        c = wanted[got.refused]
        kind = c.counter.rsplit("|", 1)[1]
        limit = f"${c.limit:g}" if kind == "usd_day" else f"{c.limit:g}"
        used = got.used[got.refused]
        used_text = f"${used:g}" if kind == "usd_day" else f"{used:g}"
        when = "" if got.retry_after is None else f"; retry in {max(got.retry_after, 1):.0f} s"
        return f"error: tool '{spec.name}' refused: its limit {kind} {limit} is reached (used {used_text}){when}"
