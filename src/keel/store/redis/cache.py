"""Exact-match cache entries shared by every gateway process through Redis.

Keys live under a prefix (`keel:cache:` by default). An entry is one hash `{prefix}e:{id}` (value,
times, cost, user) that Redis expires at stale_until (TTL = stale_until − created_at: the caller's
clock, as elsewhere in Keel's Redis stores), with `id` = "{byte length of tenant}:{tenant}:{key}" so the
tenant reads back unambiguously. Recency is a logical clock (`{prefix}clock`, INCR): a global sorted
set `{prefix}lru` and one per tenant `{prefix}t:{tenant}` score each id by its last put or hit. `get`
and `put` are one Lua call each (EVALSHA); a put past `max_entries` evicts the lowest-scored ids in
the same call. Entries Redis expired leave their ids behind in the sets until eviction or a purge
reaches them (each put also clears up to two such ids from the oldest end), so `count` is an upper
bound. Redis Cluster is not supported (one call touches keys in several slots).

Failures never fail a request: `get` answers a miss, `put` drops the entry; both count the failure
in `failures`, log at most every 10 s and leave Redis alone for a second (answering at once) after
one. `purge` and `count` are admin operations and raise.
"""

from __future__ import annotations

import logging
import time

from keel.store.protocols import CacheEntry
from keel.store.redis.client import RedisError, Script
from keel.store.redis.limits import connect

log = logging.getLogger("keel.store.redis_cache")

_HOLD_OFF_S = 1.0
_WARN_EVERY_S = 10.0
_PURGE_BATCH = 500

# ARGV[1] the prefix. Deletes an entry and its ids in the sets.
_FORGET = """
local function forget(prefix, id)
  local colon = string.find(id, ':', 1, true)
  local tenant = string.sub(id, colon + 1, colon + tonumber(string.sub(id, 1, colon - 1)))
  local gone = redis.call('DEL', prefix .. 'e:' .. id)
  redis.call('ZREM', prefix .. 'lru', id)
  redis.call('ZREM', prefix .. 't:' .. tenant, id)
  return gone
end
"""

# KEYS: entry, lru, tenant set, clock. ARGV: id, now. Returns {v, c, x, s, k, u} or nil.
_GET = Script("""
local h = redis.call('HMGET', KEYS[1], 'v', 'c', 'x', 's', 'k', 'u')
if not h[1] or tonumber(h[4]) <= tonumber(ARGV[2]) then return false end
local t = redis.call('INCR', KEYS[4])
redis.call('ZADD', KEYS[2], t, ARGV[1])
redis.call('ZADD', KEYS[3], t, ARGV[1])
return h
""")

# KEYS: entry, lru, tenant set, clock. ARGV: prefix, id, value, created, expires, stale, cost ('' none),
# user ('' none, else '=' .. user), ttl_ms, max_entries. Returns how many entries it evicted.
_PUT = Script(
    _FORGET
    + """
local prefix, id = ARGV[1], ARGV[2]
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'v', ARGV[3], 'c', ARGV[4], 'x', ARGV[5], 's', ARGV[6])
if ARGV[7] ~= '' then redis.call('HSET', KEYS[1], 'k', ARGV[7]) end
if ARGV[8] ~= '' then redis.call('HSET', KEYS[1], 'u', string.sub(ARGV[8], 2)) end
redis.call('PEXPIRE', KEYS[1], ARGV[9])
local t = redis.call('INCR', KEYS[4])
redis.call('ZADD', KEYS[2], t, id)
redis.call('ZADD', KEYS[3], t, id)
for _, old in ipairs(redis.call('ZRANGE', KEYS[2], 0, 1)) do
  if redis.call('EXISTS', prefix .. 'e:' .. old) == 0 then forget(prefix, old) end
end
local over = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[10])
if over <= 0 then return 0 end
for _, old in ipairs(redis.call('ZRANGE', KEYS[2], 0, over - 1)) do forget(prefix, old) end
return over
"""
)

