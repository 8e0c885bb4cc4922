"""`Call` (the request and its attribution), `Outcome` (how it ended, usage and cost) and `Reply`.

A capability's per-call state is not a `Call` field: it is a small typed object of its own, made on
first use by `call.state(Kind)` (a slots dataclass whose fields all have defaults) and read, without
making one, by `call.find(Kind)`. The trace record (`call.trace`) is output: stages may write their
facts to it, never read request input back from it (that is on `Call`) nor cost (that is on `Outcome`).

A Reply is an async iterator of ChatEvents that accumulates the response as it passes and fires its
`on_done` callbacks exactly once: when the events end, when they fail, or when the consumer closes
it early (the client went away). Non-streaming callers use `collect()`.

A resumable Reply (the failover stage makes streams so) may outlive the attempt that began it: when
its events fail after content, `resume` may hand it another attempt's Reply to read on from. The
callbacks registered before `resumable` belong to the attempt and fire when it ends, with its own
outcome; those registered after belong to the call. A stream that does not break pays nothing.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from keel.errors import KeelError
from keel.types import (
    JSON,
    ChatEvent,
    ChatRequest,
    ChatResponse,
    EmbeddingRequest,
    EmbeddingResponse,
    Finish,
    Note,
    Principal,
    Reasoning,
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

S = TypeVar("S")


@dataclass(slots=True)
class Call:
    request: ChatRequest | EmbeddingRequest
    trace: TraceRecord  # the record this call writes (output only; see the module docstring)
    api_key: str | None = field(default=None, repr=False)  # never stored or logged
    t0: float = field(default_factory=time.perf_counter)
    principal: Principal | None = None  # tenant, key and its limits, once authenticated
    user: str | None = None  # the body's `user` or x-keel-user, else the key's user (set by auth)
    feature: str | None = None  # x-keel-feature
    session: str | None = None  # x-keel-session
    tags: dict[str, Any] | None = None  # the caller's tags (metadata, x-keel-tags); None: none given
    allowed: tuple[str, ...] | None = None  # aliases the key may use; None = all
    plan: RoutePlan | None = None
    target: Target | None = None
    timeout_s: float | None = None  # the caller's total budget (x-keel-timeout), within config
    tier: str | None = None  # the tier the caller asks for (x-keel-tier)
    asked_priority: int | None = None  # x-keel-priority, before clamping to the key's maximum
    priority: int = 0  # in a saturated target's wait queue: higher first
    deadline: float | None = None  # event-loop time by which the call must end
    waited_s: float = 0.0  # time in failed attempts and backoff: not gateway overhead
    _states: dict[type, Any] | None = field(default=None, repr=False)  # capabilities' per-call state, by type

    def state(self, kind: type[S]) -> S:
        """This call's `kind` state, made (with its defaults) on first use."""
        states = self._states
        if states is None:
            states = self._states = {}
        found = states.get(kind)
        if found is None:
            found = states[kind] = kind()
        return found

    def find(self, kind: type[S]) -> S | None:
        """This call's `kind` state if a stage or the edge made one; None otherwise (nothing is made)."""
        states = self._states
        return None if states is None else states.get(kind)


@dataclass(slots=True)
class ResponseFields:
    """Per-call state: top-level fields a stage adds to the response body beside the wire format's own
    (the retrieve slot's `citations`); the chat edge writes them into the body, or a last stream chunk."""

    fields: dict[str, Any] = field(default_factory=dict)


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
    billed: Usage | None = None  # what the call is billed for (set by the invoke slot; None: nothing)
    cost_usd: float | None = None  # its price (None: unpriced, or nothing billed); 0.0 for free answers


