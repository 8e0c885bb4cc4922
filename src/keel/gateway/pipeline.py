"""The request path as an ordered list of stages, composed once at start-up.

A `Stage` is one method: `async (call, next) -> Reply`. Later capabilities (limits, cache,
failover, guardrails) are more stages inserted at named points, never edits to the others.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from keel.gateway.call import Call, Reply

Handler = Callable[[Call], Awaitable[Reply]]


class Stage(Protocol):
    async def __call__(self, call: Call, next: Handler) -> Reply: ...


def build_pipeline(stages: Sequence[Stage], last: Handler) -> Handler:
    handler = last
    for stage in reversed(stages):
        handler = functools.partial(stage.__call__, next=handler)
    return handler
