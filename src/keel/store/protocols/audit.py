"""The audit log's storage: one append-only chain of entries, each sealed with the hash of the one before.

`append_audit` serialises appenders (one chain even with many processes): it takes the chain's head row
in its transaction, numbers the entry head+1, seals it with `entry_hash` and moves the head, all or
nothing. The store never updates or deletes an entry; `keel.audit` verifies what it reads back.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Protocol

import orjson

GENESIS = "0" * 64  # the prev_hash of the first entry


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


def entry_hash(seq: int, draft: AuditDraft | AuditEntry, prev_hash: str) -> str:
    """sha256 over the entry's position, every field and the previous hash (canonical JSON)."""
    d = draft
    body = [seq, d.at, d.tenant, d.actor, d.action, d.target, d.detail, d.source_ip, prev_hash]
    return hashlib.sha256(orjson.dumps(body)).hexdigest()


class AuditStore(Protocol):
    def append_audit(self, draft: AuditDraft) -> AuditEntry:
        """Number, seal and store one entry after the chain's head, serialised with every other appender."""
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


__all__ = ["GENESIS", "AuditDraft", "AuditEntry", "AuditStore", "entry_hash"]
