"""Narrow storage interfaces, one per capability, and the rows they carry.

Stores are synchronous and thread-safe: the request path never calls them directly. It reads from
memory, and the few store calls it needs (a key cache miss) run in a worker thread; traces reach
`TraceStore.append_traces` from the trace writer's own thread. Every backend passes one contract
suite (tests/test_store_contract.py).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Literal, Protocol

from keel.types import Span, TraceRecord


@dataclass(frozen=True, slots=True)
class TenantRow:
    name: str
    created_at: float
    regions: tuple[str, ...] | None = None  # data residency: provider regions allowed; None = any


@dataclass(frozen=True, slots=True)
class KeyRow:
    id: str
    tenant: str
    key_hash: str  # sha256 hex of the key; the key itself is never stored
    prefix: str  # first characters, to recognise a key in listings
    created_at: float
    name: str | None = None
    user: str | None = None
    models: tuple[str, ...] | None = None  # aliases this key may use; None = all
    revoked_at: float | None = None
    priority: int = 0  # its calls' priority in a saturated target's wait queue (higher first)
    max_priority: int = 0  # the most an `x-keel-priority` header may ask for


@dataclass(frozen=True, slots=True)
class LimitOverride:
    """Limits set for one tenant or key, replacing the configured defaults kind by kind."""

    scope: str  # "tenant" | "key"
    subject: str  # the tenant name or the key id
    limits: dict[str, float]  # kind (rpm, usd_month, ...) → limit
    on_store_error: str | None  # tenants only: "open" | "closed" when Redis is unreachable; None = the default
    updated_at: float


@dataclass(frozen=True, slots=True)
class TraceQuery:
    """A bounded time window plus optional equality filters. Newest first."""

    since: float
    until: float
    tenant: str | None = None
    key_id: str | None = None
    user: str | None = None
    feature: str | None = None
    session: str | None = None
    alias: str | None = None
    status: str | None = None
    limit: int = 50


@dataclass(frozen=True, slots=True)
class UsageQuery:
    """Usage from rollups over a bounded window, grouped by one dimension.

    `by`: tenant, key, user, feature, alias, provider, model, prompt_version, status, session, or all (one row).
    Totals (`grain` None) cover [since, until) widened to whole minutes; a series covers it widened
    to whole `grain` buckets. Sessions are whole sessions seen in the window (first/last seen).
    """

    since: float
    until: float
    by: str = "tenant"
    grain: str | None = None  # minute | hour | day: one row per bucket and group
    tenant: str | None = None
    limit: int = 100  # totals: the most groups returned, costliest first


@dataclass(frozen=True, slots=True)
class UsageRow:
    group: str | None  # the value of the `by` dimension; None when calls had none
    bucket: int | None  # a series' bucket start (unix seconds, UTC); None for totals
    calls: int
    errors: int  # status error or partial
    input_tokens: int
    cached_input_tokens: int
    cache_write_tokens: int
    output_tokens: int
    reasoning_tokens: int
    cost_usd: float
    latency_avg_ms: float | None
    latency_p50_ms: float | None  # from the histogram: within one bucket's width (x√2)
    latency_p95_ms: float | None
    ttft_avg_ms: float | None
    cache_lookups: int  # calls eligible for the cache
    cache_hits: int  # served from it: exact, semantic or stale
    cache_saved_usd: float
    fallbacks: int  # served by anything but the primary target
    first_seen: float | None = None  # sessions only
    last_seen: float | None = None


class Migrator(Protocol):
    def migrate(self) -> list[str]:
        """Apply pending numbered migrations; return the names applied."""
        ...


class KeyStore(Protocol):
    def create_tenant(self, name: str, regions: tuple[str, ...] | None = None) -> TenantRow:
        """Raise ValueError if it exists, or if `regions` is empty (use None for any region)."""
        ...

    def list_tenants(self) -> list[TenantRow]: ...

    def get_tenant(self, name: str) -> TenantRow | None: ...

    def set_tenant_regions(self, name: str, regions: tuple[str, ...] | None) -> TenantRow | None:
        """Restrict a tenant to `regions` (None: any region); None if no such tenant.

        Raise ValueError if `regions` is empty. Marks the tenant changed for `tenants_changed_since`.
        """
        ...

    def tenants_changed_since(self, since: float) -> list[tuple[str, float]]:
        """(name, updated_at) for tenants created or changed at or after `since`."""
        ...

    def create_key(self, row: KeyRow) -> None: ...

    def list_keys(self, tenant: str | None = None) -> list[KeyRow]: ...

    def find_key(self, key_hash: str) -> KeyRow | None: ...

    def revoke_key(self, key_id: str, at: float) -> KeyRow | None:
        """Mark revoked (idempotent); None if no such key."""
        ...

    def revoked_since(self, since: float) -> list[tuple[str, float]]:
        """(key_hash, revoked_at) for keys revoked at or after `since`."""
        ...


class UnstorableRecords(ValueError):
    """`append_traces` refused a batch for what a record holds (a value out of a column's range, a
    constraint), not because the store is away: the same records would be refused again."""


class TraceStore(Protocol):
    def append_traces(self, records: Sequence[TraceRecord]) -> None:
        """Insert in one transaction, with the usage rollups of the records actually inserted.

        Idempotent by record id, so a retried batch never duplicates rows nor counts twice. Text a
        backend cannot hold is made storable first (keel.store.storable). Raises `UnstorableRecords`
        (or another ValueError or TypeError) when a record is refused for its content; any other
        exception means the store could not take the batch now.
        """
        ...

    def list_traces(self, query: TraceQuery) -> list[TraceRecord]: ...

    def get_trace(self, trace_id: str) -> TraceRecord | None: ...

    def count_traces(self, since: float, until: float) -> int: ...

    def usage(self, query: UsageQuery) -> list[UsageRow]:
        """Read from rollups only, which `append_traces` keeps in its transaction, counting each
        record once. Totals: costliest group first; series: by bucket, then costliest."""
        ...


@dataclass(frozen=True, slots=True)
class BreakerPolicy:
    failures: int = 5  # consecutive failures that open the breaker
    error_rate: float = 0.5  # or this share of failures among the last `window` calls...
    window: int = 20
    min_calls: int = 10  # ...once at least this many were seen
    cooldown_s: float = 30.0  # open → half-open (one probe) after this long


@dataclass(frozen=True, slots=True)
class BreakerState:
    target: str
    state: str  # closed | open | half_open
    consecutive_failures: int
    recent_calls: int
    recent_failures: int
    opened_at: float | None


class Permit(IntEnum):
    """A breaker's answer to `allow`; false only when the call may not go."""

    refused = 0
    probe = 1  # half-open: this call is the one probe, so it gets one attempt, not the retries
    closed = 2


