"""Uploaded files and batches (the OpenAI Files and Batch APIs), and each batch line's recorded result.

A file's bytes live in the blob store under `FileRow.blob_key`; its row here says whose it is and
what it holds. A batch's lines run as jobs; each line's answer is recorded once, keyed on (batch,
custom_id), so a worker killed mid-batch resumes where the records end and the output file is
assembled from them exactly once, at finalize.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

# validating → in_progress → finalizing → completed | expired; validating → failed; cancelling → cancelled
FINAL_STATUSES = frozenset({"failed", "completed", "expired", "cancelled"})


@dataclass(frozen=True, slots=True)
class FileRow:
    id: str  # file-...
    tenant: str
    filename: str
    purpose: str  # batch | batch_output
    bytes: int
    created_at: float
    blob_key: str
    lines: int = 0  # JSONL lines (requests of an input file, results of an output file)
    status: str = "processed"


@dataclass(frozen=True, slots=True)
class BatchRow:
    id: str  # batch_...
    tenant: str
    key_id: str  # the creator's key: its lines run as that key (its aliases, limits, budgets)
    endpoint: str  # /v1/chat/completions | /v1/embeddings
    input_file_id: str
    completion_window: str
    created_at: float
    expires_at: float
    status: str = "validating"
    metadata: Mapping[str, str] | None = None
    errors: Sequence[Mapping[str, Any]] | None = None  # why validation failed: OpenAI's {code, message, line}
    job_id: str | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    total: int = 0
    completed: int = 0
    failed: int = 0
    in_progress_at: float | None = None
    finalizing_at: float | None = None
    completed_at: float | None = None
    failed_at: float | None = None
    expired_at: float | None = None
    cancelling_at: float | None = None
    cancelled_at: float | None = None


@dataclass(frozen=True, slots=True)
class LineResult:
    batch_id: str
    custom_id: str
    line: int  # 1-based line of the input file: the output keeps its order
    ok: bool  # False: the line goes to the error file
    text: str  # the rendered output line (OpenAI's {id, custom_id, response, error}), without newline


class BatchStore(Protocol):
    """Files and batches of a tenant, and batch lines' results. Every read of a file or batch names
    its tenant, so one tenant never sees another's (None only for Keel's own workers)."""

    def put_file(self, row: FileRow) -> None: ...

    def get_file(self, tenant: str | None, file_id: str) -> FileRow | None: ...

    def list_files(
        self, tenant: str, *, purpose: str | None = None, after: str | None = None, limit: int = 100
    ) -> list[FileRow]:
        """Newest first; `after`: only those listed after that id (older)."""
        ...

    def delete_file(self, tenant: str, file_id: str) -> FileRow | None:
        """Delete the row; the row deleted (its blob is the caller's to delete), or None."""
        ...

    def create_batch(self, row: BatchRow) -> None: ...

    def get_batch(self, tenant: str | None, batch_id: str) -> BatchRow | None: ...

    def list_batches(self, tenant: str, *, after: str | None = None, limit: int = 20) -> list[BatchRow]:
        """Newest first; `after`: only those listed after that id (older)."""
        ...

    def update_batch(
        self, batch_id: str, changes: Mapping[str, Any], *, when: Sequence[str] | None = None
    ) -> BatchRow | None:
        """Set `changes` (BatchRow field names) if the batch's status is one of `when` (None: any);
        the batch as it is now if changed, else None."""
        ...

    def record_results(self, results: Sequence[LineResult]) -> int:
        """Record results of one batch, skipping any (batch_id, custom_id) recorded already; how many went in."""
        ...

    def batch_results(self, batch_id: str) -> list[LineResult]:
        """Every recorded result of a batch, in input line order."""
        ...

    def recorded_ids(self, batch_id: str) -> set[str]:
        """The custom_ids with a recorded result."""
        ...

    def count_results(self, batch_id: str) -> tuple[int, int]:
        """(ok, failed) results recorded."""
        ...
