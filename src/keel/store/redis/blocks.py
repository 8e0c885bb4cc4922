"""Admission blocks: a process takes a slice of a large counter's allowance, then admits from it locally.

Why: one Redis round trip on every call's path was the Redis-backed spine's added latency (decision
0057-redis-admission-blocks). When a call's admission goes to Redis anyway (the exact path), the same
script call may also grant this process a block of each counter it charges: the block is added to the
shared counter at once, as if spent, and later calls whose every charge fits in this process's blocks
are admitted here, with no round trip. A call that ends gives its reservation back to its block
(estimate minus actual); a block stops admitting `HOLD_S` after it was granted (or at the end of its
UTC day or month) and what is left of it goes back to Redis then, asynchronously, and on close.
A call admitted from a block past `RENEW_S` (3/4 of its time), or spent past half, has the next block
asked for in the background (`renew`, decision 0063-prefetched-admission-blocks): it replaces the old
one before it runs out, so no call waits on Redis while its counters stay under half their limits.

Sizes: at most 1/64 of the limit, and at most 1/8 of a second's worth of it for windows with a rate
(rpm/tpm: limit/60 per second; day and month likewise); concurrency blocks are at most 256 slots, and
sized to what this process uses: `MIN_SLOTS` at first, then twice the most slots the counter's last
block had in use at once (twice its size when more than half of it is in use as the next is asked
for). Each slot is a member of the lease set, added and removed one by one in Redis (~4 µs each), and
a grant rides with the first call after a quiet second: 256 slots put ~1 ms of script on that call's
path where one connection needs one or two (decision 0065).
A block is granted only while the shared counter, this call and the block included, stays under
half its limit: near a limit every call is exact. A counter whose block would cover fewer than two
calls of this size (a small limit) is never blocked, so its calls stay exact, one round trip each.

Slack, per counter, with P processes: the shared counter always holds every admitted call (blocks
are counted when granted), so calendar windows, totals and concurrency never admit more than the
limit; blocks held elsewhere can refuse a call early by at most P blocks (≤ P/64 of the limit),
for at most `HOLD_S`. The sliding minute is the exception: a block's calls are counted in the second
the block was granted, so at most one block per process straddles a window's start and its calls,
made up to `HOLD_S` later, leave the window up to `HOLD_S` early: ≤ P × limit/480 over the limit.
Settlements of calls whose block has been returned go to Redis as on the exact path.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from keel.store.counters import MINUTE_S, live, period_end, second
from keel.store.protocols import Admission, Charge, Reservation, Window

HOLD_S = 1.0  # a block admits for this long after its grant, then what is left goes back
SHARE = 64  # a block is at most 1/SHARE of its limit
RATE_SHARE = 8  # ... and at most 1/RATE_SHARE of a second's worth of it
RENEW_S = HOLD_S * 3 / 4  # a block this old is renewed in the background by the next call admitted from it
ASKING_S = 0.5  # while a call asks Redis for a counter's block, others do not (unless its answer is this late)
MAX_SLOTS = 256  # concurrency slots per block (each is a member of the lease set)
MIN_SLOTS = 8  # a concurrency block's size with no use seen yet (then twice the last block's most in use)
_PEAKS_KEPT = 4096  # concurrency counters whose last use a process remembers (one per key: start over past it)
_RATE_S: dict[Window, float] = {"minute": MINUTE_S, "day": 86_400.0, "month": 30 * 86_400.0}

# (key, kind, field, delta, window, at, now): one adjustment to a charge added `at`, sent later with ADJUST
Return = tuple[str, str, str, float, Window, float, float]
Send = Callable[[list[Return], str], None]
# asks Redis, off the call's path, for new blocks on these charges' counters (amount 0: the call is admitted)
Renew = Callable[[Sequence[Charge], float], None]


def grant_size(charge: Charge) -> float:
    """The block to ask for on `charge`'s counter; 0 when its limit is too small to block."""
    if charge.window == "concurrent":
        slots = min(math.floor(charge.limit / SHARE), MAX_SLOTS)
        return float(slots) if slots >= 2 else 0.0
    size = charge.limit / SHARE
    rate_s = _RATE_S.get(charge.window)
    if rate_s is not None:
        size = min(size, charge.limit / rate_s / RATE_SHARE)
    return size if size > 0 and size >= 2 * charge.amount else 0.0


