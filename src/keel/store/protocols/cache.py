"""The exact-match cache: entries and the store the cache stage awaits."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class CacheEntry:
    """One cached answer (or embedding vector): opaque bytes under a key, within one tenant.

    Fresh until `expires_at`; after that it may still be served as a stale fallback until
    `stale_until` (≥ expires_at), when it is gone for good. Keys are digests made by the cache stage
    and already include the tenant; the tenant is also a column, so purges and bounds never need to
    parse keys.
    """

    tenant: str
    key: str
    value: bytes
    created_at: float  # unix seconds
    expires_at: float
    stale_until: float
    cost_usd: float | None = None  # what producing it cost: a hit saves this much
    user: str | None = None  # whose call produced it, for deleting one user's data


class CacheStore(Protocol):
    """Exact-match entries: memory, SQLite or Redis. Async: the request path awaits it directly.

    `get` returns an entry whose `stale_until` is still ahead of `now` (the caller tells fresh from
    stale), else None. `put` replaces any entry under the same (tenant, key). Each backend holds at
    most `max_entries` entries and evicts the least recently used past that. `purge` deletes a
    tenant's entries (or one user's within it) and says how many went.
    """

    async def get(self, tenant: str, key: str, now: float) -> CacheEntry | None: ...

    async def put(self, entry: CacheEntry) -> None: ...

    async def purge(self, tenant: str, user: str | None = None) -> int: ...

    async def count(self, tenant: str | None = None) -> int: ...

    async def aclose(self) -> None: ...
