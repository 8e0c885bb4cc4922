"""Retention: old raw traces swept away; the bounded deletes a purge (keel.tenancy.deletion) reuses.

Traces leave in bounded batches (`batch_size` rows per DELETE, a short pause between), so neither a
sweep nor a purge ever holds the trace writer up behind one giant statement; each batch's payload
blobs are deleted right after their rows (rows first: a row never points at a deleted blob, and a
blob left behind by a failure is an orphan the next sweep finds). Retention keeps the rollups, so
usage and cost over any window stay answerable. A purge also deletes rollups: a whole tenant's, or a
user's own rows (dimension `user`) and sessions. A trace's child spans go right after its row (by the
ids each batch deleted); a sweep then deletes spans older than the cut-off by their own start (spans
of traces without a row, or left behind by a crash between the two deletes), and a tenant purge
deletes all of the tenant's. Stored Responses API responses (`previous_response_id` state) are
raw content too: they follow the same cut-offs, and a purge deletes the tenant's or the user's. Store
calls block: `sweep` runs in a thread.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from keel.config import RetentionConfig
from keel.store.protocols import BlobStore, ResponseStore, SpanStore, TraceDeletion
from keel.traces.writer import BLOB_PREFIX, trace_id_of

log = logging.getLogger("keel.retention")
DAY = 86400.0


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    default_days: float | None  # None: keep forever
    tenants: dict[str, float | None]  # per-tenant days, replacing the default
    batch_size: int = 1000
    pause_s: float = 0.05
    orphan_grace_s: float = 3600.0

    @classmethod
    def from_config(cls, c: RetentionConfig) -> RetentionPolicy:
        tenants = {name: t.traces_days for name, t in c.tenants.items()}
        return cls(c.traces_days, tenants, c.batch_size, c.pause_ms / 1000, c.orphan_grace_s)

    @property
    def deletes_traces(self) -> bool:
        return self.default_days is not None or any(d is not None for d in self.tenants.values())


@dataclass(slots=True)
class SweepReport:
    traces: int = 0
    blobs: int = 0
    orphan_blobs: int = 0
    by_tenant: dict[str, int] = field(default_factory=dict)  # "*": every tenant on the default
    spans: int = 0
    responses: int = 0  # stored Responses API responses


@dataclass(slots=True)
class _Deleted:
    rows: int = 0
    blobs: int = 0
    sessions: set[str] = field(default_factory=set)
    spans: int = 0


class SweepStore(TraceDeletion, SpanStore, ResponseStore, Protocol):
    """What a sweep needs of the store."""


def delete_batches(
    store: SweepStore,
    blobs: BlobStore | None,
    *,
    batch_size: int,
    pause_s: float,
    tenant: str | None = None,
    user: str | None = None,
    before: float | None = None,
    exclude: Sequence[str] = (),
) -> _Deleted:
    """Delete every matching trace, `batch_size` rows per statement, their spans, and the blobs they referenced."""
    out = _Deleted()
    while True:
        d = store.delete_traces(limit=batch_size, tenant=tenant, user=user, before=before, exclude=exclude)
        out.rows += d.rows
        out.sessions.update(d.sessions)
        if d.ids:
            out.spans += store.delete_trace_spans(d.ids)
        if d.blobs and blobs is not None:
            try:
                out.blobs += blobs.delete(d.blobs)
            except Exception as exc:  # the rows are gone: their blobs are orphans for the next sweep
                log.warning("deleting %d payload blobs failed (%s); the next sweep retries", len(d.blobs), exc)
        if d.rows < batch_size:
            return out
        if pause_s:
            time.sleep(pause_s)


def delete_spans(
    store: SpanStore,
    *,
    batch_size: int,
    pause_s: float,
    tenant: str | None = None,
    before: float | None = None,
    exclude: Sequence[str] = (),
) -> int:
    """Delete every matching span, `batch_size` per statement."""
    total = 0
    while True:
        n = store.delete_spans(limit=batch_size, tenant=tenant, before=before, exclude=exclude)
        total += n
        if n < batch_size:
            return total
        if pause_s:
            time.sleep(pause_s)


def delete_responses(
    store: ResponseStore,
    *,
    batch_size: int,
    pause_s: float,
    tenant: str | None = None,
    user: str | None = None,
    before: float | None = None,
    exclude: Sequence[str] = (),
) -> int:
    """Delete every matching stored response, `batch_size` per statement."""
    total = 0
    while True:
        n = store.delete_responses(limit=batch_size, tenant=tenant, user=user, before=before, exclude=exclude)
        total += n
        if n < batch_size:
            return total
        if pause_s:
            time.sleep(pause_s)


def sweep(store: SweepStore, blobs: BlobStore | None, policy: RetentionPolicy, now: float) -> SweepReport:
    """One retention pass (blocking): each tenant's old traces, everyone else's by the default, then orphan blobs."""
    report = SweepReport()
    passes: list[tuple[str, str | None, float]] = [
        (tenant, tenant, days) for tenant, days in sorted(policy.tenants.items()) if days is not None
    ]
    if policy.default_days is not None:
        passes.append(("*", None, policy.default_days))
    for name, tenant, days in passes:
        before, exclude = now - days * DAY, tuple(policy.tenants) if tenant is None else ()
        size, pause = policy.batch_size, policy.pause_s
        d = delete_batches(store, blobs, batch_size=size, pause_s=pause, tenant=tenant, before=before, exclude=exclude)
        report.by_tenant[name] = d.rows
        report.traces += d.rows
        report.blobs += d.blobs
        report.spans += d.spans + delete_spans(
            store, batch_size=size, pause_s=pause, tenant=tenant, before=before, exclude=exclude
        )
        report.responses += delete_responses(
            store, batch_size=size, pause_s=pause, tenant=tenant, before=before, exclude=exclude
        )
    if blobs is not None:
        orphans = orphan_blobs(store, blobs, now - policy.orphan_grace_s)
        report.orphan_blobs = blobs.delete(orphans) if orphans else 0
    return report


def orphan_blobs(store: TraceDeletion, blobs: BlobStore, older_than: float) -> list[str]:
    """Keys of trace blobs last written before `older_than` whose trace row does not exist."""
    candidates: dict[str, str] = {}
    for key, modified in blobs.list(BLOB_PREFIX):
        trace_id = trace_id_of(key)
        if trace_id is not None and modified < older_than:
            candidates[trace_id] = key
    ids = list(candidates)
    present: set[str] = set()
    for i in range(0, len(ids), 500):
        present |= store.trace_ids_present(ids[i : i + 500])
    return [key for trace_id, key in candidates.items() if trace_id not in present]
