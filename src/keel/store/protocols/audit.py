"""The audit log's storage: one append-only chain of entries, each sealed with the hash of the one before.

`append_audit` serialises appenders (one chain even with many processes): it takes the chain's head row
in its transaction, numbers the entry head+1, seals it with `entry_hash` and moves the head, all or
nothing. The store never deletes an entry, and updates one only to erase its subject-bearing fields
(`erase_audit`, for a purge); `keel.audit` verifies what it reads back.

Two hashing schemes. Scheme 1 (entries without `salts`): sha256 over every field. Scheme 2: sha256 over
the position, time, action, the previous hash and one salted digest per subject-bearing field (tenant,
actor, target, detail, source_ip), so a purge can replace such a field with a tombstone, keeping its
digest in `digests` and dropping its salt: the chain still verifies and no guess of the erased value
can be confirmed against it. `salts` and `digests` are JSON objects keyed by field name.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from keel.store.protocols.agents import CallClaim, CallOutcome

GENESIS = "0" * 64  # the prev_hash of the first entry
SUBJECT_FIELDS = ("tenant", "actor", "target", "detail", "source_ip")  # what may name a person or tenant
ERASED = "[erased]"  # what an erased actor holds
ERASED_DETAIL = '{"erased":true}'  # what an erased detail holds; other erased fields hold NULL


@dataclass(frozen=True, slots=True)
class AuditDraft:
    """An entry before the store numbers and seals it. `detail` is JSON text, hashed exactly as stored."""

    at: float
    tenant: str | None
    actor: str
    action: str
    target: str | None
    detail: str
    source_ip: str | None
    salts: str | None = None  # scheme 2: {field: hex salt}; None: scheme 1


@dataclass(frozen=True, slots=True)
class AuditEntry:
    seq: int
    at: float
    tenant: str | None
    actor: str
    action: str
    target: str | None
    detail: str
    source_ip: str | None
    prev_hash: str
    hash: str
    salts: str | None = None
    digests: str | None = None  # the erased fields' digests; on a scheme-1 entry: erased, content unchecked


def tombstone(name: str) -> str | None:
    """What an erased field holds."""
    return ERASED if name == "actor" else ERASED_DETAIL if name == "detail" else None


def field_digest(salt: str, value: Any) -> str:
    return hashlib.sha256(bytes.fromhex(salt) + orjson.dumps(value)).hexdigest()


def entry_hash(seq: int, draft: AuditDraft | AuditEntry, prev_hash: str) -> str:
    """Scheme 1: sha256 over the position, every field and the previous hash (canonical JSON). Scheme 2:
    the subject-bearing fields enter through their salted digests (the stored digest once erased).
    KeyError or ValueError: the salts or digests do not cover every field (tampered)."""
    d = draft
    if d.salts is None:
        body: list[Any] = [seq, d.at, d.tenant, d.actor, d.action, d.target, d.detail, d.source_ip, prev_hash]
        return hashlib.sha256(orjson.dumps(body)).hexdigest()
    salts: Mapping[str, str] = orjson.loads(d.salts)
    digests: Mapping[str, str] = orjson.loads(getattr(d, "digests", None) or "{}")
    parts = [digests[f] if f in digests else field_digest(salts[f], getattr(d, f)) for f in SUBJECT_FIELDS]
    return hashlib.sha256(orjson.dumps([2, seq, d.at, d.action, *parts, prev_hash])).hexdigest()


class AuditStore(Protocol):
    def append_audit(self, draft: AuditDraft) -> AuditEntry:
        """Number, seal and store one entry after the chain's head, serialised with every other appender."""
        ...

    def append_audits(
        self,
        drafts: Sequence[AuditDraft],
        *,
        durable: bool = True,
        outcomes: Sequence[CallOutcome] = (),
        claims: Sequence[CallClaim | None] = (),
    ) -> list[AuditEntry | None]:
        """`append_audit` for several entries in one transaction, chained in the given order (group commit),
        with `outcomes` (calls moved from running, if they still are) in the same transaction.
        `claims[i]` (if given) makes draft i conditional: the call moves to running in this transaction and
        the draft is chained only if it moved; else it is left out (None in its place), and the others go on.
        `durable=False`: the commit may return before the database flushed it; a database crash can then
        lose these entries and any after them, never a gap (the head row moves in the same transaction)."""
        ...

    def list_audit(
        self,
        *,
        after_seq: int = 0,
        since: float | None = None,
        until: float | None = None,
        tenant: str | None = None,
        limit: int = 1000,
        actor: str | None = None,
        action: str | None = None,
        target: str | None = None,
    ) -> list[AuditEntry]:
        """Entries with seq > after_seq (and at in [since, until), of `tenant`, by `actor`, whose action
        starts with `action`, on `target`), in seq order."""
        ...

    def audit_head(self) -> tuple[int, str]:
        """The chain's last seq and hash as the appenders left them ((0, GENESIS) when empty)."""
        ...

    def audit_seq_range(self, since: float | None, until: float | None) -> tuple[int, int] | None:
        """The first and last seq of the entries with `at` in [since, until), None if there are none."""
        ...

    def audit_mark(self, name: str) -> str | None:
        """A named value the audit capability keeps between runs (the SIEM cursor), None if never set."""
        ...

    def set_audit_mark(self, name: str, value: str, at: float) -> None: ...

    def audit_naming(self, tenant: str, user: str | None, *, after_seq: int, limit: int) -> list[AuditEntry]:
        """Entries with seq > after_seq that may name the subject, in seq order: a tenant's (its own, and
        any whose target is the tenant or whose detail holds it as a JSON string); a user's within a
        tenant (actor, target or a JSON string of the detail naming the user id). Once erased, an entry no
        longer matches."""
        ...

    def erase_audit(self, seq: int, fields: Mapping[str, Any], salts: str | None, digests: str) -> None:
        """Replace entry `seq`'s `fields` (tombstones), its salts and digests; nothing else changes."""
        ...


__all__ = [
    "ERASED",
    "ERASED_DETAIL",
    "GENESIS",
    "SUBJECT_FIELDS",
    "AuditDraft",
    "AuditEntry",
    "AuditStore",
    "entry_hash",
    "field_digest",
    "tombstone",
]
