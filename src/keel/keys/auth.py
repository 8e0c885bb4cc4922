"""Virtual keys: issue, hash, revoke, and resolve a bearer key to a Principal without SQL per call.

Keys are 256-bit random tokens, so a plain SHA-256 is the right stored form (a slow KDF protects
low-entropy passwords, not these). The Authenticator caches resolved keys (with their tenant's
regions) in memory; a poller asks the store every `poll` seconds for revocations and changed
tenants and applies them to the cache, so a revoked key is refused, and a tenant's new regions
apply, in every process that shares the store within one poll interval (≤ 1 s), while the hot path
stays free of database reads. A successful poll thus vouches for every cached entry as of its start.

A store outage never holds a request for more than milliseconds (README "A database outage").
Store reads run on the Authenticator's own threads, at most one per key at a time (concurrent
requests for one key share it); a key that failed is not read again for `HOLD_OFF_S`.
A cached key is served until `ttl`, refreshed in the background once past half of it. Past `ttl` a
request waits for its lookup only if that began within `STALE_WAIT_S`; otherwise, or if it fails,
the last known state answers ("stale") while the store vouched for it within `stale` seconds, so
revocations and tenant changes seen before the outage still apply. A key with no usable state
waits up to `LOOKUP_WAIT_S` (not at all while the store looks down), then gets 503 with
Retry-After: the key may be good, so it is never a 401.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import queue
import secrets
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import asdict, dataclass, replace
from typing import Any, TypeVar

from keel.errors import AuthError, Unavailable
from keel.store.protocols import KeyRow, KeyStore, TenantRow
from keel.types import Principal

KEY_PREFIX = "sk-keel-"
log = logging.getLogger("keel.keys")
T = TypeVar("T")

NEGATIVE_TTL_S = 1.0  # a key not found may be created a moment later
STALE_WAIT_S = 0.02  # the most a request holding a stale entry waits for the store
LOOKUP_WAIT_S = 2.0  # the most a request with no usable entry waits, while the store looks up
HOLD_OFF_S = 1.0  # a key whose lookup failed is not looked up again for this long
MAX_LOOKUPS = 1024  # keys being looked up (or held off) at once; past it, unknown keys get 503 at once
MAX_KEYS = 100_000  # cached keys; past it, known-bad ones go first
RETRY_AFTER_S = 1.0
LOG_EVERY_S = 30.0


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
    team: str | None = None,
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
        team=team,
    )
    store.create_key(row)
    return IssuedKey(key, row)


def key_view(k: KeyRow) -> dict[str, Any]:
    """A key as shown to people and programs: never the key, not even its hash."""
    out = asdict(k)
    del out["key_hash"]
    return out


@dataclass(frozen=True, slots=True)
class _Entry:
    principal: Principal | None  # None: a bad key (unknown, revoked, or its tenant gone)
    models: tuple[str, ...] | None
    fresh_until: float  # monotonic: served without asking the store until then
    refresh_at: float  # monotonic: a hit past it refreshes the entry in the background
    known_at: float  # monotonic: when the store said so


@dataclass(slots=True)
class _Lookup:
    started: float  # monotonic
    future: Future[_Entry]
    failed_at: float | None = None


@dataclass(slots=True)
class KeyStats:
    misses: int = 0  # requests that found no fresh entry (unknown or expired key): they asked the store
    stale: int = 0  # requests answered from the last known state: the store did not answer in time
    unavailable: int = 0  # requests refused with 503: no usable state and no answer from the store
    failed_lookups: int = 0
    failed_polls: int = 0


class _Threads:
    """A few daemon threads for store reads: one stuck on an unreachable database never holds up exit
    for longer than `close`'s timeout."""

    def __init__(self, size: int, name: str) -> None:
        self._size = size
        self._name = name
        self._jobs: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._started = 0
        self._threads: list[threading.Thread] = []

    def run(self, fn: Callable[[], T], future: Future[T]) -> None:
        """Run `fn` on a thread; its result or exception lands in `future`."""

        def job() -> None:
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn())
                except BaseException as exc:
                    future.set_exception(exc)

        if self._started < self._size:
            self._started += 1
            thread = threading.Thread(target=self._work, name=f"{self._name}-{self._started}", daemon=True)
            self._threads.append(thread)
            thread.start()
        self._jobs.put(job)

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            job()

    def close(self, timeout: float) -> bool:
        """Stop the threads once their queued reads are done, waiting up to `timeout` seconds for them:
        the store must not be closed under a read in progress (closing an SQLite connection another
        thread is using crashes the process). True when every thread has ended."""
        for _ in range(self._started):
            self._jobs.put(None)
        end = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, end - time.monotonic()))
        return not any(t.is_alive() for t in self._threads)


