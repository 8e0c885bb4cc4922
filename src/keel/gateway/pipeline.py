"""The request path as an ordered list of stages in named slots, composed once at start-up.

A `Stage` is one method: `async (call, next) -> Reply`. Capabilities contribute stages by slot
name (`SLOTS`, in request order); `compose` orders them by slot and keeps the contributors' order
within a slot, so adding a capability never edits another stage or a hard-coded list. A slot may
be empty. `invoke` is not a stage but the last handler: exactly one capability gives it.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Protocol

from keel.gateway.call import Call, Reply

Handler = Callable[[Call], Awaitable[Reply]]

SLOTS = ("trace", "auth", "prompt", "route", "limits", "cache", "retrieve", "guard", "failover", "invoke")
_ORDER = {slot: i for i, slot in enumerate(SLOTS)}


class Stage(Protocol):
    async def __call__(self, call: Call, next: Handler) -> Reply: ...


def build_pipeline(stages: Sequence[Stage], last: Handler) -> Handler:
    handler = last
    for stage in reversed(stages):
        handler = functools.partial(stage.__call__, next=handler)
    return handler


def in_slot_order(stages: Iterable[tuple[str, Stage]]) -> list[Stage]:
    """The stages ordered by slot; those of one slot keep their order. An unknown slot is an error."""
    listed = list(stages)
    for slot, stage in listed:
        if slot not in _ORDER or slot == "invoke":
            known = ", ".join(SLOTS[:-1])
            raise ValueError(f"{type(stage).__name__} names slot '{slot}'; a stage goes in one of: {known}")
    ordered = sorted(enumerate(listed), key=lambda item: (_ORDER[item[1][0]], item[0]))
    return [stage for _, (_, stage) in ordered]
