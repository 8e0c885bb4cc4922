"""The SQL store: every capability the SQL backends serve together, and its migrations."""

from __future__ import annotations

from typing import Protocol

from keel.store.protocols.agents import AgentStore
from keel.store.protocols.audit import AuditStore
from keel.store.protocols.batches import BatchStore
from keel.store.protocols.evals import EvalStore
from keel.store.protocols.feedback import FeedbackStore
from keel.store.protocols.jobs import JobStore
from keel.store.protocols.keys import KeyStore
from keel.store.protocols.leases import LeaseStore
from keel.store.protocols.limits import LimitConfigStore
from keel.store.protocols.online import OnlineEvalStore
from keel.store.protocols.prompts import PromptStore
from keel.store.protocols.purge import RagAclErasure, SubjectErasure, TraceDeletion
from keel.store.protocols.rag_docs import RagDocStore
from keel.store.protocols.rag_index import RagIndexStore
from keel.store.protocols.responses import ResponseStore
from keel.store.protocols.spans import SpanStore
from keel.store.protocols.tenancy import TenancyStore
from keel.store.protocols.traces import TraceStore


class Migrator(Protocol):
    def migrate(self) -> list[str]:
        """Apply pending numbered migrations; return the names applied."""
        ...


class Store(
    KeyStore,
    TraceStore,
    TraceDeletion,
    SubjectErasure,
    RagAclErasure,
    LimitConfigStore,
    LeaseStore,
    Migrator,
    SpanStore,
    JobStore,
    BatchStore,
    ResponseStore,
    PromptStore,
    RagDocStore,
    RagIndexStore,
    OnlineEvalStore,
    EvalStore,
    FeedbackStore,
    AuditStore,
    AgentStore,
    TenancyStore,
    Protocol,
):
    url: str

    def close(self) -> None: ...
