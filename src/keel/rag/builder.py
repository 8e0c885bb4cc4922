"""The RAG index's builder: the `Index` (offered to ingestion and the edges), the `retrieve` slot, the
`Reranker` (grading through the composed pipeline), embedding models by alias through the gateway's
providers, a worker that drops builds a re-index retired (or that failed) a grace after they ended, and
one that makes the database index of builds this process searched there."""

from __future__ import annotations

import time

from keel.gateway.builder import GatewayParts
from keel.gateway.capability import Context, Contribution, Pipeline, Worker
from keel.providers.base import Provider
from keel.rag.collections import FreshnessDefaults
from keel.rag.index import ENDED_GRACE_S, Index
from keel.rag.index_models import Models
from keel.rag.rerank import Reranker
from keel.rag.retrieve import KeyGroups, RetrieveStage
from keel.traces.otel import SpanExporter
from keel.traces.writer import TraceWriter
from keel.types import Span, Target

ENDED_EVERY_S = 60.0
INDEXES_EVERY_S = 30.0  # how soon a build searched in the database gets its index there (pgvector's HNSW)


def build(ctx: Context) -> Contribution:
    parts = ctx.get(GatewayParts)
    config = ctx.config

    def alias(name: str) -> tuple[Provider, Target] | None:
        found = config.models.get(name)
        if found is None or not found.targets:
            return None
        t = found.targets[0]
        return parts.providers[t.provider], Target(t.provider, t.model)

    index = Index(ctx.store, Models(alias), url=ctx.store.url, in_process_mb=config.rag.in_process_mb)
    ctx.add(index)
    groups = KeyGroups(ctx.store, index.run)
    ctx.add(groups)
    reranker = Reranker(lambda: ctx.get(Pipeline).handler, ctx.store, index.run, config.traces.store_payloads)
    ctx.add(reranker)
    defaults = FreshnessDefaults(ctx.store, index.run)
    ctx.add(defaults)
    writer, exporter = ctx.get(TraceWriter), ctx.find(SpanExporter)

    def put_span(span: Span) -> None:
        writer.put_span(span)
        if exporter is not None:
            exporter.put_span(span)

    async def drop_ended() -> None:
        await index.drop_ended(time.time() - ENDED_GRACE_S)

    async def make_indexes() -> None:
        await index.make_database_indexes()

    return Contribution(
        [("retrieve", RetrieveStage(index, groups, defaults, put_span, reranker))],
        workers=[
            Worker("rag-ended-builds", drop_ended, every_s=ENDED_EVERY_S),
            Worker("rag-database-indexes", make_indexes, every_s=INDEXES_EVERY_S),
        ],
        close=[index.aclose],
    )