class BreakerStore(Protocol):
    """Circuit breakers per target: closed → open → half-open (one probe) → closed.

    Async because the shared backend is one Redis round trip per call; the memory backend serves
    one process. Both implement the same state machine and pass one contract suite.
    """

    async def allow(self, target: str, now: float) -> Permit:
        """May a call go to `target` now? In half-open, `probe` for exactly one call at a time."""
        ...

    async def record(self, target: str, ok: bool, now: float) -> str:
        """Record an outcome; return the state after it."""
        ...

    async def record_many(self, outcomes: Sequence[tuple[str, bool, float]]) -> list[str]:
        """Record (target, ok, now) outcomes in order, as `record` each; in one round trip where shared."""
        ...

    async def states(self) -> list[BreakerState]: ...

    async def aclose(self) -> None: ...


Window = Literal["minute", "day", "month", "total", "concurrent"]


@dataclass(frozen=True, slots=True)
class Charge:
    """What one call asks of one counter: e.g. 1 request of tenant=acme's rpm, or $0.02 of its usd_month."""

    counter: str  # scope and kind, e.g. "tenant=acme|usd_month"
    window: Window  # minute: sliding 60 s; day/month: UTC calendar period; total: forever; concurrent: in flight
    limit: float
    amount: float


@dataclass(frozen=True, slots=True)
class Reservation:
    id: str  # also the concurrency lease id
    at: float  # when it was admitted (wall clock): settles adjust the buckets it was added to
    charges: tuple[Charge, ...]


