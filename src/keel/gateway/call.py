"""`Call` (typed per-request state) and `Reply` (one shape for streaming and non-streaming).

A Reply is an async iterator of ChatEvents that accumulates the response as it passes and fires its
`on_done` callbacks exactly once: when the events end, when they fail, or when the consumer closes
it early (the client went away). Non-streaming callers use `collect()`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Literal

from keel.cache import Directives
from keel.errors import KeelError
from keel.types import (
    ChatEvent,
    ChatRequest,
    ChatResponse,
    EmbeddingRequest,
    EmbeddingResponse,
    Finish,
    Note,
    Principal,
    RoutePlan,
    Start,
    Target,
    Text,
    ToolCall,
    ToolCallDelta,
    TraceRecord,
    Usage,
    UsageEvent,
)


@dataclass(slots=True)
class Call:
    request: ChatRequest | EmbeddingRequest
    trace: TraceRecord
    api_key: str | None = field(default=None, repr=False)  # never stored or logged
    t0: float = field(default_factory=time.perf_counter)
    principal: Principal | None = None
    allowed: tuple[str, ...] | None = None  # aliases the key may use; None = all
    plan: RoutePlan | None = None
    target: Target | None = None
    timeout_s: float | None = None  # the caller's total budget (x-keel-timeout), within config
    tier: str | None = None  # the tier the caller asks for (x-keel-tier)
    asked_priority: int | None = None  # x-keel-priority, before clamping to the key's maximum
    priority: int = 0  # in a saturated target's wait queue: higher first
    deadline: float | None = None  # event-loop time by which the call must end
    waited_s: float = 0.0  # time in failed attempts and backoff: not gateway overhead
    warnings: list[str] = field(default_factory=list)  # soft-limit warnings for the response header
    cache_control: Directives = field(default_factory=Directives)  # x-keel-cache-control
    stale_answer: bool = False  # the cache holds an expired answer: it, not the static one, follows the targets


Status = Literal["ok", "error", "cancelled"]


@dataclass(slots=True)
class Outcome:
    status: Status
    error: KeelError | None
    response: ChatResponse
    usage: Usage | None
    ttft_s: float | None  # from arrival to the first content event
    upstream_s: float  # time spent waiting on the provider
    notes: dict[str, str] = field(default_factory=dict)  # the provider's Notes: `keel.*` trace tags


class Reply:
    def __init__(
        self,
        events: AsyncIterator[ChatEvent],
        t0: float,
        *,
        embedding: EmbeddingResponse | None = None,
    ) -> None:
        self._events = events
        self._t0 = t0
        self._callbacks: list[Callable[[Outcome], None]] = []
        self._done = False
        self.embedding = embedding
        self.id = ""
        self.model = embedding.model if embedding else ""
        self._text: list[str] = []
        self._calls: dict[int, list[str]] = {}  # index -> [id, name, arguments]
        self.finish: str | None = None
        self.usage: Usage | None = embedding.usage if embedding else None
        self.first_token_at: float | None = None
        self.upstream_s = 0.0
        self.notes: dict[str, str] = {}

    def on_done(self, callback: Callable[[Outcome], None]) -> None:
        self._callbacks.append(callback)

    def __aiter__(self) -> Reply:
        return self

    async def __anext__(self) -> ChatEvent:
        started = time.perf_counter()
        try:
            event = await self._events.__anext__()
        except StopAsyncIteration:
            self.upstream_s += time.perf_counter() - started
            self._finish("ok", None)
            raise
        except KeelError as err:
            self._finish("error", err)
            raise
        except (asyncio.CancelledError, GeneratorExit):
            self._finish("cancelled", None)
            raise
        except BaseException as exc:
            self._finish("error", KeelError(f"internal error: {type(exc).__name__}"))
            raise
        now = time.perf_counter()
        self.upstream_s += now - started
        self._absorb(event, now)
        return event

    def _absorb(self, event: ChatEvent, now: float) -> None:
        if isinstance(event, Text):
            self._text.append(event.text)
        elif isinstance(event, ToolCallDelta):
            slot = self._calls.setdefault(event.index, ["", "", ""])
            slot[0] = event.id or slot[0]
            slot[1] = event.name or slot[1]
            slot[2] += event.arguments
        elif isinstance(event, Start):
            self.id, self.model = event.id, event.model
            return
        elif isinstance(event, Finish):
            self.finish = event.reason
            return
        elif isinstance(event, UsageEvent):
            self.usage = event.usage
            return
        elif isinstance(event, Note):
            self.notes[event.tag] = event.value
            return
        if self.first_token_at is None:
            self.first_token_at = now

    def abandon(self) -> None:
        """The consumer stopped early (client gone): report cancelled now, close the source soon.

        Synchronous on purpose: it runs in `finally` blocks of cancelled tasks, where awaiting is unsafe.
        """
        if self._done:
            return
        self._finish("cancelled", None)
        closer = getattr(self._events, "aclose", None)
        if closer is not None:
            task = asyncio.ensure_future(closer())
            task.add_done_callback(_ignore_result)

    async def collect(self) -> ChatResponse:
        async for _ in self:
            pass
        return self.response()

    def response(self) -> ChatResponse:
        calls = tuple(ToolCall(c[0], c[1], c[2]) for _, c in sorted(self._calls.items()))
        text = "".join(self._text) if self._text else None
        return ChatResponse(self.id, self.model, text, calls, self.finish, self.usage)

    def _finish(self, status: Status, error: KeelError | None) -> None:
        if self._done:
            return
        self._done = True
        ttft = None if self.first_token_at is None else self.first_token_at - self._t0
        outcome = Outcome(status, error, self.response(), self.usage, ttft, self.upstream_s, self.notes)
        for callback in self._callbacks:
            callback(outcome)

    def fail(self, error: KeelError) -> None:
        """Report a failure that happened outside iteration (e.g. while rendering)."""
        self._finish("error", error)


def _ignore_result(task: asyncio.Future[None]) -> None:
    if not task.cancelled():
        task.exception()


async def no_events() -> AsyncIterator[ChatEvent]:
    return
    yield  # pragma: no cover - makes this an async generator