Resume = Callable[["Reply", KeelError], Awaitable["Reply | None"]]  # (broken reply, error) → the next attempt


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
        self._reasoning: list[JSON] = []  # thinking blocks, as ChatResponse.reasoning holds them
        self.finish: str | None = None
        self.usage: Usage | None = embedding.usage if embedding else None
        self.first_token_at: float | None = None
        self.upstream_s = 0.0
        self.notes: dict[str, str] = {}
        self._resume: Resume | None = None
        self._attempt_done: list[Callable[[Outcome], None]] = []  # the current attempt's, once resumable
        self._mark = 0  # where the current attempt's text starts in `_text`
        self.cost_usd: float | None = None  # a cost known up front: 0.0 for a free answer (cache, static)
        self._billed: Usage | None = None  # after a resume: the ended attempts' billed usage and cost, summed
        self._spent: float | None = None

    def on_done(self, callback: Callable[[Outcome], None]) -> None:
        self._callbacks.append(callback)

    def resumable(self, resume: Resume) -> None:
        """Let `resume` continue this reply on another attempt when its events fail after content.

        Callbacks registered so far are the attempt's: they fire when it ends, with its own outcome.
        """
        self._resume = resume
        self._attempt_done, self._callbacks = self._callbacks, []

    def splice(self, wrap: Callable[[AsyncIterator[ChatEvent]], AsyncIterator[ChatEvent]]) -> None:
        """Pass this reply's events through `wrap`, before any is read."""
        self._events = wrap(self._events)

    def text(self) -> str:
        """The text content forwarded so far."""
        return "".join(self._text)

    @property
    def has_tool_calls(self) -> bool:
        return bool(self._calls)

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
            if self._resume is not None and self.finish is None:
                return await self._resumed(err)
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

    async def _resumed(self, err: KeelError) -> ChatEvent:
        """The events failed after content: end this attempt, then read on from the next one, if any."""
        resume, self._resume = self._resume, None
        assert resume is not None
        self._end_attempt(self._attempt_outcome("error", err))
        try:
            other = await resume(self, err)
        except (asyncio.CancelledError, GeneratorExit):
            self._finish("cancelled", None)
            raise
        except BaseException as exc:
            self._finish("error", KeelError(f"internal error: {type(exc).__name__}"))
            raise
        if other is None:
            self._finish("error", err)
            try:
                raise err
            finally:
                del err  # its traceback keeps this frame: the frame must not keep the error
        self._events, self._attempt_done = other._events, other._callbacks
        self.model = other.model or self.model
        self.upstream_s += other.upstream_s
        self.usage, self._mark, self._resume = None, len(self._text), resume
        return await self.__anext__()

    def _end_attempt(self, outcome: Outcome) -> None:
        callbacks, self._attempt_done = self._attempt_done, []
        for callback in callbacks:
            callback(outcome)  # the invoke slot's, first, bills the attempt on `outcome`
        if outcome.billed is not None:
            self._billed = _added(self._billed, outcome.billed)
        if outcome.cost_usd is not None:
            self._spent = (self._spent or 0.0) + outcome.cost_usd

    def _absorb(self, event: ChatEvent, now: float) -> None:
        if isinstance(event, Text):
            self._text.append(event.text)
        elif isinstance(event, Reasoning):
            _think(self._reasoning, event)
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
        return self._response(0)

    def _response(self, start: int) -> ChatResponse:
        """The response from `_text[start]` on: the whole call's, or (after a resume) one attempt's."""
        calls = tuple(ToolCall(c[0], c[1], c[2]) for _, c in sorted(self._calls.items()))
        text = "".join(self._text[start:] if start else self._text) if len(self._text) > start else None
        return ChatResponse(self.id, self.model, text, calls, self.finish, self.usage, tuple(self._reasoning))

    def _finish(self, status: Status, error: KeelError | None) -> None:
        if self._done:
            return
        self._done = True
        self._resume = None
        outcome = self._attempt_outcome(status, error) if self._mark == 0 else None
        if self._attempt_done:
            self._end_attempt(outcome or self._attempt_outcome(status, error))
        if outcome is None:  # resumed: the call's outcome spans every attempt
            outcome = Outcome(status, error, self.response(), self.usage, self._ttft(), self.upstream_s, self.notes)
            outcome.billed, outcome.cost_usd = self._billed, self._spent  # every attempt that served
        callbacks, self._callbacks = self._callbacks, []  # their closures (call, payload) go with this reply's end
        for callback in callbacks:
            callback(outcome)

    def _attempt_outcome(self, status: Status, error: KeelError | None) -> Outcome:
        """The current attempt's outcome: after a resume, its own text and usage, and no time to first token."""
        ttft = self._ttft() if self._mark == 0 else None
        outcome = Outcome(status, error, self._response(self._mark), self.usage, ttft, self.upstream_s, self.notes)
        outcome.cost_usd = self.cost_usd
        return outcome

    def _ttft(self) -> float | None:
        return None if self.first_token_at is None else self.first_token_at - self._t0

    def fail(self, error: KeelError) -> None:
        """Report a failure that happened outside iteration (e.g. while rendering)."""
        self._finish("error", error)


def _think(blocks: list[JSON], event: Reasoning) -> None:
    """Fold a Reasoning event into thinking blocks: text extends the open block, a signature closes it."""
    if event.redacted is not None:
        blocks.append({"type": "redacted_thinking", "data": event.redacted})
        return
    last = blocks[-1] if blocks else None
    if last is None or last["type"] != "thinking" or last["signature"]:
        last = {"type": "thinking", "thinking": "", "signature": ""}
        blocks.append(last)
    last["thinking"] += event.text
    last["signature"] = event.signature or ""


def _added(a: Usage | None, b: Usage) -> Usage:
    if a is None:
        return b
    return Usage(
        a.input_tokens + b.input_tokens,
        a.output_tokens + b.output_tokens,
        a.cached_input_tokens + b.cached_input_tokens,
        a.cache_write_tokens + b.cache_write_tokens,
        a.reasoning_tokens + b.reasoning_tokens,
    )


def _ignore_result(task: asyncio.Future[None]) -> None:
    if not task.cancelled():
        task.exception()


async def no_events() -> AsyncIterator[ChatEvent]:
    return
    yield  # pragma: no cover - makes this an async generator
