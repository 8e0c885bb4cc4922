"""A trace's child spans, beside its call row."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from keel.types import Span


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
