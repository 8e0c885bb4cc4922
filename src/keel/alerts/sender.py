"""Signed webhook alerts: soft-limit crossings and alert-rule events, each sent once, retried.

Alert-rule events (`RuleEvent`, from `keel.alerts.rules`) arrive already decided: the store's
`flip_alert` picked the one process that sends each, so `send` only queues them for delivery, with
the same signature, retries and at-most-once rule as crossings. Their body: `{"event":
"alert.firing" | "alert.resolved", "rule", "metric", "scope", "value", "tenant", "threshold",
"observed", "calls", "window", "since", "at", "id"}`; `id` is the sha256 hex of "key|since|event".

A crossing is (counter, period, threshold): `tenant=acme|usd_day` reaching 80% on d20261123 is one
crossing, reaching it again the next day another. Sliding-minute and concurrency counters have no
period and raise none. The limits stage reports a crossing on every call that finds a counter over
a threshold; `threshold_crossed` answers at once, dropping what this process has already handled
and queueing the rest. `run` claims each queued crossing in the store (`claim`: the first claimer
across all processes wins) and only the winner POSTs it, retrying network errors, timeouts, 429 and
5xx with exponential backoff. A crossing whose retries run out, or that the receiver refuses with
another 4xx, is logged and counted but never sent again: at most once, rather than a flood.

The request: POST, JSON body `{"event": "limit.threshold_crossed", "counter", "kind", "scope",
"threshold", "used", "limit", "period", "at", "id"}`, where `id` is the sha256 hex of
"counter|period|threshold" (stable across retries and processes: receivers dedupe on it). Headers:
`x-keel-event-id` (the id), `x-keel-timestamp` (unix seconds of this attempt) and `x-keel-signature`:
"sha256=" + hex HMAC-SHA256 of f"{timestamp}.{raw body}" keyed with the secret. A receiver checks:

    signed = headers["x-keel-timestamp"].encode() + b"." + raw_body
    expected = "sha256=" + hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(expected, headers["x-keel-signature"])  # and the timestamp is recent
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import orjson

from keel.store.counters import period_id
from keel.store.protocols import Charge
from keel.wire.webhook import sign

if TYPE_CHECKING:
    import aiohttp  # imported when a sender is built: a gateway with no webhook never loads it (~0.2 s of start-up)

log = logging.getLogger("keel.alerts")
Claim = Callable[[str, str, float, float], bool]  # (counter, period, threshold, at) → first claimer?
EVENT = "limit.threshold_crossed"
MAX_QUEUE = 10_000  # crossings waiting or in flight; beyond it new ones are dropped (and reported again later)
MAX_SEEN = 100_000  # remembered crossings; past it, those of earlier periods are forgotten
MAX_BACKOFF_S = 60.0


@dataclass(slots=True)
class AlertStats:
    sent: int = 0  # delivered (2xx)
    failed: int = 0  # given up: retries exhausted, refused by the receiver, or unsent at shutdown
    deduped: int = 0  # reports of a crossing already handled, by this process or (claim lost) another
    queued: int = 0  # accepted and not finished yet (waiting or being sent)
    dropped: int = 0  # not accepted because the queue was full


@dataclass(frozen=True, slots=True)
class Crossing:
    counter: str  # scope and kind, e.g. "tenant=acme|usd_day"
    period: str  # from `period_id`, e.g. "d20261123"
    threshold: float
    used: float
    limit: float
    at: float  # when it was reported

    @property
    def key(self) -> tuple[str, str, float]:
        return (self.counter, self.period, self.threshold)

    @property
    def id(self) -> str:
        return hashlib.sha256(f"{self.counter}|{self.period}|{self.threshold}".encode()).hexdigest()

    def describe(self) -> str:
        return f"{self.counter} at {self.threshold:g} of {self.limit:g}, {self.period}"

    def body(self) -> bytes:
        scope, kind = self.counter.rsplit("|", 1)
        fields = {
            "event": EVENT,
            "counter": self.counter,
            "kind": kind,
            "scope": scope,
            "threshold": self.threshold,
            "used": self.used,
            "limit": self.limit,
            "period": self.period,
            "at": int(self.at),
            "id": self.id,
        }
        return orjson.dumps(fields)


@dataclass(frozen=True, slots=True)
class RuleEvent:
    """An alert rule started (`firing`) or stopped (`resolved`) holding for one scope value."""

    event: str  # alert.firing | alert.resolved
    rule: str
    metric: str
    scope: str
    value: str | None  # the tenant, feature or alias; None for a global rule
    tenant: str | None  # the rule's tenant filter
    threshold: float
    observed: float | None  # the metric now; None when the window holds too few calls to judge
    calls: int
    window: str
    since: float  # when this episode started firing
    at: float

    @property
    def id(self) -> str:
        return hashlib.sha256(f"{self.rule}|{self.value or ''}|{self.since}|{self.event}".encode()).hexdigest()

    def describe(self) -> str:
        return f"{self.event} {self.rule} {self.scope}={self.value or '*'}"

    def body(self) -> bytes:
        fields = {
            "event": self.event,
            "rule": self.rule,
            "metric": self.metric,
            "scope": self.scope,
            "value": self.value,
            "tenant": self.tenant,
            "threshold": self.threshold,
            "observed": self.observed,
            "calls": self.calls,
            "window": self.window,
            "since": self.since,
            "at": self.at,
            "id": self.id,
        }
        return orjson.dumps(fields)


class Decided(Protocol):
    """An event some store transition already picked this process to send (a rule's flip, a prompt
    rollout's move): queued by `send`, delivered once, signed like a crossing."""

    @property
    def id(self) -> str: ...

    def describe(self) -> str: ...

    def body(self) -> bytes: ...


Event = Crossing | Decided


def _retryable(status: int) -> bool:
    return status == 429 or status >= 500


class AlertSender:
    """Queues crossings (from the request path) and rule events, and delivers each one once, from `run`."""

    def __init__(
        self,
        url: str,
        secret: str,
        *,
        claim: Claim,
        timeout_s: float = 5.0,
        retries: int = 5,
        backoff_s: float = 0.5,
        session_factory: Callable[[], aiohttp.ClientSession] | None = None,
        concurrency: int = 4,
        drain_s: float = 10.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        import aiohttp

        self._url = url
        self._secret = secret
        self._claim = claim
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._retries = retries
        self._backoff = backoff_s
        self._factory = session_factory or (lambda: aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()))
        self._drain_s = drain_s  # the most `aclose` waits for queued crossings
        self._clock = clock
        self._session: aiohttp.ClientSession | None = None
        self._queue: asyncio.Queue[Event | None] = asyncio.Queue()  # None: stop, once what precedes it is sent
        self._slots = asyncio.Semaphore(concurrency)  # deliveries at once: one hung receiver blocks no others
        self._inflight: set[asyncio.Task[None]] = set()
        self._seen: set[tuple[str, str, float]] = set()
        self._closing = False
        self._full = False
        self.stats = AlertStats()

    def threshold_crossed(self, charge: Charge, threshold: float, used: float) -> None:
        """Report from the request path (event loop thread): never blocks, never raises."""
        if self._closing or charge.window in ("minute", "concurrent"):
            return
        now = self._clock()
        period = period_id(charge.window, now)
        if (charge.counter, period, threshold) in self._seen:
            self.stats.deduped += 1
            return
        if self.stats.queued >= MAX_QUEUE:
            self.stats.dropped += 1
            if not self._full:
                log.warning("alert queue full (%d): dropping new crossings until it drains", MAX_QUEUE)
            self._full = True
            return
        self._full = False
        crossing = Crossing(charge.counter, period, threshold, used, charge.limit, now)
        self._remember(crossing.key, now)
        self.stats.queued += 1
        self._queue.put_nowait(crossing)

    def send(self, event: Decided) -> None:
        """Queue an event (a rule's, a rollout's) this process won the right to send. Never blocks, never raises."""
        if self._closing:
            self.stats.failed += 1
            return
        if self.stats.queued >= MAX_QUEUE:
            self.stats.dropped += 1
            return
        self.stats.queued += 1
        self._queue.put_nowait(event)

    def _remember(self, key: tuple[str, str, float], now: float) -> None:
        if len(self._seen) >= MAX_SEEN:  # the store's claim stays the truth: forgetting costs a claim
            current = {period_id("day", now), period_id("month", now), period_id("total", now)}
            self._seen = {k for k in self._seen if k[1] in current}
            if len(self._seen) >= MAX_SEEN:
                self._seen.clear()
        self._seen.add(key)

    async def run(self) -> None:
        """Deliver queued crossings, a few at once, until `aclose` asks to stop (or cancellation)."""
        while True:
            await self._slots.acquire()
            try:
                event = await self._queue.get()
            except BaseException:
                self._slots.release()
                raise
            if event is None:
                self._slots.release()
                self._queue.put_nowait(None)  # for any other loop draining this queue
                return
            task = asyncio.create_task(self._deliver(event), name=f"keel-alert-{event.id[:8]}")
            self._inflight.add(task)
            task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._inflight.discard(task)
        self._slots.release()
        self.stats.queued -= 1
        if task.cancelled():
            self.stats.failed += 1
        elif (exc := task.exception()) is not None:
            self.stats.failed += 1
            log.error("alert delivery crashed", exc_info=exc)

    async def _deliver(self, event: Event) -> None:
        if not isinstance(event, Crossing):  # already decided, by the store transition that made it
            await self._count(self._post(event))
            return
        c = event
        try:
            won = await asyncio.to_thread(self._claim, c.counter, c.period, c.threshold, c.at)
        except Exception:
            log.warning("cannot claim alert %s %s in the store; trying again when next reported", c.counter, c.period)
            self._seen.discard(c.key)  # nothing was claimed, so a later report may still send it
            return
        if not won:
            self.stats.deduped += 1  # another process, or an earlier run, has it
            return
        await self._count(self._post(c))

    async def _count(self, delivery: Coroutine[Any, Any, bool]) -> None:
        if await delivery:
            self.stats.sent += 1
        else:
            self.stats.failed += 1

    async def _post(self, event: Event) -> bool:
        """POST with retries; False once retries run out or the receiver refuses the request."""
        import aiohttp  # loaded by __init__ already

        body, why, attempts = event.body(), "", 0
        for attempt in range(self._retries + 1):
            if attempt:
                await asyncio.sleep(min(self._backoff * 2 ** (attempt - 1), MAX_BACKOFF_S))
            attempts += 1
            try:
                status = await self._send(event.id, body)
            except (aiohttp.ClientError, TimeoutError) as exc:
                why = f"{type(exc).__name__} {exc}".strip()
                continue
            if 200 <= status < 300:
                return True
            why = f"HTTP {status}"
            if not _retryable(status):
                break  # the receiver refuses this request: the same request again cannot help
        log.error(
            "alert %s (%s) not delivered after %d attempt(s): %s; it will not be sent again",
            event.id[:12],
            event.describe(),
            attempts,
            why,
        )
        return False

    async def _send(self, event_id: str, body: bytes) -> int:
        if self._session is None:
            self._session = self._factory()
        stamp = str(int(self._clock()))
        headers = {
            "content-type": "application/json",
            "x-keel-event-id": event_id,
            "x-keel-timestamp": stamp,
            "x-keel-signature": sign(self._secret, stamp, body),
        }
        post = self._session.post(self._url, data=body, headers=headers, timeout=self._timeout, allow_redirects=False)
        async with post as resp:
            return resp.status

    async def aclose(self) -> None:
        """Stop taking crossings, deliver those queued (for at most `drain_s`), close the session."""
        if self._closing:
            return
        self._closing = True
        self._queue.put_nowait(None)
        try:
            await asyncio.wait_for(self._drain(), self._drain_s)
        except TimeoutError:
            await self._abandon()
        finally:
            if self._session is not None:
                await self._session.close()

    async def _drain(self) -> None:
        await self.run()  # beside the runtime's loop, or instead of it if that was cancelled first
        while self._inflight:
            await asyncio.wait(set(self._inflight))

    async def _abandon(self) -> None:
        failed = self.stats.failed
        while not self._queue.empty():  # first, so no loop starts another delivery
            if self._queue.get_nowait() is not None:
                self.stats.queued -= 1
                self.stats.failed += 1
        self._queue.put_nowait(None)
        for task in self._inflight:
            task.cancel()
        if self._inflight:
            await asyncio.wait(set(self._inflight))
        log.error(
            "alerts: %d crossing(s) not delivered within %g s of shutdown", self.stats.failed - failed, self._drain_s
        )
