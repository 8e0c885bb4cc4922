"""The limits stage: reserve on every applicable counter before the call, settle when it ends.

Admission estimates the call's tokens (prompt estimate + its output cap) and cost (priced on the
dearest target of its plan), and reserves them all or nothing. When the reply ends — finished,
failed mid-stream or abandoned by the client — the reservation is settled with the real tokens and
cost; a call that fails before any reply releases what it reserved. If the counter store is
unreachable, the tenant's choice applies: fail open (serve, uncounted) or closed (503).

Overrides change under calls in flight (each process reads them every few seconds), yet spend always
counts: a call charges, when it ends, every counter of the book then in force that it was not
admitted on, and each process keeps the spend of calls ended in the last few seconds so that an
override it reads late still counts every call that ended after the override was set. A new limit is
enforced from the moment a process reads it; it counts from the moment it was set.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field, replace
from typing import Any

from keel.errors import ErrorKind, ProviderError
from keel.gateway.call import Call, Outcome, Reply
from keel.gateway.pipeline import Handler
from keel.gateway.routing import estimate_prompt_tokens
from keel.limits.book import Estimate, LimitBook, Subject, refusal, warnings
from keel.providers.prices import PriceBook, cost_of
from keel.store.protocols import Charge, LimitStore, LimitStoreUnavailable, Reservation
from keel.types import ChatRequest, Usage
from keel.wire.openai_chat import output_cap

log = logging.getLogger("keel.limits")
Alert = Callable[[Charge, float, float], None]  # (charge, threshold reached, used)
SKEW_S = 5.0  # override times come from other processes' clocks, and are stamped just before commit
MAX_ENDED = 50_000  # ended calls kept for overrides read late; past it the oldest go (only while reads fail)


# one ended call, kept a few seconds in case an override read later must count it: (when it ended (wall
# clock), who, tokens, usd, the book it was admitted on). A plain tuple of shared objects: one is made
# per call and kept for seconds, so it holds no per-call garbage for the collector to walk.
Ended = tuple[float, Subject, float, float, LimitBook]


@dataclass(slots=True)
class LimitState:
    """The limits slot's per-call state (`call.state(LimitState)`), made only when a soft limit warns."""

    warnings: list[str] = field(default_factory=list)  # for the x-keel-limit-warning response header


