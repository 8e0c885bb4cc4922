"""Audit queries and range exports that verify on their own, without Keel or its database.

`AuditQuery` is the one filter the API, the CLI and the SIEM shipper share (time range, tenant, actor,
action prefix, target). A `Snapshot` pages an export (memory bounded by a page) up to the chain's head as
it was when the export began; `export` streams one whole (the CLI), the API drives a Snapshot in a thread.
An unfiltered time range is exported as the seq range of its first to last entry: one unbroken piece.

A JSONL export is self-verifying: each line is an entry with its chain fields (the exact `detail_json`
that was hashed, `prev_hash`, `hash`), and the last line is a trailer `{"keel_audit_export": {...}}` with
the range, the filters, the count, the first entry's `prev_hash` (the anchor: the hash of the entry
before the range) and the last hash. `verify_file` recomputes every hash, checks every link between
consecutive entries and, for an unfiltered range, that no seq is missing and the trailer matches, so a
cut, edited, reordered or thinned file is named. A CSV export has the same columns and no trailer: its
entries and links verify, its completeness cannot.
"""

from __future__ import annotations

import csv
import datetime
import io
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from keel.audit.log import entry_json, parse_instant
from keel.store.protocols.audit import AuditEntry, AuditStore, entry_hash

PAGE = 500
TRAILER = "keel_audit_export"
FILTERS = ("tenant", "actor", "action", "target")
CSV_COLUMNS = ("seq", "at", "at_iso", "tenant", "actor", "action", "target", "source_ip", "detail_json",
               "prev_hash", "hash")  # fmt: skip
FORMATS = ("jsonl", "csv")


class QueryError(ValueError):
    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.param = param


@dataclass(frozen=True, slots=True)
class AuditQuery:
    since: float | None = None
    until: float | None = None  # exclusive
    tenant: str | None = None
    actor: str | None = None
    action: str | None = None  # a prefix: "prompt." matches every prompt action
    target: str | None = None

    @classmethod
    def parse(cls, params: Mapping[str, str | None], now: float | None = None) -> AuditQuery:
        """From query-string or CLI values: times as unix seconds, ISO 8601 or a duration back (24h).
        QueryError names the parameter."""
        times: dict[str, float | None] = {}
        for name in ("since", "until"):
            text = params.get(name)
            try:
                times[name] = None if text is None or text == "" else parse_instant(text, name, now)
            except ValueError as exc:
                raise QueryError(str(exc), name) from None
        given: dict[str, str | None] = {}
        for name in FILTERS:
            value = params.get(name)
            if value is not None and not 0 < len(value) <= 256:
                raise QueryError(f"'{name}' must be 1 to 256 characters", name)
            given[name] = value or None
        return cls(times["since"], times["until"], **given)

    @property
    def filtered(self) -> bool:
        """True when entries inside the range are left out: the export's links then have gaps."""
        return any(getattr(self, name) for name in FILTERS)

    def json(self) -> dict[str, Any]:
        return {"since": self.since, "until": self.until, **{n: getattr(self, n) for n in FILTERS}}

    def page(self, store: AuditStore, after: int, limit: int) -> list[AuditEntry]:
        return store.list_audit(after_seq=after, since=self.since, until=self.until, tenant=self.tenant,
                                actor=self.actor, action=self.action, target=self.target, limit=limit)  # fmt: skip


