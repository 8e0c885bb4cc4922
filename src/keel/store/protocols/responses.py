"""Stored Responses API responses: what `previous_response_id`, `GET /v1/responses/{id}` and its input
items read back. Every read and delete names the tenant, so one tenant never sees another's."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

MAX_CHAIN = 1000  # responses one `previous_response_id` conversation may hold


@dataclass(frozen=True, slots=True)
class StoredResponse:
    id: str  # resp_…
    tenant: str
    created_at: float  # unix seconds
    response: dict[str, Any]  # the Response object, as the client got it
    input_items: list[dict[str, Any]] = field(default_factory=list)  # this response's own input items, with ids
    previous_id: str | None = None
    user: str | None = None  # the call's user: a user purge deletes them
    trace_id: str | None = None


class ResponseStore(Protocol):
    def put_response(self, row: StoredResponse) -> None:
        """Store `row`; a second put of the same id does nothing."""
        ...

    def get_response(self, tenant: str, response_id: str) -> StoredResponse | None:
        """The response of `tenant` with this id; None when absent or another tenant's."""
        ...

    def response_chain(self, tenant: str, response_id: str, limit: int = MAX_CHAIN) -> list[StoredResponse]:
        """The conversation ending at `response_id`, oldest first, following `previous_id` within
        `tenant` for at most `limit` responses (the newest ones); [] when `response_id` is not found."""
        ...

    def delete_response(self, tenant: str, response_id: str) -> bool:
        """Delete one response of `tenant`; False when there was none."""
        ...

    def delete_responses(
        self,
        *,
        limit: int,
        tenant: str | None = None,
        user: str | None = None,
        before: float | None = None,
        exclude: Sequence[str] = (),
    ) -> int:
        """Delete up to `limit` responses of `tenant` (and of `user` within it) created before `before`;
        with `tenant` None, of any tenant not in `exclude`. Returns the rows deleted (retention, purges)."""
        ...
