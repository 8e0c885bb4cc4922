"""Map a storage URL to its backend. The only module (besides runtime) that names concrete stores."""

from __future__ import annotations

from keel.store.protocols import (
    BlobStore,
    BreakerPolicy,
    BreakerStore,
    CacheStore,
    JobWakeups,
    LimitStore,
    Store,
    VectorIndex,
)


def open_store(url: str, *, migrate: bool = True) -> Store:
    """Open (and by default migrate) the store at `url`: sqlite:///path or postgresql://..."""
    store: Store
    if url.startswith("sqlite:///"):
        from keel.store.sqlite import SqliteStore

        store = SqliteStore(url)
    elif url.startswith(("postgresql://", "postgres://")):
        from keel.store.postgres import PostgresStore

        store = PostgresStore(url)
    else:
        raise ValueError(f"unsupported storage URL {url!r}: use sqlite:///path or postgresql://...")
    if migrate:
        store.migrate()
    return store


def open_job_wakeups(url: str) -> JobWakeups | None:
    """News of jobs queued by other processes on the store at `url`: LISTEN on PostgreSQL; None on
    SQLite (its workers poll)."""
    if url.startswith(("postgresql://", "postgres://")):
        from keel.store.postgres.wakeups import PgWakeups

        return PgWakeups(url)
    return None


def open_breakers(redis_url: str | None, policy: BreakerPolicy) -> BreakerStore:
    """Circuit breakers shared through Redis at `redis_url` (redis://...), else in this process only."""
    if redis_url:
        from keel.store.redis.breakers import RedisBreakers

        return RedisBreakers(redis_url, policy)
    from keel.store.memory.counters import MemoryBreakers

    return MemoryBreakers(policy)


def open_limits(redis_url: str | None, *, blocks: bool = False) -> LimitStore:
    """Limit counters shared through Redis at `redis_url` (redis://...), else in this process only.
    `blocks`: Redis counters admit from per-process blocks of large limits (keel.store.redis.blocks)."""
    if redis_url:
        from keel.store.redis.limits import RedisLimits

        return RedisLimits(redis_url, blocks=blocks)
    from keel.store.memory.counters import MemoryLimits

    return MemoryLimits()


def open_cache(url: str, *, max_entries: int) -> CacheStore:
    """The exact-match cache at `url`: memory://, sqlite:///path or redis://... (rediss://, unix:// too)."""
    if url == "memory://":
        from keel.store.memory.cache import MemoryCache

        return MemoryCache(max_entries)
    if url.startswith("sqlite:///"):
        from keel.store.sqlite.cache import SqliteCache

        return SqliteCache(url, max_entries)
    if url.startswith(("redis://", "rediss://", "unix://")):
        from keel.store.redis.cache import RedisCache

        return RedisCache(url, max_entries)
    raise ValueError(f"unsupported cache URL {url!r}: use memory://, sqlite:///path or redis://host:port/db")


def open_vectors(url: str, *, max_entries: int) -> VectorIndex:
    """The semantic cache's vector index at `url`: memory://, sqlite:///path or postgresql://... (pgvector)."""
    if url == "memory://":
        from keel.store.memory.vectors import MemoryVectors

        return MemoryVectors(max_entries)
    if url.startswith("sqlite:///"):
        from keel.store.sqlite.vectors import SqliteVectors

        return SqliteVectors(url, max_entries)
    if url.startswith(("postgresql://", "postgres://")):
        from keel.store.postgres.vectors import PgVectors

        return PgVectors(url, max_entries)
    raise ValueError(
        f"unsupported vector index URL {url!r}: use memory://, sqlite:///path or postgresql://... (with pgvector)"
    )


def open_blobs(
    url: str,
    *,
    endpoint: str | None = None,
    region: str = "us-east-1",
    access_key_id: str | None = None,
    secret_access_key: str | None = None,
) -> BlobStore:
    """The blob store at `url`: file:///path (a directory) or s3://bucket/prefix (S3-compatible)."""
    if url.startswith("file://"):
        from keel.store.blobs.fs import FileBlobs

        return FileBlobs(url)
    if url.startswith("s3://"):
        from keel.store.blobs.s3 import S3Blobs

        if not access_key_id or not secret_access_key:
            raise ValueError("an s3:// blob store needs traces.s3.access_key_id and secret_access_key")
        return S3Blobs(
            url, endpoint=endpoint, region=region, access_key_id=access_key_id, secret_access_key=secret_access_key
        )
    raise ValueError(f"unsupported blob store URL {url!r}: use file:///path or s3://bucket/prefix")