@dataclass(slots=True)
class Snapshot:
    """An export in progress: pages up to the head read at its start, and what the trailer will say."""

    query: AuditQuery
    head_seq: int
    head_hash: str
    after: int = 0
    count: int = 0
    first_seq: int | None = None
    anchor: str | None = None  # prev_hash of the first entry exported
    last_seq: int | None = None
    last_hash: str | None = None
    stop: int | None = None  # the last seq to export (None: the head)
    by_seq: bool = False  # page by seq alone (an unfiltered time range turned into its seq range)

    @classmethod
    def begin(cls, store: AuditStore, query: AuditQuery) -> Snapshot:
        """Up to the head as it is now. An unfiltered time range becomes the seq range from its first entry
        to its last, every entry between included: one unbroken piece of the chain, even where clocks of
        several processes put an entry's `at` a little out of order."""
        head_seq, head_hash = store.audit_head()
        if query.filtered or (query.since is None and query.until is None):
            return cls(query, head_seq, head_hash)
        bounds = store.audit_seq_range(query.since, query.until)
        if bounds is None:
            return cls(query, head_seq, head_hash, after=head_seq)
        return cls(query, head_seq, head_hash, after=bounds[0] - 1, stop=min(bounds[1], head_seq), by_seq=True)

    @property
    def last(self) -> int:
        return self.head_seq if self.stop is None else self.stop

    def next_page(self, store: AuditStore) -> list[AuditEntry]:
        """The next page (empty when done); synchronous: the API runs it in a thread."""
        if self.after >= self.last:
            return []
        query = AuditQuery() if self.by_seq else self.query
        page = [e for e in query.page(store, self.after, PAGE) if e.seq <= self.last]
        if page:
            self.after = page[-1].seq
            if self.first_seq is None:
                self.first_seq, self.anchor = page[0].seq, page[0].prev_hash
            self.last_seq, self.last_hash = page[-1].seq, page[-1].hash
            self.count += len(page)
        else:
            self.after = self.last
        return page

    def trailer(self) -> bytes:
        body = {
            "format": 1,
            "query": self.query.json(),
            "complete": not self.query.filtered,  # every entry of the range, so no seq may be missing
            "count": self.count,
            "first_seq": self.first_seq,
            "prev_hash": self.anchor,
            "last_seq": self.last_seq,
            "last_hash": self.last_hash,
            "head_seq": self.head_seq,
            "head_hash": self.head_hash,
        }
        return orjson.dumps({TRAILER: body}) + b"\n"


def jsonl_lines(page: Iterable[AuditEntry]) -> bytes:
    return b"".join(orjson.dumps(entry_json(e)) + b"\n" for e in page)


def csv_header() -> bytes:
    return _csv([CSV_COLUMNS])


def csv_lines(page: Iterable[AuditEntry]) -> bytes:
    return _csv([(e.seq, repr(e.at), _iso(e.at), e.tenant, e.actor, e.action, e.target, e.source_ip, e.detail,
                  e.prev_hash, e.hash) for e in page])  # fmt: skip


def _csv(rows: Iterable[Iterable[Any]]) -> bytes:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(["" if v is None else v for v in row] for row in rows)
    return out.getvalue().encode()


def _iso(at: float) -> str:
    return datetime.datetime.fromtimestamp(at, datetime.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def export(store: AuditStore, query: AuditQuery, fmt: str) -> Iterator[bytes]:
    """The whole export as chunks of bytes, one per page (the CLI's; the API pages in a thread)."""
    snap = Snapshot.begin(store, query)
    if fmt == "csv":
        yield csv_header()
    while page := snap.next_page(store):
        yield csv_lines(page) if fmt == "csv" else jsonl_lines(page)
    if fmt == "jsonl":
        yield snap.trailer()


# ---- offline verification ------------------------------------------------------------------------------


@dataclass(slots=True)
class FileVerdict:
    ok: bool = True
    entries: int = 0  # entries whose hash recomputes
    links: int = 0  # links checked between consecutive entries
    gaps: int = 0  # places a filtered export leaves entries out (links not checkable there)
    first_seq: int | None = None
    last_seq: int | None = None
    anchor: str | None = None  # the hash of the entry before the range (first entry's prev_hash)
    complete: bool | None = None  # what the trailer claims (None: no trailer, a CSV)
    seen: int = 0  # entry lines read, good or bad
    last_hash: str | None = None
    problems: list[str] = field(default_factory=list)

    def bad(self, why: str) -> None:
        self.ok = False
        self.problems.append(why)

    def json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "entries": self.entries,
            "links": self.links,
            "gaps": self.gaps,
            "first_seq": self.first_seq,
            "last_seq": self.last_seq,
            "prev_hash": self.anchor,
            "complete": self.complete,
            "problems": self.problems[:20],
        }