@dataclass(slots=True, eq=False)
class Block:
    """A granted slice of one counter, held by this process."""

    key: str  # the Redis key it was counted in
    window: Window
    at: float  # grant time (wall clock): its minute bucket, its period
    limit: float
    left: float  # allowance not yet admitted (concurrency: free slots)
    until: float  # no admission from it after this (wall clock)
    used: float  # the shared counter after the grant, this block excluded
    granted: float
    lease: str = ""  # concurrency: the slots are members "<lease>:<i>"
    slots: list[int] = field(default_factory=list)  # concurrency: free slot numbers
    peak: int = 0  # concurrency: the most slots in use at once
    live: bool = True

    def usage(self) -> float:
        return self.used + self.granted - self.left

    def takes(self, charge: Charge, now: float) -> bool:
        if not self.live or now >= self.until or charge.limit != self.limit:
            return False
        return bool(self.slots) if self.window == "concurrent" else self.left >= charge.amount

    def due(self, now: float) -> bool:
        """Past half its time or spent past half: time to ask for the next one."""
        return now >= self.at + RENEW_S or self.left < self.granted / 2


# A block admission's hold on each of its charges: (block, slot number; -1 when not concurrency)
Hold = tuple[Block, int]


class Blocks:
    """The blocks of one `RedisLimits`: local admissions, grants to install, and what goes back."""

    def __init__(self, key: Callable[[str, Window, float], str], send: Send, renew: Renew | None = None) -> None:
        self._key = key
        self._send = send  # queues adjustments for Redis (not awaited on any call's path)
        self._renew = renew  # None: a block is replaced only by an exact admission, once it is due
        self._blocks: dict[str, Block] = {}
        self._held: dict[str, list[Hold]] = {}  # reservation id → its holds
        self._asking: dict[str, float] = {}  # key → when a call went to ask Redis for its block
        self._peaks: dict[str, int] = {}  # concurrency key → the most slots its last retired block had in use
        self._ids = itertools.count()
        self._prefix = "b" + secrets.token_hex(6) + ":"
        self.local = 0  # admissions made from blocks
        self.granted = 0  # blocks granted

    def take(self, charges: Sequence[Charge], now: float) -> Admission | None:
        """Admit from this process's blocks if every charge fits in one; None: go to Redis."""
        blocks = []
        due = False
        for c in charges:
            b = self._blocks.get(self._key(c.counter, c.window, now))
            if b is None or not b.takes(c, now):
                return None
            due = due or b.due(now)
            blocks.append(b)
        holds: list[Hold] = []
        for c, b in zip(charges, blocks, strict=True):
            if b.window == "concurrent":
                holds.append((b, b.slots.pop()))
                b.left -= 1
                b.peak = max(b.peak, int(b.granted - b.left))
            else:
                holds.append((b, -1))
                b.left -= c.amount
        rid = f"{self._prefix}{next(self._ids)}"
        self._held[rid] = holds
        self.local += 1
        if due and self._renew is not None:
            self._renew(charges, now)  # (wants() lets one call at a time ask for a counter's block)
        return Admission(Reservation(rid, now, tuple(charges)), None, None, tuple([b.usage() for b in blocks]))

    def wants(self, charges: Sequence[Charge], keys: Sequence[str], now: float) -> list[float]:
        """For an admission going to Redis: the block to ask for on each counter (0: none)."""
        out = []
        for c, k in zip(charges, keys, strict=True):
            b = self._blocks.get(k)
            fresh = b is not None and b.takes(c, now) and not b.due(now)
            if fresh or self._asking.get(k, -ASKING_S) > now - ASKING_S:
                out.append(0.0)  # (one call at a time asks: calls meanwhile go exact, without a block)
                continue
            want = grant_size(c)
            if want and c.window == "concurrent":
                used = b.peak if b is not None else self._peaks.get(k, 0)  # the counter's last block
                if b is not None and b.left < b.granted / 2:
                    used = max(used, int(b.granted))  # spent past half now: double it (a burst grows fast)
                want = min(want, float(max(MIN_SLOTS, 2 * used)))
            if want:
                self._asking[k] = now
            out.append(want)
        return out

    def unask(self, keys: Sequence[str], wants: Sequence[float]) -> None:
        """The admission that asked for these blocks was refused or failed: another call may ask."""
        for k, want in zip(keys, wants, strict=True):
            if want:
                self._asking.pop(k, None)

    def install(
        self,
        charges: Sequence[Charge],
        keys: Sequence[str],
        wants: Sequence[float],
        grants: Sequence[float],
        *,
        used: Sequence[float],
        lease: str,
        now: float,
    ) -> None:
        """Blocks granted with an admission: each replaces (and returns) the counter's block it was asked for."""
        for c, k, want, got, u in zip(charges, keys, wants, grants, used, strict=True):
            if not want:
                continue
            self._asking.pop(k, None)
            old = self._blocks.pop(k, None)
            if old is not None:
                self._retire(old)
            if got <= 0:
                continue
            until = now + HOLD_S
            end = period_end(c.window, now)
            if end is not None:
                until = min(until, now + end)
            b = Block(k, c.window, now, c.limit, got, until, u, got)
            if c.window == "concurrent":
                b.lease, b.slots = lease, list(range(int(got), 0, -1))
            self._blocks[k] = b
            self.granted += 1
            asyncio.get_running_loop().call_later(HOLD_S, self._expire, b)

    def settle(self, reservation: Reservation, actual: Sequence[float], now: float) -> bool:
        """Give a block admission's estimate back to its blocks, less what it cost. False: not one."""
        holds = self._held.pop(reservation.id, None)
        if holds is None:
            return False
        back: list[Return] = []
        for c, amount, (b, slot) in zip(reservation.charges, actual, holds, strict=True):
            if b.window == "concurrent":
                if b.live:
                    b.slots.append(slot)
                    b.left += 1
                else:
                    back.append((b.key, "c", f"{b.lease}:{slot}", 0.0, b.window, b.at, now))
            elif b.live:
                b.left += c.amount - amount
            elif amount != c.amount and (b.window != "minute" or live(second(b.at), now)):
                back.append(_give_back(b, amount - c.amount, now))
        if back:
            self._send(back, f"settling {reservation.id}")
        return True

    def close(self) -> None:
        """Return every block (on shutdown)."""
        for b in list(self._blocks.values()):
            self._retire(b)
        self._blocks.clear()

    def _expire(self, b: Block) -> None:
        if self._blocks.get(b.key) is b:
            del self._blocks[b.key]
            self._retire(b)

    def _retire(self, b: Block) -> None:
        """Stop admitting from `b` and send back what it has left (its free slots, for concurrency)."""
        if not b.live:
            return
        b.live = False
        back: list[Return]
        if b.window == "concurrent":  # every free slot in one adjustment: "<lease>|<i>,<j>,..."
            if len(self._peaks) >= _PEAKS_KEPT:
                self._peaks.clear()
            self._peaks[b.key] = b.peak
            slots = ",".join(map(str, b.slots))
            back = [(b.key, "s", f"{b.lease}|{slots}", 0.0, b.window, b.at, b.until)] if slots else []
            b.slots = []
        elif b.left:  # (a minute block's bucket stays live long after its HOLD_S)
            back = [_give_back(b, -b.left, b.until)]
        else:
            back = []
        if back:
            self._send(back, f"returning a block of {b.key}")


def _give_back(b: Block, delta: float, now: float) -> Return:
    minute = b.window == "minute"
    return (b.key, "m" if minute else "p", str(second(b.at)) if minute else "", delta, b.window, b.at, now)
