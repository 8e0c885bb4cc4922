"""Deletion you can prove: one cascade through every capability's store, and a receipt.

`purge(stores, tenant, user=None)` deletes a whole tenant (its rows everywhere, its keys, its row in
`tenants`) or one user's data within a tenant, then records one audit entry (the only residue: it names
the subject and carries the receipt's counts and digest). Before anything is deleted the subject's keys
are revoked (and the gateways given time to drop them) and its queued jobs cancelled, so nothing
re-creates data during the purge.

`PURGERS` is the registry, in order: one small function per store, each deleting in bounded batches and
returning a count, so adding a store is one line (a kind in keel.store.sql.erase, or a function here).
Order matters where a user's rows are found through other rows (feedback through the user's traces, a
batch's files through the batch, jobs through batches and eval runs): those run first. Every purger is
idempotent, so a purge that crashed midway finishes when run again (its receipt then counts what that
run deleted).

What "a user's data" means, per store: their traces with spans and payload blobs, their cache entries
and vectors, their own usage rollups and sessions, their stored responses, feedback they gave or that
was given on their calls, online scores and dataset items of their calls, eval runs and batches made
with their keys (results, files, jobs), limit overrides and RAG groups of their keys, their id in
the tenant's RAG access lists (a list left empty becomes closed, `[""]`, never the whole tenant), the keys
themselves, and the audit entries naming them (erased, not deleted: the chain stays verifiable). Their
name on the tenant's prompts (author, label moves, rollouts) is set to NULL: the prompts are the
tenant's. Agent runs, tools, secrets and RAG collections belong to the tenant, not to one user.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from keel.audit.log import AuditLog
from keel.rag.ingest import Ingestor
from keel.store.protocols import BlobStore, CacheStore, JobQuery, Store, VectorIndex
from keel.traces.retention import delete_batches, delete_responses, delete_spans

log = logging.getLogger("keel.deletion")


@dataclass(frozen=True, slots=True)
class Stores:
    """Every store a purge reaches; None where this process has none configured."""

    store: Store
    blobs: BlobStore | None = None  # trace payloads, files
    cache: CacheStore | None = None
    vectors: VectorIndex | None = None  # the semantic cache's
    rag: Ingestor | None = None  # RAG collections, documents, their blobs and index
    batch_size: int = 1000
    revocation_wait_s: float = 0.0  # how long gateways take to drop a revoked key


@dataclass(frozen=True, slots=True)
class Subject:
    tenant: str
    user: str | None = None  # None: the whole tenant

    def json(self) -> dict[str, Any]:
        return {"tenant": self.tenant, "user": self.user}


@dataclass(slots=True)
class Receipt:
    """What one purge deleted, per store. `digest`: sha256 over the canonical JSON of everything else."""

    subject: Subject
    started_at: float
    finished_at: float = 0.0
    counts: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    audit_seq: int | None = None  # the audit entry recording this purge
    digest: str = ""

    def body(self) -> dict[str, Any]:
        return {
            "subject": self.subject.json(),
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "counts": dict(sorted(self.counts.items())),
            "notes": self.notes,
        }

    def seal(self) -> None:
        self.digest = hashlib.sha256(orjson.dumps(self.body(), option=orjson.OPT_SORT_KEYS)).hexdigest()

    def json(self) -> dict[str, Any]:
        return {**self.body(), "audit_seq": self.audit_seq, "digest": self.digest}


@dataclass(slots=True)
class _Run:
    """One purge's working state: the stores, the subject, the receipt being filled."""

    stores: Stores
    subject: Subject
    receipt: Receipt
    sessions: set[str] = field(default_factory=set)  # the deleted traces' sessions (user rollups)
    erased_v1: list[int] = field(default_factory=list)  # scheme-1 audit entries erased: the purge entry lists them


Purger = Callable[[_Run], Awaitable[int]]


