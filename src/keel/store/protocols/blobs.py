"""Large payloads by key (trace bodies kept apart from the rows)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Protocol


class BlobStore(Protocol):
    """Large payloads by key: a directory (file://) or an S3-compatible bucket (s3://).

    Synchronous and thread-safe, like the SQL stores: the trace writer's thread writes, admin paths
    read and delete from worker threads. `put` replaces; `delete` of a missing key is not an error.
    """

    url: str

    def put(self, key: str, data: bytes) -> None: ...

    def get(self, key: str) -> bytes | None: ...

    def delete(self, keys: Sequence[str]) -> int:
        """Delete `keys`; returns how many existed (S3: how many were asked, it does not say)."""
        ...

    def list(self, prefix: str = "") -> Iterator[tuple[str, float]]:
        """(key, last modified, unix seconds) of every blob under `prefix`."""
        ...

    def close(self) -> None: ...
