"""Virtual keys: issue, hash, revoke, and resolve a bearer key to a Principal without SQL per call.

Keys are 256-bit random tokens, so a plain SHA-256 is the right stored form (a slow KDF protects
low-entropy passwords, not these). The Authenticator caches resolved keys (with their tenant's
regions) in memory; a poller asks the store every `poll` seconds for revocations and changed
tenants, so a revoked key is refused, and a tenant's new regions apply, in every process that
shares the store within one poll interval (≤ 1 s), while the hot path stays free of database reads.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
import time
from dataclasses import asdict, dataclass
from typing import Any

from keel.errors import AuthError
from keel.store.protocols import KeyRow, KeyStore, TenantRow
from keel.types import Principal

KEY_PREFIX = "sk-keel-"
log = logging.getLogger("keel.keys")


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class IssuedKey:
    key: str  # shown once, never stored
    row: KeyRow


def issue_key(
    store: KeyStore,
    tenant: str,
    *,
    name: str | None = None,
    user: str | None = None,
    models: tuple[str, ...] | None = None,
    priority: int = 0,
    max_priority: int | None = None,
) -> IssuedKey:
    ceiling = priority if max_priority is None else max_priority
    if ceiling < priority:
        raise ValueError(f"max_priority {ceiling} is below the key's own priority {priority}")
    if store.get_tenant(tenant) is None:
        raise ValueError(f"no tenant '{tenant}': create it first with `keel tenants create {tenant}`")
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    row = KeyRow(
        id="key_" + secrets.token_hex(8),
        tenant=tenant,
        key_hash=hash_key(key),
        prefix=key[: len(KEY_PREFIX) + 4],
        created_at=time.time(),
        name=name,
        user=user,
        models=models,
        priority=priority,
        max_priority=ceiling,
    )
    store.create_key(row)
    return IssuedKey(key, row)


def key_view(k: KeyRow) -> dict[str, Any]:
    """A key as shown to people and programs: never the key, not even its hash."""
    out = asdict(k)
    del out["key_hash"]
    return out


@dataclass(slots=True)
class _Entry:
    principal: Principal | None  # None: known bad key
    models: tuple[str, ...] | None
    expires: float


class Authenticator:
    """Bearer key → Principal, from memory; misses read the store in a worker thread."""

    NEGATIVE_TTL = 1.0
    SKEW = 5.0  # change times come from other processes' clocks: poll this far back

    def __init__(self, store: KeyStore, *, ttl: float = 30.0, poll: float = 0.5) -> None:
        self._store = store
        self._ttl = ttl
        self._poll = poll
        self._cache: dict[str, _Entry] = {}
        self._digests: dict[str, str] = {}  # key -> its hash: hashing on every call is measurable
        self._cursor = time.time() - self.SKEW
        self._tenant_cursor = self._cursor
        self._tenant_seen: dict[str, float] = {}  # tenant → updated_at already acted on
        self._generation = 0  # bumped when tenants change: a lookup begun before must not be cached

    async def resolve(self, key: str | None) -> tuple[Principal, tuple[str, ...] | None]:
        """The principal and the aliases its key may use (None: all). Raise AuthError."""
        if not key:
            raise AuthError("Missing API key. Send it as 'Authorization: Bearer <key>'.")
        digest = self._digests.get(key)
        if digest is None:
            if len(self._digests) > 100_000:
                self._digests.clear()
            digest = self._digests[key] = hash_key(key)
        entry = self._cache.get(digest)
        now = time.monotonic()
        if entry is None or entry.expires < now:
            generation = self._generation
            row, tenant = await asyncio.to_thread(self._lookup, digest)
            entry = self._entry(row, tenant, now)
            if generation == self._generation:
                if len(self._cache) > 100_000:
                    self._cache.clear()
                self._cache[digest] = entry
        if entry.principal is None:
            raise AuthError("Incorrect API key provided, or the key was revoked.")
        return entry.principal, entry.models

    def _lookup(self, digest: str) -> tuple[KeyRow | None, TenantRow | None]:
        """The key and its tenant, in one worker-thread call."""
        row = self._store.find_key(digest)
        if row is None or row.revoked_at is not None:
            return row, None
        return row, self._store.get_tenant(row.tenant)

    def _entry(self, row: KeyRow | None, tenant: TenantRow | None, now: float) -> _Entry:
        if row is None or row.revoked_at is not None or tenant is None:
            return _Entry(None, None, now + self.NEGATIVE_TTL)
        principal = Principal(
            tenant=row.tenant,
            key_id=row.id,
            key_name=row.name,
            user=row.user,
            regions=tenant.regions,
            priority=row.priority,
            max_priority=row.max_priority,
        )
        return _Entry(principal, row.models, now + self._ttl)

    def refresh_revocations(self) -> int:
        """Drop revoked keys, and keys of changed tenants, from the cache (blocking; run in a thread).

        Returns how many entries were dropped.
        """
        dropped = 0
        for digest, revoked_at in self._store.revoked_since(self._cursor):
            if self._cache.pop(digest, None) is not None:
                dropped += 1
            self._cursor = max(self._cursor, revoked_at - self.SKEW)
        return dropped + self._refresh_tenants()

    def _refresh_tenants(self) -> int:
        """Drop cached keys of tenants changed since the last poll (each change acted on once)."""
        changed = set()
        for name, updated_at in self._store.tenants_changed_since(self._tenant_cursor):
            if self._tenant_seen.get(name) != updated_at:
                self._tenant_seen[name] = updated_at
                changed.add(name)
            self._tenant_cursor = max(self._tenant_cursor, updated_at - self.SKEW)
        self._tenant_seen = {n: at for n, at in self._tenant_seen.items() if at >= self._tenant_cursor}
        if not changed:
            return 0
        self._generation += 1
        stale = [d for d, e in self._cache.copy().items() if e.principal and e.principal.tenant in changed]
        for digest in stale:
            self._cache.pop(digest, None)
        return len(stale)

    async def run(self) -> None:
        """Poll for revocations and tenant changes until cancelled."""
        while True:
            await asyncio.sleep(self._poll)
            try:
                await asyncio.to_thread(self.refresh_revocations)
            except Exception:  # a flaky store must not stop the poller
                log.exception("revocation poll failed; will retry")