def _rows(kind: str) -> Purger:
    """A purger for a kind the SQL store erases by its steps (keel.store.sql.erase)."""

    async def run(r: _Run) -> int:
        s, subject = r.stores, r.subject
        return await asyncio.to_thread(
            s.store.erase_subject, kind, subject.tenant, subject.user, s.batch_size, lambda keys: _drop(s, keys)
        )

    return run


def _drop(s: Stores, keys: Sequence[str]) -> None:
    if keys and s.blobs is not None:
        s.blobs.delete(list(keys))  # missing keys are fine: a re-run after a crash


async def _traces(r: _Run) -> int:
    s, subject = r.stores, r.subject
    d = await asyncio.to_thread(
        delete_batches, s.store, s.blobs, batch_size=s.batch_size, pause_s=0.0, tenant=subject.tenant, user=subject.user
    )
    r.sessions |= d.sessions
    r.receipt.counts["trace_blobs"] = r.receipt.counts.get("trace_blobs", 0) + d.blobs
    r.receipt.counts["spans"] = r.receipt.counts.get("spans", 0) + d.spans
    return d.rows


async def _spans(r: _Run) -> int:
    """A whole tenant's spans whose trace has no row (a user's went with their traces)."""
    if r.subject.user is not None:
        return 0
    s = r.stores
    return await asyncio.to_thread(delete_spans, s.store, batch_size=s.batch_size, pause_s=0.0, tenant=r.subject.tenant)


async def _responses(r: _Run) -> int:
    s, subject = r.stores, r.subject
    return await asyncio.to_thread(
        delete_responses, s.store, batch_size=s.batch_size, pause_s=0.0, tenant=subject.tenant, user=subject.user
    )


async def _cache(r: _Run) -> int:
    if r.stores.cache is None:
        return 0
    return await r.stores.cache.purge(r.subject.tenant, r.subject.user)


async def _vectors(r: _Run) -> int:
    if r.stores.vectors is None:
        return 0
    return await r.stores.vectors.purge(r.subject.tenant, r.subject.user)


async def _rollups(r: _Run) -> int:
    s, subject = r.stores, r.subject
    return await asyncio.to_thread(s.store.delete_rollups, subject.tenant, subject.user, sorted(r.sessions))


async def _rag(r: _Run) -> int:
    """A whole tenant's collections, documents, their blobs, chunks and vectors (counted per kind)."""
    if r.subject.user is not None:
        return 0
    if r.stores.rag is None:
        counts = await asyncio.to_thread(r.stores.store.delete_rag_tenant, r.subject.tenant)
        r.receipt.notes.append("RAG is not configured here: its rows deleted, its index and blobs not reached")
    else:
        counts = await r.stores.rag.purge_tenant(r.subject.tenant)
    for kind, n in counts.items():
        key = kind if kind.startswith("rag_") else f"rag_{kind}"
        r.receipt.counts[key] = r.receipt.counts.get(key, 0) + n
    return 0


async def _rag_acls(r: _Run) -> int:
    """A user's id out of the tenant's RAG access lists; a list left empty becomes closed, not open."""
    if r.subject.user is None:
        return 0
    s = r.stores
    counts = await asyncio.to_thread(s.store.erase_rag_user, r.subject.tenant, r.subject.user, s.batch_size)
    for kind, n in counts.items():
        r.receipt.counts[kind] = r.receipt.counts.get(kind, 0) + n
    return 0


async def _audit(r: _Run) -> int:
    erased = await asyncio.to_thread(AuditLog(r.stores.store).erase, r.subject.tenant, r.subject.user)
    r.receipt.counts["audit_erased_v1"] = len(erased.v1)
    r.erased_v1 = erased.v1
    return erased.entries + len(erased.v1)


