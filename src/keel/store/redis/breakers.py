"""Circuit breakers shared by every gateway process through Redis.

The same state machine as `MemoryBreakers`, run as two Lua scripts so that `allow` and `record` are
each one atomic round trip (EVALSHA): concurrent callers in any process see one half-open probe.
Per target, one hash holds state, consecutive, opened_at, probe_at and `recent`, the last `window`
outcomes as a string of 0/1 (1 = failure); a set lists the targets for `states()`. Times are the
caller's `now` (never Redis TIME), so processes sharing a Redis must pass wall-clock time. Keys
expire after max(10 × cooldown, 1 day) without a record. A "closed" answer is reused for 0.25 s
(of the caller's time) without asking again, so a healthy target costs one round trip per process per
quarter second, not one per call; a breaker another process opens is seen that much later. Once the
answer is half that old, the call that uses it also asks again in the background (a read that takes no
probe slot, sent "later"), so a target in steady use is never waited on before its call.
Outcomes are recorded in batches (`record_many`: the outcomes that queued meanwhile, in order, one
EVALSHA per 64), sent "later": each batch waits up to 5 ms to go out in the same write as the next
admission or `allow` (keel.store.redis_client), so other processes see an outcome up to 5 ms later.

Fail-safe: a Redis outage must not become a total outage, so when Redis is unreachable `allow` says
yes and `record` answers "unknown", quickly (0.5 s without a reply, 1 s to connect, then Redis is left alone for a
second), with a warning at most every 10 s.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

from keel.store.protocols import BreakerPolicy, BreakerState, Permit
from keel.store.redis.client import RedisError, Script
from keel.store.redis.limits import connect

log = logging.getLogger("keel.store.redis")

_HOLD_OFF_S = 1.0  # after a failure, answer fail-safe without trying Redis for this long
_WARN_EVERY_S = 10.0
# A "closed" answer is reused for this long: one round trip per target per interval instead of per call.
# Another process opening the breaker is seen this much later; this process's own failures clear it.
_CLOSED_READ_S = 0.25

# KEYS[1] the target's hash. ARGV: now, cooldown_s, ttl_ms. Returns 2 (closed), 1 (allowed: a probe) or 0.
_ALLOW = Script("""
local h = redis.call('HMGET', KEYS[1], 'state', 'opened_at', 'probe_at')
local state = h[1]
if not state or state == 'closed' then return 2 end
local now, cooldown = tonumber(ARGV[1]), tonumber(ARGV[2])
if state == 'open' then
  if h[2] and now - tonumber(h[2]) < cooldown then return 0 end
  redis.call('HSET', KEYS[1], 'state', 'half_open', 'probe_at', ARGV[1])
else
  -- half-open: one probe at a time; a probe that never reported frees its slot after a cooldown
  if h[3] and now - tonumber(h[3]) < cooldown then return 0 end
  redis.call('HSET', KEYS[1], 'probe_at', ARGV[1])
