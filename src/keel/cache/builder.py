"""The cache capability's builder: the cache slot, when any alias uses the cache; its store, and for
semantic matches, the vector index and the embedder."""

from __future__ import annotations

from keel.cache.policy import CachePolicy
from keel.cache.stage import CacheStage, TextEmbedder
from keel.config import LOCAL_THRESHOLDS, AliasCacheConfig, Config
from keel.embedding.text import AliasTextEmbedder, LocalTextEmbedder
from keel.errors import ConfigError, ConfigIssue
from keel.gateway.builder import GatewayParts
from keel.gateway.capability import Context, Contribution
from keel.providers.base import Provider
from keel.store.open import open_cache, open_vectors
from keel.types import Target


def build(ctx: Context) -> Contribution:
    stage = build_cache(ctx.config, ctx.get(GatewayParts).providers)
    if stage is None:
        return Contribution()
    ctx.add(stage)
    return Contribution([("cache", stage)], close=[stage.aclose])


def cache_urls(config: Config) -> tuple[str | None, str | None]:
    """(exact cache URL, vector index URL) as the gateway opens them; None where that part is off."""
    c = config.cache
    policies = [CachePolicy.resolve(c, a.cache) for a in config.models.values()]
    policies.append(CachePolicy.resolve(c, AliasCacheConfig()))
    if not any(p.enabled for p in policies):
        return None, None
    url = c.url or default_cache_url(config)
    if not any(p.semantic for p in policies):
        return url, None
    return url, c.semantic.vectors_url or (url if url.startswith("sqlite:///") else "memory://")


def build_cache(config: Config, providers: dict[str, Provider]) -> CacheStage | None:
    """The cache stage, when any alias uses the cache; its store, and for semantic matches, vectors."""
    c = config.cache
    policies = {alias: CachePolicy.resolve(c, a.cache) for alias, a in config.models.items()}
    default = CachePolicy.resolve(c, AliasCacheConfig())
    url, vectors_url = cache_urls(config)
    if url is None:
        return None
    store = open_cache(url, max_entries=c.max_entries)
    # in-process stores cannot hang; a file, Redis or PostgreSQL can, and the request must not wait on it
    local = url == "memory://" and vectors_url in (None, "memory://")
    read_timeout = None if local else c.read_timeout_ms / 1000
    if vectors_url is None:
        return CacheStage(store, policies, default, read_timeout=read_timeout)
    vectors = open_vectors(vectors_url, max_entries=c.max_entries)
    embedder: TextEmbedder
    if c.semantic.embedder in LOCAL_THRESHOLDS:
        from keel.embedding.model import LocalEmbedder, ModelNotInstalled

        runtime = "onnx-int8" if c.semantic.embedder == "local-int8" else "auto"
        try:
            embedder = LocalTextEmbedder(LocalEmbedder(runtime=runtime))
        except ModelNotInstalled as exc:
            fix = "install it as the message says, or set cache.semantic.embedder to an embeddings alias"
            raise ConfigError([ConfigIssue("cache.semantic.embedder", str(exc), fix)]) from None
    else:
        t = config.models[c.semantic.embedder].targets[0]
        embedder = AliasTextEmbedder(providers[t.provider], Target(t.provider, t.model))
    from keel.cache import pair

    return CacheStage(
        store,
        policies,
        default,
        vectors=vectors,
        embedder=embedder,
        judge=pair.adjusted if c.semantic.verify else None,
        search_margin=pair.MAX_BOOST,
        read_timeout=read_timeout,
    )


def default_cache_url(config: Config) -> str:
    """A file beside a SQLite storage (one process); Redis when configured (several); else memory."""
    storage = config.storage.url
    if config.redis.url:
        return config.redis.url
    if storage.startswith("sqlite:///"):
        path = storage.removeprefix("sqlite:///")
        stem = path[: -len(".db")] if path.endswith(".db") else path
        return f"sqlite:///{stem}-cache.db"
    return "memory://"
