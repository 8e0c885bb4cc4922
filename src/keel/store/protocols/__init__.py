"""Narrow storage interfaces, one module per capability, and the rows they carry.

Stores are synchronous and thread-safe unless a protocol says async: the request path never calls a
synchronous one directly. It reads from memory, and the few store calls it needs (a key cache miss)
run in a worker thread; traces reach `TraceStore.append_traces` from the trace writer's own thread.
Every backend of a protocol passes that protocol's contract suite (tests/contracts/).

Every public name is re-exported here, so `from keel.store.protocols import X` works whichever
module X lives in; a new capability adds its module and its names to this list.
"""

from keel.store.protocols.agents import CALL_STATES, AgentStore, CallRow, CallState, RunRow, SecretRow, ToolRow
from keel.store.protocols.audit import GENESIS, AuditDraft, AuditEntry, AuditStore, entry_hash
from keel.store.protocols.batches import BatchRow, BatchStore, FileRow, LineResult
from keel.store.protocols.blobs import BlobStore
from keel.store.protocols.breakers import BreakerPolicy, BreakerState, BreakerStore, Permit
from keel.store.protocols.cache import CacheEntry, CacheStore
from keel.store.protocols.evals import Dataset, DatasetItem, EvalResult, EvalRun, EvalStore
from keel.store.protocols.feedback import FEEDBACK_BY, Feedback, FeedbackRow, FeedbackStore
from keel.store.protocols.jobs import (
    FINAL_STATES,
    JOB_STATES,
    Beat,
    Job,
    JobContext,
    JobHandler,
    JobQuery,
    JobSpec,
    JobState,
    JobStore,
    JobWakeups,
    Outcome,
    Progress,
    QueueDepth,
    Recovered,
)
from keel.store.protocols.keys import KeyRow, KeyStore, TenantRow
from keel.store.protocols.leases import Lease, LeaseStore
from keel.store.protocols.limits import (
    Admission,
    Charge,
    LimitConfigStore,
    LimitOverride,
    LimitStore,
    LimitStoreUnavailable,
    Reservation,
    UnknownSubject,
    Window,
)
from keel.store.protocols.online import OnlineEvalStore, OnlineRule, ScoreGroup, ScoreQuery, ScoreRow
from keel.store.protocols.prompts import (
    LabelMove,
    PromptContent,
    PromptLabel,
    PromptRollout,
    PromptStore,
    PromptVersion,
    RolloutPlan,
)
from keel.store.protocols.purge import DeletedTraces, RagAclErasure, SubjectErasure, TraceDeletion
from keel.store.protocols.rag_docs import (
    CollectionRow,
    DocStatus,
    DocumentIn,
    DocumentRow,
    DocUpdate,
    PutResult,
    RagDocStore,
)
from keel.store.protocols.rag_index import Access, BuildRow, RagIndexStore
from keel.store.protocols.responses import ResponseStore, StoredResponse
from keel.store.protocols.spans import SpanStore
from keel.store.protocols.store import Migrator, Store
from keel.store.protocols.tenancy import TeamRow, TenancyStore, TokenRow, UserRow
from keel.store.protocols.traces import TraceQuery, TraceStore, UnstorableRecords
from keel.store.protocols.usage import UsageQuery, UsageRow
from keel.store.protocols.vectors import VectorHit, VectorIndex

__all__ = [
    "CALL_STATES",
    "FEEDBACK_BY",
    "FINAL_STATES",
    "GENESIS",
    "JOB_STATES",
    "Access",
    "Admission",
    "AgentStore",
    "AuditDraft",
    "AuditEntry",
    "AuditStore",
    "BatchRow",
    "BatchStore",
    "Beat",
    "BlobStore",
    "BreakerPolicy",
    "BreakerState",
    "BreakerStore",
    "BuildRow",
    "CacheEntry",
    "CacheStore",
    "CallRow",
    "CallState",
    "Charge",
    "CollectionRow",
    "Dataset",
    "DatasetItem",
    "DeletedTraces",
    "DocStatus",
    "DocUpdate",
    "DocumentIn",
    "DocumentRow",
    "EvalResult",
    "EvalRun",
    "EvalStore",
    "Feedback",
    "FeedbackRow",
    "FeedbackStore",
    "FileRow",
    "Job",
    "JobContext",
    "JobHandler",
    "JobQuery",
    "JobSpec",
    "JobState",
    "JobStore",
    "JobWakeups",
    "KeyRow",
    "KeyStore",
    "LabelMove",
    "Lease",
    "LeaseStore",
    "LimitConfigStore",
    "LimitOverride",
    "LimitStore",
    "LimitStoreUnavailable",
    "LineResult",
    "Migrator",
    "OnlineEvalStore",
    "OnlineRule",
    "Outcome",
    "Permit",
    "Progress",
    "PromptContent",
    "PromptLabel",
    "PromptRollout",
    "PromptStore",
    "PromptVersion",
    "PutResult",
    "QueueDepth",
    "RagAclErasure",
    "RagDocStore",
    "RagIndexStore",
    "Recovered",
    "Reservation",
    "ResponseStore",
    "RolloutPlan",
    "RunRow",
    "ScoreGroup",
    "ScoreQuery",
    "ScoreRow",
    "SecretRow",
    "SpanStore",
    "Store",
    "StoredResponse",
    "SubjectErasure",
    "TeamRow",
    "TenancyStore",
    "TenantRow",
    "TokenRow",
    "ToolRow",
    "TraceDeletion",
    "TraceQuery",
    "TraceStore",
    "UnknownSubject",
    "UnstorableRecords",
    "UsageQuery",
    "UsageRow",
    "UserRow",
    "VectorHit",
    "VectorIndex",
    "Window",
    "entry_hash",
]
