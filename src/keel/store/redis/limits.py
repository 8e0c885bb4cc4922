"""Limit counters shared by every gateway process through Redis: one Lua call per admission.

The same arithmetic as `MemoryLimits` (store/counters.py). `reserve` is one EVALSHA that checks every
charge and adds them all only if all fit; `settle` and `release` queue their adjustments, and one
EVALSHA applies every adjustment that queued meanwhile (shared under load), sent "later": it waits up
to 5 ms to go out in the same write as the next admission (keel.store.redis_client), so a call costs
one round trip, not two. Keys are
`{prefix}{counter}:{period}`, with the window's name for windows without a calendar period:
- minute: a hash second → amount; the script sums fields within (now − 60, now], deletes older ones
  (so it holds at most ~61 fields) and sets EXPIRE 120 s;
- day / month / total: a string holding a float (`…:d20261123`, `…:m202611`, `…:all`); day and month
  keys expire an hour after their period ends (a settle may still land there), total never;
- concurrent: a sorted set of lease ids scored by expiry (admitted at + lease_s).
The script does its float arithmetic in Lua (doubles, as Python) and stores and returns values as
"%.17g" strings, since Redis would truncate a Lua number to an integer. A refusal returns the refused
minute counter's buckets, and Python computes retry_after with the shared arithmetic. Times are the
caller's `now` (never Redis TIME) and TTLs are relative, so processes sharing a Redis must pass
wall-clock time. Counters within one call are distinct (the limit book guarantees it). Redis Cluster
is not supported (the keys of one call may live in different slots).

Failures: when Redis is unreachable (or answers an error) `reserve` and `usage` raise
`LimitStoreUnavailable` quickly (0.5 s without a reply, 1 s to connect, then Redis is left alone for a
second, raising at once), and the limits stage applies the tenant's fail-open or fail-closed choice.
Commands are pipelined on a connection or two (keel.store.redis_client), so a burst does not queue
for a connection; the 0.5 s runs from each command's write. `settle` and `release` log (at most every
10 s) and return; they try Redis even in that second, since a settlement skipped would hold a
concurrency lease for `lease_s`. A connection that breaks is retried once, at once, to heal
connections after a Redis restart; should the break come after the script ran, the script runs
twice: a reservation then counts twice (the safe side), but a settlement or release applies its
delta twice (counters under-count until the window passes).
"""

from __future__ import annotations

import asyncio
import logging
import math
import secrets
import time
from collections.abc import Sequence

from keel.store.counters import MINUTE_S, demand, live, minute_usage, period_end, period_id, retry_after, second
from keel.store.protocols import Admission, Charge, LimitStoreUnavailable, Reservation, Window
from keel.store.redis.blocks import Blocks, Return
from keel.store.redis.client import Redis, RedisError, Script

log = logging.getLogger("keel.store.redis_limits")

_TIMEOUT_S = 0.5
_CONNECT_TIMEOUT_S = 1.0  # a loaded event loop opening many connections at once needs headroom
_HOLD_OFF_S = 1.0  # after a failure, raise at once without trying Redis for this long
_WARN_EVERY_S = 10.0
_CONNECTIONS = 2  # commands are pipelined: one connection carries thousands of Lua calls per second
_MINUTE_TTL_S = 2 * MINUTE_S
_PERIOD_GRACE_S = 3600.0  # day/month keys outlive their period by this much
_KIND: dict[Window, str] = {"minute": "m", "concurrent": "c", "day": "p", "month": "p", "total": "p"}

_LUA_FMT = "local function fmt(x) return string.format('%.17g', x) end\n"

