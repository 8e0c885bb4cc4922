"""The limits stage: reserve on every applicable counter before the call, settle when it ends.

Admission estimates the call's tokens (prompt estimate + its output cap) and cost (priced on the
dearest target of its plan), and reserves them all or nothing. When the reply ends — finished,
failed mid-stream or abandoned by the client — the reservation is settled with the real tokens and
cost; a call that fails before any reply releases what it reserved. If the counter store is
unreachable, the tenant's choice applies: fail open (serve, uncounted) or closed (503).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

from keel.accounting import PriceBook, cost_of
from keel.errors import ErrorKind, ProviderError
from keel.gateway.call import Call, Outcome, Reply
from keel.gateway.pipeline import Handler
from keel.gateway.routing import estimate_prompt_tokens
from keel.limits import Estimate, LimitBook, Subject, actual_amounts, refusal, warnings
from keel.providers.openai_chat import output_cap
from keel.store.protocols import Charge, LimitStore, LimitStoreUnavailable, Reservation
from keel.types import ChatRequest, Usage

log = logging.getLogger("keel.limits")
Alert = Callable[[Charge, float, float], None]  # (charge, threshold reached, used)


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
        self.book = book  # replaced whole when overrides change (see Runtime.refresh_limits)
        self._prices = prices
        self._default_output = default_output_tokens
        self._thresholds = thresholds
        self._alert = alert
        self._pending: set[asyncio.Task[Any]] = set()
        self.unavailable = 0  # admissions that met an unreachable store

    async def __call__(self, call: Call, next: Handler) -> Reply:
        assert call.principal is not None and call.plan is not None
        book = self.book
        who = Subject(
            call.principal.tenant, call.principal.key_id, call.trace.user, call.trace.feature, call.request.model
        )
        charges = book.charges(who, lambda: self._estimate(call))
        if not charges:
            return await next(call)
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
        reply.on_done(lambda outcome: self._settle(call, reservation, outcome))
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
            call.warnings.append(f"{charge.counter} at {value / charge.limit:.0%} of {charge.limit:g}")
            if self._alert is not None:
                self._alert(charge, threshold, value)

    def _settle(self, call: Call, reservation: Reservation, outcome: Outcome) -> None:
        record = call.trace
        tokens = (record.input_tokens or 0) + (record.output_tokens or 0)
        usd = record.cost_usd or 0.0
        actual = actual_amounts(reservation.charges, tokens, usd)
        self._spawn(self._store.settle(reservation, actual, time.time()))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)