@dataclass(frozen=True, slots=True)
class Admission:
    reservation: Reservation | None  # None: refused
    refused: int | None  # index of the first charge that did not fit
    retry_after: float | None  # seconds until it would fit; None if waiting cannot help (a total budget)
    used: tuple[float, ...]  # each counter's usage after admission (at refusal: before), for soft thresholds


class LimitStoreUnavailable(Exception):
    """The shared counter store cannot be reached: `reserve` (or `usage`) could not count this call.

    Raised quickly, never after a long wait. The limits stage applies the tenant's choice: serve
    uncounted (fail open) or refuse (fail closed). `settle` and `release` never raise it.
    """


class LimitStore(Protocol):
    """Counters for rate limits, quotas, budgets and concurrency. Admission is all or nothing.

    One atomic operation per call (one Lua script on Redis): either every charge fits under its
    limit and all are added, or none is. `settle` replaces each reserved amount with the actual one
    and ends concurrency leases; `release` undoes a reservation entirely (the call failed).
    Concurrency leases expire on their own after `lease_s`, so a crashed process leaks nothing.
    """

    async def reserve(self, charges: Sequence[Charge], now: float) -> Admission: ...

    async def settle(self, reservation: Reservation, actual: Sequence[float], now: float) -> None: ...

    async def release(self, reservation: Reservation, now: float) -> None: ...

    async def usage(self, counters: Sequence[tuple[str, Window]], now: float) -> list[float]: ...

    async def aclose(self) -> None: ...


class UnknownSubject(ValueError):
    """Limits were set for a tenant or key id that does not exist."""


class LimitConfigStore(Protocol):
    """Per-tenant and per-key limit overrides, and the ledger that sends each soft-limit alert once."""

    def set_limits(
        self, scope: str, subject: str, limits: Mapping[str, float], on_store_error: str | None
    ) -> LimitOverride:
        """Create or replace the override of a tenant (scope "tenant") or a key id (scope "key").

        Raise ValueError naming the problem: an unknown scope, kind or fail mode, a limit out of
        range, nothing to set, a fail mode on a key; UnknownSubject (a ValueError) if no such tenant or key.
        """
        ...

    def clear_limits(self, scope: str, subject: str) -> bool:
        """Remove an override; False if there was none."""
        ...

    def list_limits(self) -> list[LimitOverride]:
        """Every override, by scope then subject."""
        ...

    def claim_alert(self, counter: str, period: str, threshold: float, at: float) -> bool:
        """Record that an alert for this crossing is being sent. True only for the first claimer, across processes."""
        ...

    def flip_alert(self, key: str, firing: bool, at: float) -> bool:
        """Set an alert rule's state for one scope value (`key`); True only if this call changed it.

        Absent counts as not firing. Across processes, exactly one caller sees each change, so only it
        sends the webhook. Turning it on records `at` as the episode's start (`alert_states`).
        """
        ...

    def alert_states(self) -> dict[str, float]:
        """Every key currently firing → when its episode started."""
        ...


@dataclass(frozen=True, slots=True)
class DeletedTraces:
    """What one bounded delete removed: how many rows, the blob keys they referenced, their sessions, their ids."""

    rows: int
    blobs: tuple[str, ...] = ()
    sessions: tuple[str, ...] = ()
    ids: tuple[str, ...] = ()  # the deleted traces' ids: their spans go next


