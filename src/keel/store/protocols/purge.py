"""Deleting traces and what hangs off them in bounded batches: retention and purges."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class DeletedTraces:
    """What one bounded delete removed: how many rows, the blob keys they referenced, their sessions, their ids."""

    rows: int
    blobs: tuple[str, ...] = ()
    sessions: tuple[str, ...] = ()
    ids: tuple[str, ...] = ()  # the deleted traces' ids: their spans go next


class TraceDeletion(Protocol):
    """Deleting raw traces in bounded batches (retention, purges) and what hangs off them.

    Each call is one short statement touching at most `limit` rows, so the trace writer is never held
    up behind one giant delete; callers loop until fewer than `limit` rows came back.
    """

    def delete_traces(
        self,
        *,
        limit: int,
        tenant: str | None = None,
        user: str | None = None,
        before: float | None = None,
        exclude: Sequence[str] = (),
    ) -> DeletedTraces:
        """Delete up to `limit` traces of `tenant` (and of `user` within it), started before `before`.

        With `tenant` None: traces of any tenant not in `exclude` (calls without a tenant included).
        """
        ...

    def delete_rollups(self, tenant: str, user: str | None = None, sessions: Sequence[str] = ()) -> int:
        """A whole tenant's usage rollups (user None); else the user's own rollup rows (dimension
        `user`) and the rows of `sessions`. Returns the rows deleted."""
        ...

    def trace_ids_present(self, ids: Sequence[str]) -> set[str]:
        """Which of `ids` have a trace row (the orphan-blob sweep asks)."""
        ...


class SubjectErasure(Protocol):
    """Deleting one subject's rows (a whole tenant, or one user within it) from one store, by kind."""

    def erase_subject(
        self, kind: str, tenant: str, user: str | None, limit: int, drop_blobs: Callable[[Sequence[str]], None]
    ) -> int:
        """Delete (or, for a user's name on the tenant's own rows, anonymise) the subject's rows of `kind`,
        `limit` rows per statement, calling `drop_blobs` with the blob keys of each batch before its rows
        go. Returns the rows changed; 0 for a kind this store holds nothing of for the subject."""
        ...


class RagAclErasure(Protocol):
    """Taking one user out of every RAG access list of a tenant (documents and the index's copies)."""

    def erase_rag_user(self, tenant: str, user: str, limit: int) -> dict[str, int]:
        """Remove `user` from the access lists of the tenant's documents (`rag_acls`) and of its index
        (`rag_acl_index`: rewritten index rows plus stray access rows), `limit` rows per transaction. A
        list left with no users and no groups becomes closed (`[""]`: admin searches only), never the
        whole tenant. Returns the rows rewritten per kind."""
        ...
