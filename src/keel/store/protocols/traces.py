"""Trace records: the query over raw rows and the store the trace writer appends to."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from keel.store.protocols.usage import UsageQuery, UsageRow
from keel.types import TraceRecord


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