end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
""")

# KEYS[1] the target's hash. Returns 2 (closed) or 0 (anything else: ask with _ALLOW). Changes nothing.
_READ = Script("""
local state = redis.call('HGET', KEYS[1], 'state')
if not state or state == 'closed' then return 2 end
return 0
""")

# KEYS[1] the target set, KEYS[1 + i] outcome i's hash. ARGV: failures, error_rate, window, min_calls,
# ttl_ms, then for each outcome i: ARGV[3i+3..3i+5] = target, ok (1/0), now. Applies the outcomes in
# order, as that many `record` calls would; returns each one's new state.
_RECORD = Script("""
local failures, rate, window, min_calls = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local ttl, out = ARGV[5], {}
for i = 1, #KEYS - 1 do
  local key, target, ok, now = KEYS[i + 1], ARGV[3 * i + 3], ARGV[3 * i + 4] == '1', ARGV[3 * i + 5]
  redis.call('SADD', KEYS[1], target)
  local h = redis.call('HMGET', key, 'state', 'consecutive', 'recent')
  local state = h[1] or 'closed'
  if state == 'half_open' then
    if ok then
      redis.call('DEL', key)
      redis.call('HSET', key, 'state', 'closed', 'consecutive', 0, 'recent', '')
      state = 'closed'
    else
      redis.call('HSET', key, 'state', 'open', 'opened_at', now)
      redis.call('HDEL', key, 'probe_at')
      state = 'open'
    end
    redis.call('PEXPIRE', key, ttl)
  elseif state ~= 'open' then  -- (an outcome while open is a straggler from before it opened: ignored)
    local recent = (h[3] or '') .. (ok and '0' or '1')
    if #recent > window then recent = string.sub(recent, #recent - window + 1) end
    local consecutive = 0
    if not ok then consecutive = tonumber(h[2] or '0') + 1 end
    local _, failed = string.gsub(recent, '1', '')
    if consecutive >= failures or (#recent >= min_calls and failed / #recent >= rate) then
      state = 'open'
      redis.call('HSET', key, 'opened_at', now)
    end
    redis.call('HSET', key, 'state', state, 'consecutive', consecutive, 'recent', recent)
    redis.call('PEXPIRE', key, ttl)
  end
  out[i] = state
end
redis.call('PEXPIRE', KEYS[1], ttl)
return out
""")

_BATCH = 64  # outcomes per EVALSHA


class RedisBreakers:
    def __init__(self, url: str, policy: BreakerPolicy, *, prefix: str = "keel:breaker:") -> None:
        self._policy = policy
        self._prefix = prefix
        self._targets_key = f"{prefix}targets"
        self._ttl_ms = str(int(max(10 * policy.cooldown_s, 86400.0) * 1000))
        self._client = connect(url)
        self._down_until = 0.0
        self._warned_at = float("-inf")
        self._closed_until: dict[str, float] = {}  # target → caller time until which "closed" is taken as read
        self._rereads: dict[str, asyncio.Task[None]] = {}  # target → its background read, while one runs

    def _key(self, target: str) -> str:
        return f"{self._prefix}t:{target}"

    async def allow(self, target: str, now: float) -> Permit:
        if time.monotonic() < self._down_until:
            return Permit.closed
        until = self._closed_until.get(target)
        if until is not None and now < until:
            if now >= until - _CLOSED_READ_S / 2 and (target not in self._rereads or self._rereads[target].done()):
                self._rereads[target] = asyncio.ensure_future(self._reread(target, now))
            return Permit.closed
        try:
            allowed = await self._client.evalsha(
                _ALLOW, (self._key(target),), (repr(now), repr(self._policy.cooldown_s), self._ttl_ms)
            )
        except (RedisError, OSError) as exc:
            self._failed(exc)
            return Permit.closed
        if allowed == 2:
            self._closed_until[target] = now + _CLOSED_READ_S
        return Permit(allowed)

    async def _reread(self, target: str, now: float) -> None:
        """Ask again, off the call's path, whether `target` is still closed: extends the reuse, or ends it."""
        try:
            state = await self._client.evalsha(_READ, (self._key(target),), (), later=True)
        except (RedisError, OSError) as exc:
            self._failed(exc)
            return
        finally:
            self._rereads.pop(target, None)
        if state != 2:
            self._closed_until.pop(target, None)  # the next call asks with _ALLOW (and may take the probe)
        elif target in self._closed_until:  # (a record that saw it open meanwhile removed it: stays removed)
            self._closed_until[target] = max(self._closed_until[target], now + _CLOSED_READ_S)

    async def record(self, target: str, ok: bool, now: float) -> str:
        return (await self.record_many(((target, ok, now),)))[0]

    async def record_many(self, outcomes: Sequence[tuple[str, bool, float]]) -> list[str]:
        """Outcomes in order, one EVALSHA per 64 of them."""
        states: list[str] = []
        p = self._policy
        for i in range(0, len(outcomes), _BATCH):
            batch = outcomes[i : i + _BATCH]
            if time.monotonic() < self._down_until:
                states += ["unknown"] * len(batch)
                continue
            keys = [self._targets_key, *(self._key(t) for t, _, _ in batch)]
            args: list[str | int] = [p.failures, repr(p.error_rate), p.window, p.min_calls, self._ttl_ms]
            for target, ok, now in batch:
                args += [target, "1" if ok else "0", repr(now)]
            try:
                got = await self._client.evalsha(_RECORD, keys, args, later=True)
            except (RedisError, OSError) as exc:
                self._failed(exc)
                states += ["unknown"] * len(batch)
                continue
            for (target, _, _), state in zip(batch, got, strict=True):
                if state != "closed":
                    self._closed_until.pop(target, None)  # this process saw it open: stop answering from the read
            states += got
        return states

    def _failed(self, exc: Exception) -> None:
        at = time.monotonic()
        self._down_until = at + _HOLD_OFF_S
        if at - self._warned_at >= _WARN_EVERY_S:
            self._warned_at = at
            log.warning("circuit breakers: Redis is unreachable (%s); letting calls through meanwhile", exc)

    async def states(self) -> list[BreakerState]:
        targets = sorted(await self._client.execute("SMEMBERS", self._targets_key))
        flat = await self._client.pipeline([("HGETALL", self._key(t)) for t in targets])
        rows = [dict(zip(f[::2], f[1::2], strict=True)) for f in flat]
        gone = [t for t, row in zip(targets, rows, strict=True) if not row]
        if gone:  # their hashes expired: forget them
            await self._client.execute("SREM", self._targets_key, *gone)
        return [_state(t, row) for t, row in zip(targets, rows, strict=True) if row]

    async def aclose(self) -> None:
        await asyncio.gather(*self._rereads.values(), return_exceptions=True)
        await self._client.aclose()


def _state(target: str, row: dict[str, str]) -> BreakerState:
    recent = row.get("recent", "")
    opened_at = row.get("opened_at")
    return BreakerState(
        target=target,
        state=row.get("state", "closed"),
        consecutive_failures=int(row.get("consecutive", "0")),
        recent_calls=len(recent),
        recent_failures=recent.count("1"),
        opened_at=float(opened_at) if opened_at is not None else None,
    )