# KEYS[i]: charge i's key. ARGV: now, now_s (its whole second), lease id, lease expiry, then for each
# charge i: ARGV[5i..5i+4] = kind (m|c|p), limit, amount, ttl_s (0: none), block wanted (0: none).
# Returns {1, 0, used after..., block granted...} or {0, refused (1-based), used before...,
# [second, amount]... of a refused minute charge}. A block is granted (added to the counter with the
# call's amount; for c, that many members "<lease>:<i>") only if the counter stays under half its limit.
# Amount 0 asks for blocks alone (a renewal, keel.store.redis.blocks): for c, the lease itself is not added.
_RESERVE = Script(
    _LUA_FMT
    + """
local now_s, n = tonumber(ARGV[2]), #KEYS
local used, refused = {}, 0
for i = 1, n do
  local key, kind, u = KEYS[i], ARGV[5 * i], 0
  if kind == 'm' then
    local h, dead = redis.call('HGETALL', key), {}
    for j = 1, #h, 2 do
      if tonumber(h[j]) <= now_s - 60 then dead[#dead + 1] = h[j] else u = u + tonumber(h[j + 1]) end
    end
    if #dead > 0 then redis.call('HDEL', key, unpack(dead)) end
  elseif kind == 'c' then
    redis.call('ZREMRANGEBYSCORE', key, '-inf', '(' .. ARGV[1])
    u = redis.call('ZCARD', key)
  else
    u = tonumber(redis.call('GET', key) or '0')
  end
  used[i] = u
  if refused == 0 and u + tonumber(ARGV[5 * i + 2]) > tonumber(ARGV[5 * i + 1]) + 1e-9 then refused = i end
end
if refused > 0 then
  local out = {0, refused}
  for i = 1, n do out[#out + 1] = fmt(used[i]) end
  if ARGV[5 * refused] == 'm' then
    local h = redis.call('HGETALL', KEYS[refused])
    for j = 1, #h do out[#out + 1] = h[j] end
  end
  return out
end
local out, grants = {1, 0}, {}
for i = 1, n do
  local key, kind, amount, ttl = KEYS[i], ARGV[5 * i], tonumber(ARGV[5 * i + 2]), ARGV[5 * i + 3]
  local want, grant = tonumber(ARGV[5 * i + 4]), 0
  if want > 0 and used[i] + amount + want <= tonumber(ARGV[5 * i + 1]) / 2 then grant = want end
  if kind == 'm' then
    redis.call('HSET', key, ARGV[2], fmt(tonumber(redis.call('HGET', key, ARGV[2]) or '0') + amount + grant))
    redis.call('EXPIRE', key, ttl)
  elseif kind == 'c' then
    if amount > 0 then redis.call('ZADD', key, ARGV[4], ARGV[3]) end
    for j = 1, grant do redis.call('ZADD', key, ARGV[4], ARGV[3] .. ':' .. j) end
    redis.call('EXPIRE', key, ttl)
  elseif ttl == '0' then
    redis.call('SET', key, fmt(used[i] + amount + grant))
  else
    redis.call('SET', key, fmt(used[i] + amount + grant), 'EX', ttl)
  end
  out[#out + 1] = fmt(used[i] + amount)
  grants[i] = fmt(grant)
end
for i = 1, n do out[#out + 1] = grants[i] end
return out
"""
)

# KEYS[i]: a key to adjust. ARGV[4i-3..4i] = kind (m|c|s|p), field (a second, the lease id, or for s
# "<lease>|<i>,<j>,..."), delta, ttl_s (0: none). Adds delta (never below 0); c ends the lease; s ends
# a concurrency block's free slots "<lease>:<i>" (one adjustment, not one per slot).
_ADJUST = Script(
    _LUA_FMT
    + """
for i = 1, #KEYS do
  local key, kind, field, ttl = KEYS[i], ARGV[4 * i - 3], ARGV[4 * i - 2], ARGV[4 * i]
  local delta = tonumber(ARGV[4 * i - 1])
  if kind == 'c' then
    redis.call('ZREM', key, field)
  elseif kind == 's' then
    local lease, slots = string.match(field, '^(.*)|([%d,]*)$')
    local members = {}
    for n in string.gmatch(slots, '%d+') do members[#members + 1] = lease .. ':' .. n end
    if #members > 0 then redis.call('ZREM', key, unpack(members)) end
  elseif kind == 'm' then
    local v = tonumber(redis.call('HGET', key, field) or '0') + delta
    if v > 0 then
      redis.call('HSET', key, field, fmt(v))
      redis.call('EXPIRE', key, ttl)
    else
      redis.call('HDEL', key, field)
    end
  else
    local v = math.max(0, tonumber(redis.call('GET', key) or '0') + delta)
    if ttl == '0' then redis.call('SET', key, fmt(v)) else redis.call('SET', key, fmt(v), 'EX', ttl) end
  end
end
return #KEYS
"""
)