class LimitsStage:
    def __init__(
        self,
        store: LimitStore,
        book: LimitBook,
        prices: PriceBook,
        *,
        default_output_tokens: int = 1024,
        thresholds: tuple[float, ...] = (0.8,),
        alert: Alert | None = None,
    ) -> None:
        self._store = store
        self._book = book  # replaced whole when overrides change (see `update`)
        self._read_at = time.time()  # when the book's overrides were read
        self._ended: deque[Ended] = deque()
        self._prices = prices
        self._default_output = default_output_tokens
        self._thresholds = thresholds
        self._alert = alert
        self._pending: set[asyncio.Task[Any]] = set()
        self.unavailable = 0  # admissions that met an unreachable store
        self.late_charges = 0  # ended calls charged on counters an override added after their admission
        self.forgotten = 0  # ended calls dropped unread past MAX_ENDED (overrides unreadable meanwhile)

    @property
    def book(self) -> LimitBook:
        return self._book

    @property
    def read_at(self) -> float:
        """When the overrides in force were read from the store (wall clock)."""
        return self._read_at

    def update(self, book: LimitBook, read_at: float) -> None:
        """A book read from the store at `read_at`: if its overrides differ, count what they missed and use it."""
        changed = book.changed(self._book)
        self._read_at = read_at
        if changed:
            before, self._book = self._book, book
            for ended in self._ended:
                who = ended[1]
                if {("tenant", who.tenant), ("key", who.key or ""), ("team", who.team or "")} & changed:
                    self._charge_missed(ended, before)
        self._trim()

    async def __call__(self, call: Call, next: Handler) -> Reply:
        assert call.principal is not None and call.plan is not None
        book = self._book
        p = call.principal
        who = Subject(p.tenant, p.key_id, call.user, call.feature, call.request.model, p.team)
        charges = book.charges(who, lambda: self._estimate(call))
        if not charges:
            reply = await next(call)
            reply.on_done(lambda outcome: self._end(outcome, who, book, None))
            return reply
        try:
            admission = await self._store.reserve(charges, time.time())
        except LimitStoreUnavailable:
            self.unavailable += 1
            if book.fail_mode(who.tenant) == "closed":
                raise ProviderError(
                    ErrorKind.overloaded, "Limits cannot be checked right now; retry shortly.", retry_after=1.0
                ) from None
            log.warning("limit store unreachable: serving tenant %s uncounted (fail-open)", who.tenant)
            return await next(call)
        reservation = admission.reservation
        if reservation is None:
            i = admission.refused or 0
            raise refusal(charges[i], admission.used[i], admission.retry_after)
        self._warn(call, charges, admission.used)
        try:
            reply = await next(call)
        except BaseException:
            self._spawn(self._store.release(reservation, time.time()))
            raise
        reply.on_done(lambda outcome: self._end(outcome, who, book, reservation))
        return reply

    def _estimate(self, call: Call) -> Estimate:
        assert call.plan is not None
        request = call.request
        prompt = estimate_prompt_tokens(request)
        output = (output_cap(request) or self._default_output) if isinstance(request, ChatRequest) else 0
        usage = Usage(input_tokens=prompt, output_tokens=output)
        costs = [cost_of(p, usage) for t in call.plan.targets if (p := self._prices.lookup(t.model)) is not None]
        return Estimate(tokens=prompt + output, usd=max(costs, default=0.0))

    def _warn(self, call: Call, charges: list[Charge], used: tuple[float, ...]) -> None:
        for charge, threshold in warnings(charges, used, self._thresholds):
            value = used[charges.index(charge)]
            call.state(LimitState).warnings.append(
                f"{charge.counter} at {value / charge.limit:.0%} of {charge.limit:g}"
            )
            if self._alert is not None:
                self._alert(charge, threshold, value)

    def _end(self, outcome: Outcome, who: Subject, book: LimitBook, reservation: Reservation | None) -> None:
        """Settle what was reserved, charge counters the book gained since admission, keep the spend a while."""
        billed = outcome.billed
        tokens = 0 if billed is None else billed.input_tokens + billed.output_tokens
        usd = outcome.cost_usd or 0.0
        now = time.time()
        if reservation is not None:
            actual = book.amounts(who, tokens, usd)  # (the charges it was admitted on, in their order)
            if not self._store.settle_at_once(reservation, actual, now):
                self._spawn(self._store.settle(reservation, actual, now))
        ended = (now, who, tokens, usd, book)
        if book is not self._book:
            self._charge_missed(ended, None)
        self._ended.append(ended)
        if self._ended[0][0] < self._read_at - SKEW_S or len(self._ended) > MAX_ENDED:
            self._trim()

    def _charge_missed(self, ended: Ended, before: LimitBook | None) -> None:
        """Charge an ended call on the book's counters whose override was set before it ended, except those it
        was admitted on and those of `before` (the book it was charged on up to now; None: it ends now)."""
        at, who, tokens, usd, admitted = ended
        spent = Estimate(tokens, usd)
        charged = {c.counter for b in (admitted, before) if b is not None for c in b.charges(who, spent)}
        book = self._book
        missed = [
            c
            for c in book.charges(who, spent)
            if c.counter not in charged and c.window != "concurrent" and book.set_at(c.counter) <= at
        ]
        if not missed:
            return
        self.late_charges += 1
        # a reservation of nothing, settled with what was spent: the amounts land where admission would have put them
        nothing = Reservation("late", at, tuple(replace(c, amount=0.0) for c in missed))
        self._spawn(self._store.settle(nothing, [c.amount for c in missed], time.time()))

    def _trim(self) -> None:
        """Forget ended calls no override still unread could need (set before the last read, give or take skew)."""
        keep_from = self._read_at - SKEW_S
        ended = self._ended
        while ended and (ended[0][0] < keep_from or len(ended) > MAX_ENDED):
            if ended[0][0] >= keep_from:
                if self.forgotten % 10_000 == 0:
                    log.warning("limit overrides unread for long: an override set now may miss earlier spend")
                self.forgotten += 1
            ended.popleft()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)
