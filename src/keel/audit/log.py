"""`AuditLog`: append redacted entries to the hash chain, verify the chain, export it for an auditor.

An entry says who (actor), did what (action) to what (target), with which arguments, before and after
values and result summary (all in `detail`, redacted: values under secret-looking keys and any value
the caller names as secret are replaced before anything is hashed or stored), from where, when.

`verify` walks the chain from the first entry (`verify_new`: from a checkpoint an earlier one returned,
for the entries appended since) and names the first one that does not hold: a gap in the
numbering (a deleted entry), a link to a hash other than the previous entry's (reordered or deleted), an
entry whose content no longer matches its hash (edited), or a head that the last entry does not reach
(the newest entries deleted).

`erase` serves purges: it replaces the subject-bearing fields of the entries naming a tenant or user with
tombstones, keeping each field's digest (hashing scheme 2, see keel.store.protocols.audit), so `verify`
still passes and still catches any other edit. Entries hashed before scheme 2 cannot keep a digest: once
erased, their content is no longer checked, only their place in the chain, and the purge's own entry
must list their seq (`erased_v1`), else `verify` fails on them.
"""

from __future__ import annotations

import asyncio
import re
import secrets as _secrets
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from keel.audit.group import GroupCommit
from keel.store.protocols.agents import CallClaim, CallOutcome
from keel.store.protocols.audit import (
    GENESIS,
    SUBJECT_FIELDS,
    AuditDraft,
    AuditEntry,
    AuditStore,
    entry_hash,
    field_digest,
    tombstone,
)

REDACTED = "[redacted]"
SECRET_KEYS = re.compile(r"pass(word)?|secret|token|api[_-]?key|authorization|cookie|credential|private", re.I)
MAX_DETAIL = 16_384  # characters of an entry's detail JSON; longer values are cut
MAX_STRING = 2_048  # characters of one string inside the detail
PAGE = 1000
PURGE_ACTIONS = ("tenant.purge", "user.purge")  # entries recording a deletion (never erased)


def redact(value: Any, secrets: Iterable[str] = ()) -> Any:
    """`value` with secret-looking keys' values and any occurrence of `secrets` replaced, long strings cut."""
    known = [s for s in secrets if s]

    def walk(v: Any, key: str | None) -> Any:
        if key is not None and SECRET_KEYS.search(key):
            return REDACTED
        if isinstance(v, dict):
            return {str(k): walk(x, str(k)) for k, x in v.items()}
        if isinstance(v, list | tuple):
            return [walk(x, None) for x in v]
        if isinstance(v, str):
            for s in known:
                v = v.replace(s, REDACTED)
            return v if len(v) <= MAX_STRING else v[:MAX_STRING] + "…"
        if v is None or isinstance(v, bool | int | float):
            return v
        return walk(str(v), None)

    return walk(value, None)


def _draft(
    actor: str, action: str, target: str | None, tenant: str | None, arguments: Any, before: Any, after: Any,
    result: Any, source_ip: str | None, secrets: Iterable[str], now: float | None,
) -> AuditDraft:  # fmt: skip
    fields = {"arguments": arguments, "before": before, "after": after, "result": result}
    detail = orjson.dumps(redact({k: v for k, v in fields.items() if v is not None}, secrets)).decode()
    if len(detail) > MAX_DETAIL:
        detail = orjson.dumps({"truncated": detail[:MAX_DETAIL]}).decode()
    salts = orjson.dumps({f: _secrets.token_hex(16) for f in SUBJECT_FIELDS}).decode()
    return AuditDraft(time.time() if now is None else now, tenant, actor, action, target, detail, source_ip, salts)


@dataclass(frozen=True, slots=True)
class Verdict:
    ok: bool
    checked: int  # entries that held, before the first bad one
    bad_seq: int | None = None
    reason: str | None = None

    def json(self) -> dict[str, Any]:
        return {"ok": self.ok, "checked": self.checked, "bad_seq": self.bad_seq, "reason": self.reason}


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """Where a verification reached: the last entry that held, and its hash."""

    seq: int = 0
    hash: str = GENESIS


def entry_json(e: AuditEntry) -> dict[str, Any]:
    return {
        "seq": e.seq,
        "at": e.at,
        "tenant": e.tenant,
        "actor": e.actor,
        "action": e.action,
        "target": e.target,
        "detail": orjson.loads(e.detail),
        "detail_json": e.detail,  # the exact text hashed
        "source_ip": e.source_ip,
        "prev_hash": e.prev_hash,
        "hash": e.hash,
        "salts": e.salts,  # hashing scheme 2: the salted digests of tenant, actor, target, detail, source_ip
        "digests": e.digests,  # the erased fields' digests (a purge), so the chain still verifies
    }