class Authenticator:
    """Bearer key → Principal, from memory; the store is read on the Authenticator's own threads."""

    SKEW = 5.0  # change times come from other processes' clocks: poll this far back

    def __init__(
        self, store: KeyStore, *, ttl: float = 30.0, poll: float = 0.5, stale: float = 3600.0, threads: int = 4
    ) -> None:
        self._store = store
        self._ttl = ttl
        self.poll_s = poll  # how often `poll` runs (the runtime's `revocations` worker)
        self._stale = stale
        self._down_after = max(2.0, 4 * poll)  # a poll running this long means the store is not answering
        self._cache: dict[str, _Entry] = {}
        self._digests: dict[str, str] = {}  # key -> its hash: hashing on every call is measurable
        self._lookups: dict[str, _Lookup] = {}  # digest -> its lookup in flight, or failed within HOLD_OFF_S
        self._threads = _Threads(threads, "keel-keys")
        self._poller = _Threads(1, "keel-key-poll")  # its own: lookups stuck on a dead store cannot starve it
        self._cursor = time.time() - self.SKEW
        self._tenant_cursor = self._cursor
        self._tenant_seen: dict[str, float] = {}  # tenant → updated_at already acted on
        self._generation = 0  # bumped when revocations or tenant changes apply: a lookup begun before is not cached
        self._vouched_at = time.monotonic()  # the last successful poll began then: every cached entry was current
        self._failing_since: float | None = None  # a store read failed then, and none has succeeded since
        self._polling_since: float | None = None
        self._warned_at = float("-inf")
        self.stats = KeyStats()

    async def resolve(self, key: str | None) -> tuple[Principal, tuple[str, ...] | None]:
        """The principal and the aliases its key may use (None: all). Raise AuthError, or Unavailable."""
        if not key:
            raise AuthError("Missing API key. Send it as 'Authorization: Bearer <key>'.")
        digest = self._digests.get(key)
        if digest is None:
            if len(self._digests) > 100_000:
                self._digests.clear()
            digest = self._digests[key] = hash_key(key)
        entry = self._cache.get(digest)
        if entry is None or time.monotonic() >= entry.refresh_at:  # refresh_at precedes fresh_until: one test here
            entry = await self._renew(digest, entry)
        if entry.principal is None:
            raise AuthError("Incorrect API key provided, or the key was revoked.")
        return entry.principal, entry.models

    async def _renew(self, digest: str, entry: _Entry | None) -> _Entry:
        """A key past its refresh time: still fresh, it is read again in the background (a key in steady use
        never waits for the store); expired or unknown, the store's answer if it comes in time; else the
        last known state while the store vouched for it within `stale` seconds."""
        now = time.monotonic()
        if entry is not None and now < entry.fresh_until:
            self._lookup(digest, now)
            return entry
        self.stats.misses += 1
        if entry is not None and now - max(entry.known_at, self._vouched_at) > self._stale:
            entry = None  # too old to trust
        lookup = self._lookup(digest, now)
        wait = STALE_WAIT_S if entry is not None else 0.0 if self.store_down(now) else LOOKUP_WAIT_S
        fresh = None if lookup is None else await _outcome(lookup, lookup.started + wait - now)
        if fresh is not None:
            return fresh
        if entry is not None:
            self.stats.stale += 1
            return entry
        self.stats.unavailable += 1
        raise Unavailable(
            "Keys cannot be checked right now (the key store is unreachable); retry shortly.", RETRY_AFTER_S
        )

    def _lookup(self, digest: str, now: float) -> _Lookup | None:
        """The lookup of `digest` under way (or failed within HOLD_OFF_S), else a new one; None if too many are."""
        lookup = self._lookups.get(digest)
        if lookup is not None and (lookup.failed_at is None or now - lookup.failed_at < HOLD_OFF_S):
            return lookup
        if len(self._lookups) >= MAX_LOOKUPS:
            self._lookups = {d: x for d, x in self._lookups.copy().items() if not x.future.done()}
            if len(self._lookups) >= MAX_LOOKUPS:
                return None
        lookup = _Lookup(now, Future())
        self._lookups[digest] = lookup
        generation = self._generation
        self._threads.run(lambda: self._read(digest, generation, lookup), lookup.future)
        return lookup

    def _read(self, digest: str, generation: int, lookup: _Lookup) -> _Entry:
        """The key and its tenant from the store (on a lookup thread), cached unless a change overtook it."""
        try:
            row = self._store.find_key(digest)
            tenant = None if row is None or row.revoked_at is not None else self._store.get_tenant(row.tenant)
        except Exception as exc:
            lookup.failed_at = time.monotonic()
            self.stats.failed_lookups += 1
            self._failed("key lookup", exc)
            raise
        self._reachable()
        entry = self._entry(row, tenant, time.monotonic())
        if generation == self._generation:
            self._remember(digest, entry)
        if self._lookups.get(digest) is lookup:
            self._lookups.pop(digest, None)
        return entry

    def _entry(self, row: KeyRow | None, tenant: TenantRow | None, now: float) -> _Entry:
        if row is None or row.revoked_at is not None or tenant is None:
            return _Entry(None, None, now + NEGATIVE_TTL_S, now + NEGATIVE_TTL_S, now)
        principal = Principal(
            tenant=row.tenant,
            key_id=row.id,
            key_name=row.name,
            user=row.user,
            regions=tenant.regions,
            priority=row.priority,
            max_priority=row.max_priority,
            team=None if row.team is None else f"{row.tenant}:{row.team}",
        )
        return _Entry(principal, row.models, now + self._ttl, now + self._ttl / 2, now)

    def _remember(self, digest: str, entry: _Entry) -> None:
        cache = self._cache
        if len(cache) >= MAX_KEYS and digest not in cache:
            for d in [d for d, e in cache.copy().items() if e.principal is None]:
                cache.pop(d, None)
            if len(cache) >= MAX_KEYS:
                log.warning("more than %d keys in use: the key cache starts over", MAX_KEYS)
                cache.clear()
        cache[digest] = entry

    def store_down(self, now: float | None = None) -> bool:
        """Does the store look unreachable: a failed read not yet followed by a good one, or a poll hanging?"""
        now = time.monotonic() if now is None else now
        polling = self._polling_since
        return self._failing_since is not None or (polling is not None and now - polling > self._down_after)

    def state_age(self) -> float:
        """Seconds since the store last vouched for the cached keys (its last successful poll began)."""
        return time.monotonic() - self._vouched_at

    def _failed(self, what: str, exc: Exception) -> None:
        now = time.monotonic()
        if self._failing_since is None:
            self._failing_since = now
        if now - self._warned_at >= LOG_EVERY_S:
            self._warned_at = now
            log.warning("key store unreachable (%s: %s: %s); serving keys from memory", what, type(exc).__name__, exc)

    def _reachable(self) -> None:
        since, self._failing_since = self._failing_since, None
        if since is not None:
            log.warning("key store reachable again after %.1f s", time.monotonic() - since)

    # ---- the poller

    def refresh_revocations(self) -> int:
        """Apply revocations and tenant changes to the cache (blocking; run in a thread).

        Returns how many cached entries changed.
        """
        started = self._polling_since = time.monotonic()
        try:
            revoked = self._store.revoked_since(self._cursor)
            tenants = self._store.tenants_changed_since(self._tenant_cursor)
            new = {name for name, at in tenants if self._tenant_seen.get(name) != at}
            rows = {name: self._store.get_tenant(name) for name in new}
        except Exception as exc:
            self.stats.failed_polls += 1
            self._failed("revocation poll", exc)
            raise
        finally:
            self._polling_since = None
        self._reachable()
        changed = self._revoke(revoked) + self._retenant(tenants, rows)
        self._vouched_at = started
        return changed

    def _revoke(self, revoked: list[tuple[str, float]]) -> int:
        """Cached keys now revoked become known-bad entries (refused, outage or not)."""
        now, count, racing = time.monotonic(), 0, False
        for digest, revoked_at in revoked:
            entry = self._cache.get(digest)
            if entry is not None and entry.principal is not None:
                self._cache[digest] = _Entry(None, None, now + self._ttl, now + self._ttl, now)
                count += 1
            racing = racing or digest in self._lookups  # a lookup under way may have read it before the revocation
            self._cursor = max(self._cursor, revoked_at - self.SKEW)
        if count or racing:
            self._generation += 1
        return count

    def _retenant(self, tenants: list[tuple[str, float]], rows: dict[str, TenantRow | None]) -> int:
        """Cached keys of changed tenants take their tenant's new regions (or turn bad if it is gone)."""
        for name, updated_at in tenants:
            if name in rows:
                self._tenant_seen[name] = updated_at
            self._tenant_cursor = max(self._tenant_cursor, updated_at - self.SKEW)
        self._tenant_seen = {n: at for n, at in self._tenant_seen.items() if at >= self._tenant_cursor}
        if not rows:
            return 0
        self._generation += 1
        now, count = time.monotonic(), 0
        for digest, e in self._cache.copy().items():
            if e.principal is None or e.principal.tenant not in rows:
                continue
            row = rows[e.principal.tenant]
            if row is None:
                self._cache[digest] = _Entry(None, None, now + NEGATIVE_TTL_S, now + NEGATIVE_TTL_S, now)
            else:
                self._cache[digest] = replace(e, principal=replace(e.principal, regions=row.regions))
            count += 1
        return count

    async def poll(self) -> None:
        """One poll for revocations and tenant changes (every `poll_s`); a failing store is counted, not raised."""
        done: Future[int] = Future()
        self._poller.run(self.refresh_revocations, done)
        with contextlib.suppress(Exception):  # counted and logged (at most every LOG_EVERY_S) by the poll
            await asyncio.wrap_future(done)

    async def aclose(self) -> None:
        """Close off the event loop: `close` waits for a read in progress (the store closes after this)."""
        await asyncio.to_thread(self.close)

    def close(self, timeout: float = 5.0) -> None:
        """Stop the lookup and poll threads, waiting for a read in progress (up to `timeout` seconds)."""
        end = time.monotonic() + timeout
        ended = self._threads.close(timeout) & self._poller.close(max(0.0, end - time.monotonic()))
        if not ended:
            log.warning("a key lookup still runs after %.0f s; closing the store under it", timeout)


async def _outcome(lookup: _Lookup, wait: float) -> _Entry | None:
    """The lookup's entry if it has one or gets one within `wait` seconds; None if it fails or takes longer."""
    future = lookup.future
    if not future.done():
        if wait <= 0:
            return None
        try:
            await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(future)), wait)
        except Exception:  # the wait ran out, or the lookup failed: both leave the caller to its fallback
            return None
    return None if future.exception() is not None else future.result()