_BATCH = 64  # settlements per EVALSHA: under load they share round trips


class RedisLimits:
    def __init__(self, url: str, *, prefix: str = "keel:limit:", lease_s: float = 900.0, blocks: bool = False) -> None:
        """`blocks`: admit from blocks of large counters' allowance held in this process (keel.store.redis.blocks)."""
        self._prefix = prefix
        self._lease_s = lease_s
        self._lease_ttl = math.ceil(lease_s) + MINUTE_S
        self._client = connect(url)
        self._adjustments: list[tuple[list[str], list[str], str, asyncio.Future[None]]] = []
        self._adjuster: asyncio.Task[None] | None = None
        self._down_until = 0.0
        self._warned_at = float("-inf")
        self.blocks = Blocks(self._key, self._give_back, self._renew) if blocks else None
        self._renewals: set[asyncio.Task[None]] = set()
        self.renewed = 0  # renewals answered (blocks asked for in the background, granted or not)

    def _key(self, counter: str, window: Window, at: float) -> str:
        return f"{self._prefix}{counter}:{period_id(window, at) or window}"

    def _ttl(self, window: Window, at: float, now: float) -> int | None:
        """Seconds the key of a charge admitted `at` should live from `now`: 0 forever, None already gone."""
        if window == "minute":
            return _MINUTE_TTL_S
        if window == "concurrent":
            return self._lease_ttl
        end = period_end(window, at)
        if end is None:
            return 0
        ttl = math.ceil(at + end - now + _PERIOD_GRACE_S)
        return ttl if ttl > 0 else None

    async def reserve(self, charges: Sequence[Charge], now: float) -> Admission:
        if not charges:
            return Admission(Reservation(secrets.token_hex(8), now, ()), None, None, ())
        blocks = self.blocks
        if blocks is not None and (local := blocks.take(charges, now)) is not None:
            return local
        lease = secrets.token_hex(8)
        if time.monotonic() < self._down_until:
            raise LimitStoreUnavailable("Redis was unreachable a moment ago")
        keys = [self._key(c.counter, c.window, now) for c in charges]
        wants = blocks.wants(charges, keys, now) if blocks is not None else [0.0] * len(charges)
        args = self._reserve_args(charges, [demand(c) for c in charges], wants, lease, now)
        try:
            out = await self._client.evalsha(_RESERVE, keys, args)
        except (RedisError, OSError) as exc:
            if blocks is not None:
                blocks.unask(keys, wants)
            self._failed(exc, "admissions follow each tenant's fail-open/closed choice")
            raise LimitStoreUnavailable(f"Redis is unreachable: {exc}") from exc
        n = len(charges)
        used = tuple(float(v) for v in out[2 : 2 + n])
        if out[0] == 1:
            if blocks is not None:
                grants = [float(v) for v in out[2 + n : 2 + 2 * n]]
                blocks.install(charges, keys, wants, grants, used=used, lease=lease, now=now)
            return Admission(Reservation(lease, now, tuple(charges)), None, None, used)
        if blocks is not None:
            blocks.unask(keys, wants)
        i, flat = int(out[1]) - 1, out[2 + n :]
        buckets = [(int(flat[j]), float(flat[j + 1])) for j in range(0, len(flat), 2)]
        return Admission(None, i, retry_after(charges[i], now, buckets), used)

    def _reserve_args(
        self, charges: Sequence[Charge], amounts: Sequence[float], wants: Sequence[float], lease: str, now: float
    ) -> list[str]:
        args = [repr(now), str(second(now)), lease, repr(now + self._lease_s)]
        for c, amount, want in zip(charges, amounts, wants, strict=True):
            args += [_KIND[c.window], repr(c.limit), repr(amount), str(self._ttl(c.window, now, now)), repr(want)]
        return args

    def _renew(self, charges: Sequence[Charge], now: float) -> None:
        """A call admitted from blocks found one due: ask for the next blocks in the background."""
        assert self.blocks is not None
        keys = [self._key(c.counter, c.window, now) for c in charges]
        wants = self.blocks.wants(charges, keys, now)
        asked = [i for i, want in enumerate(wants) if want]
        if not asked or time.monotonic() < self._down_until:
            self.blocks.unask(keys, wants)
            return
        task = asyncio.ensure_future(
            self._take_blocks([charges[i] for i in asked], [keys[i] for i in asked], [wants[i] for i in asked], now)
        )
        self._renewals.add(task)
        task.add_done_callback(self._renewals.discard)

    async def _take_blocks(self, charges: list[Charge], keys: list[str], wants: list[float], now: float) -> None:
        """One EVALSHA of the admission script charging nothing, asking only for blocks (sent later)."""
        assert self.blocks is not None
        lease = secrets.token_hex(8)
        args = self._reserve_args(charges, [0.0] * len(charges), wants, lease, now)
        try:
            out = await self._client.evalsha(_RESERVE, keys, args, later=True)
        except (RedisError, OSError) as exc:
            self.blocks.unask(keys, wants)
            self._failed(exc, "admissions follow each tenant's fail-open/closed choice")
            return
        n = len(charges)
        used = [float(v) for v in out[2 : 2 + n]]
        # refused (a counter already past its limit): no block, the old ones go back, calls go exact
        grants = [float(v) for v in out[2 + n : 2 + 2 * n]] if out[0] == 1 else [0.0] * n
        self.blocks.install(charges, keys, wants, grants, used=used, lease=lease, now=now)
        self.renewed += 1

    async def settle(self, reservation: Reservation, actual: Sequence[float], now: float) -> None:
        if self.settle_at_once(reservation, actual, now):
            return
        deltas = [amount - c.amount for c, amount in zip(reservation.charges, actual, strict=True)]
        await self._apply(reservation, deltas, now)

    def settle_at_once(self, reservation: Reservation, actual: Sequence[float], now: float) -> bool:
        """A call admitted from blocks settles in them (what goes to Redis is queued, not awaited)."""
        return self.blocks is not None and self.blocks.settle(reservation, actual, now)

    async def release(self, reservation: Reservation, now: float) -> None:
        if self.blocks is not None and self.blocks.settle(reservation, [0.0] * len(reservation.charges), now):
            return
        await self._apply(reservation, [-c.amount for c in reservation.charges], now)

    async def _apply(self, reservation: Reservation, deltas: Sequence[float], now: float) -> None:
        """Add each delta where its charge was added at admission, end the lease: one EVALSHA."""
        keys: list[str] = []
        args: list[str] = []
        at = reservation.at
        for c, delta in zip(reservation.charges, deltas, strict=True):
            if c.window == "concurrent":
                field = reservation.id
            elif not delta or (c.window == "minute" and not live(second(at), now)):
                continue  # nothing to change, or its bucket has left the window
            else:
                field = str(second(at)) if c.window == "minute" else ""
            ttl = self._ttl(c.window, at, now)
            if ttl is None:
                continue  # its period ended long ago: its key is gone
            keys.append(self._key(c.counter, c.window, at))
            args += [_KIND[c.window], field, repr(delta), str(ttl)]
        if keys:
            await self._queue(keys, args, reservation.id)

    def _queue(self, keys: list[str], args: list[str], label: str) -> asyncio.Future[None]:
        """Queue one adjustment for the next ADJUST call (sent later); its future is done once it was tried."""
        done = asyncio.get_running_loop().create_future()
        self._adjustments.append((keys, args, label, done))
        if self._adjuster is None or self._adjuster.done():
            self._adjuster = asyncio.ensure_future(self._adjust_batches())
        return done

    def _give_back(self, back: list[Return], label: str) -> None:
        """Blocks' remainders and the settlements of calls whose block went back: queued, never awaited."""
        keys: list[str] = []
        args: list[str] = []
        for key, kind, field, delta, window, at, now in back:
            ttl = self._ttl(window, at, now)
            if ttl is not None:
                keys.append(key)
                args += [kind, field, repr(delta), str(ttl)]
        if keys:
            self._queue(keys, args, label)

    async def _adjust_batches(self) -> None:
        """Run every settlement that queued meanwhile as one EVALSHA (the script loops over its keys)."""
        while self._adjustments:
            batch, self._adjustments = self._adjustments[:_BATCH], self._adjustments[_BATCH:]
            keys = [k for b in batch for k in b[0]]
            args = [a for b in batch for a in b[1]]
            try:
                await self._client.evalsha(_ADJUST, keys, args, later=True)
            except (RedisError, OSError) as exc:
                self._failed(exc, f"settling reservations {', '.join(b[2] for b in batch)} was lost")
            for b in batch:
                if not b[3].done():
                    b[3].set_result(None)

    async def usage(self, counters: Sequence[tuple[str, Window]], now: float) -> list[float]:
        commands: list[tuple[str, ...]] = []
        for counter, window in counters:
            key = self._key(counter, window, now)
            if window == "minute":
                commands.append(("HGETALL", key))
            elif window == "concurrent":
                commands.append(("ZCOUNT", key, repr(now), "+inf"))
            else:
                commands.append(("GET", key))
        try:
            rows = await self._client.pipeline(commands)
        except (RedisError, OSError) as exc:
            self._failed(exc, "usage is unknown")
            raise LimitStoreUnavailable(f"Redis is unreachable: {exc}") from exc
        return [_usage(window, row, now) for (_, window), row in zip(counters, rows, strict=True)]

    def _failed(self, exc: Exception, meanwhile: str) -> None:
        at = time.monotonic()
        self._down_until = at + _HOLD_OFF_S
        if at - self._warned_at >= _WARN_EVERY_S:
            self._warned_at = at
            log.warning("limits: Redis is unreachable or failing (%s); %s", exc, meanwhile)

    async def aclose(self) -> None:
        await asyncio.gather(*self._renewals, return_exceptions=True)
        if self.blocks is not None:
            self.blocks.close()
        if self._adjuster is not None:
            await self._adjuster
        await self._client.aclose()


def connect(url: str, *, decode: bool = True) -> Redis:
    """Keel's Redis client with the stores' timeouts, its connections shared within the event loop: the limit
    counters and the circuit breakers use the same ones (their settlements and reports ride with
    admissions); the response cache reads bytes (decode=False), so it has its own."""
    return Redis(
        url,
        decode=decode,
        connections=_CONNECTIONS,
        timeout_s=_TIMEOUT_S,
        connect_timeout_s=_CONNECT_TIMEOUT_S,
        shared=True,
    )


def _usage(window: Window, row: object, now: float) -> float:
    if window == "minute":
        assert isinstance(row, list)  # HGETALL: field, value, field, value...
        return minute_usage(((int(row[i]), float(row[i + 1])) for i in range(0, len(row), 2)), now)
    if window == "concurrent":
        assert isinstance(row, int)
        return float(row)
    return float(row) if isinstance(row, str) else 0.0