# (receipt key, purger), in the order they run; a store added to Keel adds one line here
PURGERS: tuple[tuple[str, Purger], ...] = (
    ("prompt_feedback", _rows("prompt_feedback")),  # before traces: a user's is found through them
    ("eval_scores", _rows("eval_scores")),
    ("dataset_items", _rows("datasets")),
    ("jobs", _rows("jobs")),  # before batches and eval runs: a user's are found through them
    ("eval_runs", _rows("eval_runs")),
    ("files", _rows("files")),  # before batches, likewise
    ("batches", _rows("batches")),
    ("prompts", _rows("prompts")),
    ("agent_runs", _rows("agent_runs")),
    ("agent_tools", _rows("agent_tools")),
    ("agent_secrets", _rows("agent_secrets")),
    ("traces", _traces),  # with their spans and payload blobs
    ("orphan_spans", _spans),
    ("responses", _responses),
    ("cache_entries", _cache),
    ("cache_vectors", _vectors),
    ("rollups", _rollups),
    ("rag", _rag),
    ("rag_acls", _rag_acls),  # counted as rag_acls and rag_acl_index
    ("limit_alerts", _rows("limit_alerts")),
    ("limit_overrides", _rows("limit_overrides")),
    ("rag_key_groups", _rows("rag_key_groups")),
    ("tenancy", _rows("tenancy")),  # users, teams, personal access tokens
    ("agent_defs", _rows("agent_defs")),
    ("keys", _rows("keys")),
    ("audit_erased", _audit),
    ("tenant", _rows("tenant")),
)


async def purge(stores: Stores, tenant: str, user: str | None = None, *, actor: str = "admin") -> Receipt:
    """Delete the subject everywhere, record it in the audit log, return the receipt. Idempotent."""
    subject = Subject(tenant, user)
    receipt = Receipt(subject, time.time())
    run = _Run(stores, subject, receipt)
    receipt.counts["keys_revoked"] = await asyncio.to_thread(_revoke, stores.store, subject)
    if receipt.counts["keys_revoked"] and stores.revocation_wait_s:
        await asyncio.sleep(stores.revocation_wait_s)
    receipt.counts["jobs_cancelled"] = await asyncio.to_thread(_cancel_jobs, stores.store, subject)
    for name, purger in PURGERS:
        n = await purger(run)
        if name not in ("rag", "rag_acls"):
            receipt.counts[name] = receipt.counts.get(name, 0) + n
    receipt.finished_at = time.time()
    receipt.seal()
    action = "tenant.purge" if user is None else "user.purge"
    result = {"counts": receipt.body()["counts"], "digest": receipt.digest, "erased_v1": run.erased_v1}
    entry = await asyncio.to_thread(
        AuditLog(stores.store).append, actor, action, user or tenant, tenant=tenant, result=result
    )
    receipt.audit_seq = entry.seq
    return receipt


def _revoke(store: Store, subject: Subject) -> int:
    now, n = time.time(), 0
    for key in store.list_keys(subject.tenant):
        if key.revoked_at is None and (subject.user is None or key.user == subject.user):
            store.revoke_key(key.id, now)
            n += 1
    return n


def _cancel_jobs(store: Store, subject: Subject) -> int:
    """Queued or running jobs of the subject: a tenant's all; a user's, those of their batches and eval runs."""
    now, ids = time.time(), set[str]()
    if subject.user is None:
        for state in ("queued", "running"):
            ids |= {j.id for j in store.list_jobs(JobQuery(state=state, tenant=subject.tenant, limit=10_000))}
    else:
        keys = {k.id for k in store.list_keys(subject.tenant) if k.user == subject.user}
        ids |= {b.job_id for b in _batches(store, subject.tenant) if b.key_id in keys and b.job_id}
        runs = store.list_eval_runs(subject.tenant, limit=10_000)
        ids |= {e.job_id for e in runs if e.key_id in keys and e.job_id}
    n = 0
    for job_id in sorted(ids):
        job = store.cancel_job(job_id, now)
        n += job is not None and job.state in ("cancelled", "running")
    return n


def _batches(store: Store, tenant: str) -> list[Any]:
    out, after = [], None
    while page := store.list_batches(tenant, after=after, limit=100):
        out.extend(page)
        after = page[-1].id
        if len(page) < 100:
            break
    return out
