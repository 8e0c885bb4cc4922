"""Evals' control data: datasets as immutable numbered versions of items, and suite runs with one
result per (item, repeat).

A dataset version never changes: importing or adding items writes the next version holding the old
items and the new ones, so a run names the exact version it scored. An item keeps the trace it was
sampled from (`trace_id`). A run's result for (item, repeat) is recorded once: recording it again (a
worker that resumed after a crash) changes nothing, and a resumed run skips the pairs recorded.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class DatasetItem:
    """`input` holds `messages` (a chat) or `vars` (prompt variables), or both."""

    input: Mapping[str, Any]
    expected: str | None = None
    context: tuple[str, ...] = ()
    metadata: Mapping[str, Any] = field(default_factory=dict)
    trace_id: str | None = None

    def json(self) -> dict[str, Any]:
        return {
            "input": dict(self.input),
            "expected": self.expected,
            "context": list(self.context),
            "metadata": dict(self.metadata),
            "trace_id": self.trace_id,
        }


@dataclass(frozen=True, slots=True)
class Dataset:
    tenant: str
    name: str
    version: int
    count: int
    note: str | None
    created_at: float


@dataclass(frozen=True, slots=True)
class EvalRun:
    id: str
    tenant: str
    key_id: str
    suite: str  # the suite's name (its description or file name)
    label: str | None  # e.g. a branch: `--baseline main` finds the latest finished run labelled main
    status: str  # queued | running | finished | failed | cancelled
    spec: Mapping[str, Any]  # the suite as it runs: items, assertions, repeat, concurrency
    total: int
    done: int
    created_at: float
    finished_at: float | None = None
    job_id: str | None = None
    summary: Mapping[str, Any] | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class EvalResult:
    run_id: str
    item: str  # the item's key in the suite (stable across runs of a suite: what the gate compares)
    repeat: int
    passed: bool
    score: float
    output: str
    trace_id: str | None
    latency_ms: float
    cost_usd: float
    verdicts: tuple[Mapping[str, Any], ...]
    error: str | None = None


class EvalStore(Protocol):
    def put_dataset(
        self, tenant: str, name: str, items: Sequence[DatasetItem], *, note: str | None, now: float
    ) -> Dataset:
        """Write `items` as the dataset's next version (1 for a new dataset)."""
        ...

    def get_dataset(self, tenant: str, name: str, version: int | None = None) -> Dataset | None:
        """A version (None: the latest)."""
        ...

    def list_datasets(self, tenant: str | None = None) -> list[Dataset]:
        """Every version, by tenant, name and version."""
        ...

    def dataset_items(self, tenant: str, name: str, version: int) -> list[DatasetItem]: ...

    def create_eval_run(self, run: EvalRun) -> None: ...

    def get_eval_run(self, tenant: str | None, run_id: str) -> EvalRun | None: ...

    def list_eval_runs(
        self, tenant: str | None = None, *, suite: str | None = None, label: str | None = None, limit: int = 50
    ) -> list[EvalRun]:
        """Newest first."""
        ...

    def update_eval_run(self, run_id: str, changes: Mapping[str, Any]) -> EvalRun | None: ...

    def record_eval_results(self, results: Sequence[EvalResult]) -> int:
        """Insert the results not recorded yet; how many were new."""
        ...

    def eval_results(self, run_id: str) -> list[EvalResult]: ...

    def recorded_eval_keys(self, run_id: str) -> set[tuple[str, int]]: ...


__all__ = ["Dataset", "DatasetItem", "EvalResult", "EvalRun", "EvalStore"]