def _entry(d: Mapping[str, Any]) -> AuditEntry:
    return AuditEntry(int(d["seq"]), float(d["at"]), d.get("tenant") or None, str(d["actor"]), str(d["action"]),
                      d.get("target") or None, str(d["detail_json"]), d.get("source_ip") or None,
                      str(d["prev_hash"]), str(d["hash"]))  # fmt: skip


def read_jsonl(lines: Iterable[bytes]) -> Iterator[dict[str, Any]]:
    for n, line in enumerate(lines, 1):
        if line.strip():
            try:
                value = orjson.loads(line)
            except orjson.JSONDecodeError:
                value = None
            if not isinstance(value, dict):
                raise ValueError(f"line {n} is not a JSON object")
            yield value


def read_csv(text: Iterable[str]) -> Iterator[dict[str, Any]]:
    yield from csv.DictReader(text)


def verify_file(rows: Iterable[Mapping[str, Any]], *, csv_form: bool = False) -> FileVerdict:
    """Check an exported range on its own: every hash, every link, and the trailer (JSONL)."""
    v = FileVerdict()
    trailer: Mapping[str, Any] | None = None
    prev: AuditEntry | None = None
    for row in rows:
        if trailer is not None:
            v.bad("lines follow the export's trailer")
            break
        if TRAILER in row:
            trailer = row[TRAILER]
            continue
        try:
            e = _entry(row)
        except (KeyError, TypeError, ValueError):
            v.bad(f"a line that is not an audit entry after entry {prev.seq if prev else 0}")
            continue
        _check(v, e, row, prev, csv_form)
        prev = e
    if not csv_form:
        _check_trailer(v, trailer)
    return v


def _check(v: FileVerdict, e: AuditEntry, row: Mapping[str, Any], prev: AuditEntry | None, csv_form: bool) -> None:
    if entry_hash(e.seq, e, e.prev_hash) != e.hash:
        v.bad(f"entry {e.seq} does not match its hash (edited)")
    elif not csv_form and "detail" in row and row["detail"] != orjson.loads(e.detail):
        v.bad(f"entry {e.seq}: 'detail' differs from the hashed 'detail_json' (edited)")
    else:
        v.entries += 1
    if prev is None:
        v.first_seq, v.anchor = e.seq, e.prev_hash
    elif e.seq <= prev.seq:
        v.bad(f"entry {e.seq} comes after entry {prev.seq} (reordered or repeated)")
    elif e.seq == prev.seq + 1:
        if e.prev_hash != prev.hash:
            v.bad(f"entry {e.seq} does not follow entry {prev.seq}: its link names another hash")
        else:
            v.links += 1
    else:
        v.gaps += 1
    v.seen += 1
    v.last_seq, v.last_hash = e.seq, e.hash


def _check_trailer(v: FileVerdict, t: Mapping[str, Any] | None) -> None:
    if not isinstance(t, Mapping):
        v.bad(f"the export's last line ({TRAILER}) is missing: the file is cut short")
        return
    v.complete = bool(t.get("complete"))
    if v.complete and v.gaps:
        v.bad(f"{v.gaps} gap(s) in the numbering of an unfiltered range: entries were removed")
    said = (t.get("count"), t.get("first_seq"), t.get("prev_hash"), t.get("last_seq"), t.get("last_hash"))
    found = (v.seen, v.first_seq, v.anchor, v.last_seq, v.last_hash)
    if said != found:
        v.bad(f"the trailer says {said[0]} entries, seq {said[1]} to {said[3]}; the file holds {found[0]}, "
              f"seq {found[1]} to {found[3]} (cut, thinned or its ends changed)")  # fmt: skip