class TraceDeletion(Protocol):
    """Deleting raw traces in bounded batches (retention, purges) and what hangs off them.

    Each call is one short statement touching at most `limit` rows, so the trace writer is never held
    up behind one giant delete; callers loop until fewer than `limit` rows came back.
    """

    def delete_traces(
        self,
        *,
        limit: int,
        tenant: str | None = None,
        user: str | None = None,
        before: float | None = None,
        exclude: Sequence[str] = (),
    ) -> DeletedTraces:
        """Delete up to `limit` traces of `tenant` (and of `user` within it), started before `before`.

        With `tenant` None: traces of any tenant not in `exclude` (calls without a tenant included).
        """
        ...

    def delete_rollups(self, tenant: str, user: str | None = None, sessions: Sequence[str] = ()) -> int:
        """A whole tenant's usage rollups (user None); else the user's own rollup rows (dimension
        `user`) and the rows of `sessions`. Returns the rows deleted."""
        ...

    def trace_ids_present(self, ids: Sequence[str]) -> set[str]:
        """Which of `ids` have a trace row (the orphan-blob sweep asks)."""
        ...

    def delete_tenant(self, name: str) -> dict[str, int]:
        """Delete a tenant's keys, limit overrides and the tenant itself; counts per kind."""
        ...


class BlobStore(Protocol):
    """Large payloads by key: a directory (file://) or an S3-compatible bucket (s3://).

    Synchronous and thread-safe, like the SQL stores: the trace writer's thread writes, admin paths
    read and delete from worker threads. `put` replaces; `delete` of a missing key is not an error.
    """

    url: str

    def put(self, key: str, data: bytes) -> None: ...

    def get(self, key: str) -> bytes | None: ...

    def delete(self, keys: Sequence[str]) -> int:
        """Delete `keys`; returns how many existed (S3: how many were asked, it does not say)."""
        ...

    def list(self, prefix: str = "") -> Iterator[tuple[str, float]]:
        """(key, last modified, unix seconds) of every blob under `prefix`."""
        ...

    def close(self) -> None: ...


class SpanStore(Protocol):
    """A trace's child spans (`Span`), beside its call row. Written by the trace writer's thread in
    batches; read per trace; deleted with their trace rows, by tenant, and by age (retention)."""

    def append_spans(self, spans: Sequence[Span]) -> None:
        """Insert `spans`, skipping any (trace_id, span_id) already stored, in one transaction.
        Raises UnstorableRecords when their content is refused."""
        ...

    def trace_spans(self, trace_id: str) -> list[Span]:
        """The spans of one trace, in start order."""
        ...

    def delete_trace_spans(self, trace_ids: Sequence[str]) -> int:
        """Delete every span of `trace_ids` (their rows were just deleted); the spans deleted."""
        ...

    def delete_spans(
        self, *, limit: int, tenant: str | None = None, before: float | None = None, exclude: Sequence[str] = ()
    ) -> int:
        """Delete up to `limit` spans of `tenant` started before `before` (either may be None, not both);
        with `tenant` None, spans of any tenant not in `exclude`. Returns the spans deleted."""
        ...


class Store(KeyStore, TraceStore, TraceDeletion, LimitConfigStore, Migrator, SpanStore, Protocol):
    url: str

    def close(self) -> None: ...


# ---- caches (the cache stage; keel/cache.py) ------------------------------------------------------


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


@dataclass(frozen=True, slots=True)
class VectorHit:
    key: str  # the CacheStore key of the answer this vector stands for
    similarity: float  # cosine similarity, in [-1, 1]


class VectorIndex(Protocol):
    """Nearest-neighbour search over cached requests' embeddings: memory, SQLite or PostgreSQL+pgvector.

    Vectors are unit-length float sequences. A search only ever compares vectors with the same
    (tenant, partition, model): the partition is the cache stage's hash of everything but the last
    user turn (alias, system prompt, tools, conversation prefix, parameters) and `model` names the
    embedding model and its version, so vectors of different models never meet. `nearest` returns
    the most similar live vector (stale_until > now) with similarity ≥ `min_similarity`, else None.
    """

    async def add(
        self,
        tenant: str,
        partition: str,
        model: str,
        key: str,
        vector: Sequence[float],
        stale_until: float,
        user: str | None = None,
    ) -> None: ...

    async def nearest(
        self, tenant: str, partition: str, model: str, vector: Sequence[float], min_similarity: float, now: float
    ) -> VectorHit | None: ...

    async def purge(self, tenant: str, user: str | None = None) -> int: ...

    async def count(self, tenant: str | None = None) -> int: ...

    async def aclose(self) -> None: ...
