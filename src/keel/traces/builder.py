"""The traces capability's builder: the trace slot, its writer and exporters, and the retention sweep."""

from __future__ import annotations

import asyncio
import logging
import time

from keel.config import Config
from keel.gateway.capability import AuditTrail, Context, Contribution, CredentialScrub, Worker
from keel.store.open import open_blobs
from keel.store.protocols import BlobStore, Store
from keel.traces.genai import upstreams
from keel.traces.metrics import Metrics
from keel.traces.otel import SpanExporter
from keel.traces.redaction import Redactor
from keel.traces.retention import RetentionPolicy, sweep
from keel.traces.stage import Export, TraceStage
from keel.traces.writer import TraceWriter

log = logging.getLogger("keel.runtime")


def build(ctx: Context) -> Contribution:
    config, store = ctx.config, ctx.store
    redactor = Redactor.from_config(config)
    t = config.traces
    blobs = blobs_from(config)
    writer = TraceWriter(
        store,
        queue_size=t.queue_size,
        batch_size=t.batch_size,
        flush_interval=t.flush_interval_ms / 1000,
        spill_dir=t.spill_dir,
        scrub=redactor.scrub,
        blobs=blobs,
        blob_threshold=t.blob_threshold_bytes,
        deadletter_max_bytes=t.deadletter_max_bytes,
        stall_after=t.stall_after_s,
        spans=store,
        scrub_span=redactor.scrub_span,
    )
    exporter = SpanExporter(config.otel, upstreams(config), redactor=redactor) if config.otel.enabled else None
    metrics = Metrics(tenant_label=config.metrics.tenant_label) if config.metrics.enabled else None
    consumers: list[Export] = [metrics.observe] if metrics is not None else []
    consumers += [exporter.put] if exporter is not None else []
    stage = TraceStage(writer, consumers, max_response_chars=t.max_response_chars)
    for part in (redactor, writer, stage, exporter, metrics):
        if part is not None:
            ctx.add(part)
    ctx.add(redactor.credentials, as_=CredentialScrub)
    ctx.add(blobs, as_=BlobStore)
    starts = [writer.start] + ([exporter.start] if exporter is not None else [])

    async def close() -> None:
        await asyncio.to_thread(writer.close)
        if exporter is not None:
            await asyncio.to_thread(exporter.close)  # sends what is queued, within its timeout
        blobs.close()

    policy = RetentionPolicy.from_config(config.retention)
    every = config.retention.sweep_every_s
    retention = Worker("retention", lambda: _sweep(store, blobs, policy, ctx), every, first_s=min(every, 60.0))
    return Contribution([("trace", stage)], workers=[retention], start=starts, close=[close])


async def _sweep(store: Store, blobs: BlobStore, policy: RetentionPolicy, ctx: Context) -> None:
    """Old traces and orphan blobs leave, off the request path (in a thread); a flaky store is retried next time.
    A sweep that deleted something is an audit entry (`retention.sweep`, its counts)."""
    try:
        report = await asyncio.to_thread(sweep, store, blobs, policy, time.time())
    except Exception:
        log.exception("retention sweep failed; will retry")
        return
    if report.traces or report.orphan_blobs or report.responses:
        r = report
        log.info(
            "retention: deleted %d traces, %d blobs, %d orphan blobs, %d stored responses",
            *(r.traces, r.blobs, r.orphan_blobs, r.responses),
        )
        trail = ctx.find(AuditTrail)  # type: ignore[type-abstract]  # audit builds after traces
        if trail is not None:
            counts = {"traces": r.traces, "spans": r.spans, "blobs": r.blobs, "orphan_blobs": r.orphan_blobs,
                      "responses": r.responses, "traces_by_tenant": r.by_tenant}  # fmt: skip
            try:
                await asyncio.to_thread(trail, "system:retention", "retention.sweep", None, tenant=None, result=counts)
            except Exception:
                log.exception("could not record the retention sweep in the audit log")


def blobs_from(config: Config) -> BlobStore:
    """The blob store for large trace payloads: `traces.blobs_url`, else a directory beside the database."""
    t = config.traces
    url = t.blobs_url or default_blobs_url(config)
    s3 = t.s3
    return open_blobs(
        url,
        endpoint=s3.endpoint,
        region=s3.region,
        access_key_id=s3.access_key_id,
        secret_access_key=s3.secret_access_key,
    )


def default_blobs_url(config: Config) -> str:
    """<db stem>-blobs beside a SQLite file; .keel/blobs otherwise (set an s3:// URL for several hosts)."""
    storage = config.storage.url
    if storage.startswith("sqlite:///") and storage != "sqlite:///:memory:":
        path = storage.removeprefix("sqlite:///")
        return f"file://{path[: -len('.db')] if path.endswith('.db') else path}-blobs"
    return "file://.keel/blobs"