class AuditLog:
    """The audit capability's public API; synchronous calls hit the store, `record` runs one off the loop."""

    def __init__(self, store: AuditStore) -> None:
        self._store = store
        self._group = GroupCommit(store)

    def append(
        self,
        actor: str,
        action: str,
        target: str | None = None,
        *,
        tenant: str | None = None,
        arguments: Any = None,
        before: Any = None,
        after: Any = None,
        result: Any = None,
        source_ip: str | None = None,
        secrets: Iterable[str] = (),
        now: float | None = None,
    ) -> AuditEntry:
        draft = _draft(actor, action, target, tenant, arguments, before, after, result, source_ip, secrets, now)
        return self._store.append_audit(draft)

    async def record(
        self,
        actor: str,
        action: str,
        target: str | None = None,
        *,
        tenant: str | None = None,
        arguments: Any = None,
        before: Any = None,
        after: Any = None,
        result: Any = None,
        source_ip: str | None = None,
        secrets: Iterable[str] = (),
        durable: bool = True,
        outcome: CallOutcome | None = None,
    ) -> AuditEntry:
        """`append` off the event loop, through the group-commit writer: returns once the entry is committed,
        sharing the commit with whatever other callers queued meanwhile, and with `outcome` (the tool call
        this entry records, moved from running) in the same transaction. `durable=False`: committed, but
        perhaps not yet flushed (a database crash may lose it with the entries after it; see GroupCommit)."""
        draft = _draft(actor, action, target, tenant, arguments, before, after, result, source_ip, secrets, None)
        entry = await asyncio.wrap_future(self._group.submit(draft, durable=durable, outcome=outcome))
        assert entry is not None  # no claim: unconditional
        return entry

    async def claim(
        self,
        claim: CallClaim,
        actor: str,
        action: str,
        target: str | None = None,
        *,
        tenant: str | None = None,
        arguments: Any = None,
        result: Any = None,
        source_ip: str | None = None,
    ) -> AuditEntry | None:
        """Move a tool call to running and record it (`tool.run`) in one durable transaction, through the
        group-commit writer: the entry, once the call moved and both are flushed; None, with nothing
        written, when the call was no longer in one of the claim's source states (another claimant won)."""
        draft = _draft(actor, action, target, tenant, arguments, None, None, result, source_ip, (), None)
        return await asyncio.wrap_future(self._group.submit(draft, claim=claim))

    def close(self) -> None:
        self._group.close()

    def entries(
        self, *, since: float | None = None, until: float | None = None, tenant: str | None = None, after: int = 0
    ) -> Iterator[AuditEntry]:
        while True:
            page = self._store.list_audit(after_seq=after, since=since, until=until, tenant=tenant, limit=PAGE)
            yield from page
            if len(page) < PAGE:
                return
            after = page[-1].seq

    def erase(self, tenant: str, user: str | None = None) -> Erased:
        """Tombstone the subject-bearing fields of every entry naming the tenant (all five fields) or the
        user within it (all but the tenant). Idempotent: an erased entry no longer matches."""
        names = SUBJECT_FIELDS if user is None else tuple(f for f in SUBJECT_FIELDS if f != "tenant")
        out, after = Erased(), 0
        while page := self._store.audit_naming(tenant, user, after_seq=after, limit=PAGE):
            for e in page:
                self._erase_one(e, names, out)
            after = page[-1].seq
        return out

    def _erase_one(self, e: AuditEntry, names: tuple[str, ...], out: Erased) -> None:
        fields = {f: tombstone(f) for f in names}
        if e.salts is None:  # scheme 1: no digest to keep; the purge entry lists it
            self._store.erase_audit(e.seq, fields, None, orjson.dumps({"scheme": 1}).decode())
            out.v1.append(e.seq)
            return
        salts: dict[str, str] = orjson.loads(e.salts)
        digests: dict[str, str] = orjson.loads(e.digests or "{}")
        for f in names:
            if f not in digests:
                digests[f] = field_digest(salts.pop(f), getattr(e, f))
        self._store.erase_audit(e.seq, fields, orjson.dumps(salts).decode(), orjson.dumps(digests).decode())
        out.entries += 1

    def verify(self) -> Verdict:
        """The whole chain, from its first entry."""
        return self.verify_new(None)[0]

    def verify_new(self, since: Checkpoint | None) -> tuple[Verdict, Checkpoint]:
        """The entries appended after `since` (a checkpoint an earlier verify returned; None: the whole
        chain), linked to it; and the checkpoint to go on from (the head reached, or `since` if they do not
        hold). The checkpoint's own entry must still carry its hash; entries before it are not walked again
        (an edit there is found by a whole-chain `verify`)."""
        start = since or Checkpoint()
        head_seq, head_hash = self._store.audit_head()  # first: entries appended while walking are not judged
        if start.seq and [e.hash for e in self._store.list_audit(after_seq=start.seq - 1, limit=1)] != [start.hash]:
            why = f"entry {start.seq} changed since it was verified (edited or deleted)"
            return Verdict(False, start.seq - 1, start.seq, why), start
        prev_seq, prev_hash = start.seq, start.hash
        unlisted: set[int] = set()  # erased scheme-1 entries no purge entry has listed yet
        for e in self.entries(after=start.seq):
            if e.seq > head_seq:
                break
            if e.seq != prev_seq + 1:
                return Verdict(False, prev_seq, prev_seq + 1, f"entry {prev_seq + 1} is missing (deleted)"), start
            if e.prev_hash != prev_hash:
                why = f"entry {e.seq} does not follow entry {prev_seq}: its link names another hash (reordered or deleted)"
                return Verdict(False, prev_seq, e.seq, why), start
            if not _holds(e):
                return Verdict(False, prev_seq, e.seq, f"entry {e.seq} does not match its hash (edited)"), start
            if e.salts is None and e.digests is not None:
                unlisted.add(e.seq)
            if e.action in PURGE_ACTIONS:
                unlisted -= _listed_v1(e)
            prev_seq, prev_hash = e.seq, e.hash
        if unlisted:
            bad = min(unlisted)
            return Verdict(False, bad - 1, bad, f"entry {bad} was erased but no purge entry lists it (edited)"), start
        if (head_seq, head_hash) != (prev_seq, prev_hash):
            why = f"the chain ends at entry {prev_seq} but its head is entry {head_seq} (later entries deleted)"
            return Verdict(False, prev_seq, prev_seq + 1, why), start
        return Verdict(True, prev_seq), Checkpoint(prev_seq, prev_hash)

    def export(
        self, *, since: float | None = None, until: float | None = None, tenant: str | None = None
    ) -> Iterator[bytes]:
        """JSONL lines, each entry with its chain (prev_hash, hash, detail_json): a slice verifies on its own
        from its first entry's prev_hash."""
        for e in self.entries(since=since, until=until, tenant=tenant):
            yield orjson.dumps(entry_json(e)) + b"\n"


