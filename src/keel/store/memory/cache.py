"""Exact-match cache entries in one process: a dict in least-recently-used order, bounded.

No method awaits anything inside, so each call is atomic on the event loop. Entries past
`stale_until` are dropped when a `get` meets them; the rest wait for the LRU bound.
"""

from __future__ import annotations

from collections import OrderedDict

from keel.store.protocols import CacheEntry


class MemoryCache:
    def __init__(self, max_entries: int) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self._max = max_entries
        self._entries: OrderedDict[tuple[str, str], CacheEntry] = OrderedDict()  # oldest use first

    async def get(self, tenant: str, key: str, now: float) -> CacheEntry | None:
        entry = self._entries.get((tenant, key))
        if entry is None:
            return None
        if entry.stale_until <= now:
            del self._entries[(tenant, key)]
            return None
        self._entries.move_to_end((tenant, key))
        return entry

    async def put(self, entry: CacheEntry) -> None:
        slot = (entry.tenant, entry.key)
        self._entries[slot] = entry
        self._entries.move_to_end(slot)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)

    async def purge(self, tenant: str, user: str | None = None) -> int:
        doomed = [slot for slot, e in self._entries.items() if e.tenant == tenant and (user is None or e.user == user)]
        for slot in doomed:
            del self._entries[slot]
        return len(doomed)

    async def count(self, tenant: str | None = None) -> int:
        if tenant is None:
            return len(self._entries)
        return sum(1 for t, _ in self._entries if t == tenant)

    async def aclose(self) -> None:
        return None