# ARGV: prefix, user ('' any, else '=' .. user), ids... Returns how many live entries it deleted.
_PURGE = Script(
    _FORGET
    + """
local prefix, n = ARGV[1], 0
for i = 3, #ARGV do
  local id = ARGV[i]
  if ARGV[2] == '' or redis.call('HGET', prefix .. 'e:' .. id, 'u') == string.sub(ARGV[2], 2) then
    n = n + forget(prefix, id)
  end
end
return n
"""
)


class RedisCache:
    def __init__(self, url: str, max_entries: int, *, prefix: str = "keel:cache:") -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self._max = max_entries
        self._prefix = prefix
        self._client = connect(url, decode=False)
        self.failures = 0  # gets answered as misses and puts dropped because Redis failed
        self._down_until = 0.0
        self._warned_at = float("-inf")

    def _keys(self, tenant: str, key: str) -> tuple[str, list[str]]:
        id_ = f"{len(tenant.encode())}:{tenant}:{key}"
        p = self._prefix
        return id_, [f"{p}e:{id_}", f"{p}lru", f"{p}t:{tenant}", f"{p}clock"]

    async def get(self, tenant: str, key: str, now: float) -> CacheEntry | None:
        if time.monotonic() < self._down_until:
            self.failures += 1
            return None
        id_, keys = self._keys(tenant, key)
        try:
            h = await self._client.evalsha(_GET, keys, (id_, repr(now)))
        except (RedisError, OSError) as exc:
            self._failed(exc, "lookups are misses")
            return None
        if not h:
            return None
        value, created, expires, stale, cost, user = h
        return CacheEntry(
            tenant,
            key,
            bytes(value),
            float(created),
            float(expires),
            float(stale),
            float(cost) if cost is not None else None,
            user.decode() if user is not None else None,
        )

    async def put(self, entry: CacheEntry) -> None:
        ttl_ms = int((entry.stale_until - entry.created_at) * 1000)
        if ttl_ms <= 0 or time.monotonic() < self._down_until:
            self.failures += ttl_ms > 0  # a dead-on-arrival entry is no failure
            return
        id_, keys = self._keys(entry.tenant, entry.key)
        args: list[str | bytes] = [
            self._prefix,
            id_,
            entry.value,
            repr(entry.created_at),
            repr(entry.expires_at),
            repr(entry.stale_until),
            repr(entry.cost_usd) if entry.cost_usd is not None else "",
            "=" + entry.user if entry.user is not None else "",
            str(ttl_ms),
            str(self._max),
        ]
        try:
            await self._client.evalsha(_PUT, keys, args)
        except (RedisError, OSError) as exc:
            self._failed(exc, "answers are not cached")

    def _failed(self, exc: Exception, meanwhile: str) -> None:
        self.failures += 1
        at = time.monotonic()
        self._down_until = at + _HOLD_OFF_S
        if at - self._warned_at >= _WARN_EVERY_S:
            self._warned_at = at
            log.warning("cache: Redis is unreachable or failing (%s); %s", exc, meanwhile)

    async def purge(self, tenant: str, user: str | None = None) -> int:
        ids: list[bytes] = []
        cursor: bytes = b"0"
        while True:
            cursor, flat = await self._client.execute(
                "ZSCAN", f"{self._prefix}t:{tenant}", cursor, "COUNT", _PURGE_BATCH
            )
            ids += flat[::2]  # member, score, member, score...
            if cursor == b"0":
                break
        who = "=" + user if user is not None else ""
        n = 0
        for i in range(0, len(ids), _PURGE_BATCH):
            args: list[str | bytes] = [self._prefix, who, *ids[i : i + _PURGE_BATCH]]
            n += int(await self._client.evalsha(_PURGE, (), args))
        return n

    async def count(self, tenant: str | None = None) -> int:
        key = f"{self._prefix}lru" if tenant is None else f"{self._prefix}t:{tenant}"
        return int(await self._client.execute("ZCARD", key))

    async def aclose(self) -> None:
        await self._client.aclose()
