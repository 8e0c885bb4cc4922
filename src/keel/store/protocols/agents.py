"""The tool runtime's storage: tenants' secrets (sealed), tools, runs and their tool calls.

A tool call's row is keyed by its idempotency key and moves between states only by `move_call`, a
conditional update from named states: of two approvers, or of a worker racing a restarted one, exactly
one moves a call to `running`, so its side effect happens at most once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Protocol

CallState = Literal["pending", "approved", "denied", "expired", "allowed", "running", "done", "failed"]
CALL_STATES: tuple[CallState, ...] = (
    "pending",
    "approved",
    "denied",
    "expired",
    "allowed",
    "running",
    "done",
    "failed",
)


@dataclass(frozen=True, slots=True)
class SecretRow:
    tenant: str
    name: str
    sealed: str  # base64(nonce || AES-GCM ciphertext and tag)
    key_id: str  # which master key sealed it
    created_at: float


@dataclass(frozen=True, slots=True)
class ToolRow:
    tenant: str
    name: str
    spec: dict[str, Any]
    updated_at: float


@dataclass(frozen=True, slots=True)
class CallOutcome:
    """A `running` call's move to done|failed, committed with the audit entry recording it
    (`AuditStore.append_audits`): the call's row and its `tool.result` never disagree."""

    call_id: str
    state: Literal["done", "failed"]
    result: str
    at: float


@dataclass(frozen=True, slots=True)
class CallClaim:
    """A call's move to `running` from one of `sources`, committed with the audit entry recording it
    (`tool.run`, `AuditStore.append_audits`): the entry is written only if the call moves, so of two
    claimants exactly one runs the tool and one entry says so. With `row` (sources must be `allowed`), the
    claim also stores the call if it is not stored yet; a stored one moves from `allowed` as usual."""

    call_id: str
    sources: tuple[CallState, ...]
    at: float
    row: CallRow | None = None  # a call that needed no approval, not stored yet: the claim stores it as running


@dataclass(frozen=True, slots=True)
class RunRow:
    id: str
    tenant: str
    state: str  # running | waiting (an approval) | done | failed
    data: dict[str, Any]  # the run's durable state: request, messages, steps
    created_at: float
    updated_at: float


@dataclass(frozen=True, slots=True)
class CallRow:
    id: str  # the idempotency key
    run_id: str
    tenant: str
    tool: str
    arguments: dict[str, Any]
    state: CallState
    result: str | None  # the tool's output (scrubbed) or error, once run or refused
    decided_by: str | None
    expires_at: float  # a pending call expires then
    created_at: float
    updated_at: float


class AgentStore(Protocol):
    def put_secret(self, row: SecretRow) -> None:
        """Insert or replace one secret."""
        ...

    def get_secret(self, tenant: str, name: str) -> SecretRow | None: ...

    def list_secrets(self, tenant: str | None = None) -> list[SecretRow]: ...

    def delete_secret(self, tenant: str, name: str) -> bool: ...

    def put_tool(self, row: ToolRow) -> None: ...

    def get_tool(self, tenant: str, name: str) -> ToolRow | None: ...

    def list_tools(self, tenant: str | None = None) -> list[ToolRow]: ...

    def delete_tool(self, tenant: str, name: str) -> bool: ...

    def put_agent(self, row: ToolRow) -> None:
        """Insert or replace a named agent (its spec in the row's `spec`)."""
        ...

    def get_agent(self, tenant: str, name: str) -> ToolRow | None: ...

    def list_agents(self, tenant: str | None = None) -> list[ToolRow]: ...

    def delete_agent(self, tenant: str, name: str) -> bool: ...

    def put_run(self, row: RunRow) -> None:
        """Insert or replace a run's state."""
        ...

    def get_run(self, run_id: str) -> RunRow | None: ...

    def list_runs(self, tenant: str | None = None, state: str | None = None, limit: int = 100) -> list[RunRow]:
        """Newest first."""
        ...

    def claim_run(
        self, run_id: str, source: str, to: str, *, now: float, updated_before: float | None = None
    ) -> RunRow | None:
        """Move the run from `source` to `to` (and, with `updated_before`, only if untouched since): one
        statement, so one claimant wins. The moved run, else None."""
        ...

    def add_call(self, row: CallRow) -> CallRow:
        """Insert the call unless its id is there; the stored row either way."""
        ...

    def get_call(self, call_id: str) -> CallRow | None: ...

    def list_calls(
        self, *, tenant: str | None = None, run_id: str | None = None, state: str | None = None
    ) -> list[CallRow]:
        """Oldest first."""
        ...

    def move_call(
        self,
        call_id: str,
        sources: tuple[CallState, ...],
        to: CallState,
        *,
        now: float,
        result: str | None = None,
        decided_by: str | None = None,
    ) -> CallRow | None:
        """Move the call to `to` if it is in one of `sources` (one statement); the moved row, else None."""
        ...


__all__ = [
    "CALL_STATES",
    "AgentStore",
    "CallClaim",
    "CallOutcome",
    "CallRow",
    "CallState",
    "RunRow",
    "SecretRow",
    "ToolRow",
]