@dataclass(slots=True)
class Erased:
    entries: int = 0  # scheme-2 entries erased (their digests kept)
    v1: list[int] = field(default_factory=list)  # scheme-1 entries erased: the purge entry lists them


def _holds(e: AuditEntry) -> bool:
    """The entry matches its hash; an erased field holds its tombstone; an erased scheme-1 entry holds
    only tombstones (its content is no longer checked)."""
    if e.salts is None and e.digests is not None:
        return all(getattr(e, f) == tombstone(f) for f in SUBJECT_FIELDS if f != "tenant")
    try:
        digests: dict[str, str] = orjson.loads(e.digests or "{}")
        return entry_hash(e.seq, e, e.prev_hash) == e.hash and all(getattr(e, f) == tombstone(f) for f in digests)
    except (KeyError, ValueError, TypeError):
        return False


def _listed_v1(e: AuditEntry) -> set[int]:
    try:
        listed = orjson.loads(e.detail).get("result", {}).get("erased_v1", [])
        return {int(x) for x in listed}
    except (ValueError, TypeError, AttributeError):
        return set()


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_instant(text: str, name: str, now: float | None = None) -> float:
    """Unix seconds, an ISO 8601 time (UTC unless it names a zone), or a duration back from now (15m, 24h, 7d).
    ValueError names `name`."""
    import datetime
    import math

    now = time.time() if now is None else now
    try:
        if text[-1:] in _UNITS and text[:-1].replace(".", "", 1).isdigit():
            value = now - float(text[:-1]) * _UNITS[text[-1]]
        elif text.replace(".", "", 1).isdigit():
            value = float(text)
        else:
            at = datetime.datetime.fromisoformat(text)
            value = (at if at.tzinfo else at.replace(tzinfo=datetime.UTC)).timestamp()
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise ValueError(f"'{name}' must be unix seconds, an ISO 8601 time or a duration like 15m, 24h, 7d")
    return value
