"""The audit page: the hash-chained log of changes, filtered (time window, actor, action, tenant) and paged
in chain order, with the chain's verification status and a JSONL export of the range shown.

The store filters by time and tenant; actor and action (both prefixes: "user:" is every user, "keys." every
key change) are matched here, over at most `SCAN` entries per page, so a rare actor never makes one page
read the whole log: the page then says how far it looked and links on from there. Verification walks
the whole chain, so its verdict is kept for `VERIFY_TTL_S` while the chain's head has not moved.
Audit details are redacted when written; they still reach the page only through `h`.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlencode

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from keel.audit.log import AuditLog, Verdict, entry_json, parse_instant
from keel.dashboard.markup import Safe, View, h, join, when
from keel.store.protocols.audit import AuditEntry, AuditStore
from keel.tenancy.actor import Actor

PAGE = 100  # entries shown per page
SCAN = 5000  # entries read at most to fill one page
READ = 500  # entries per store read
VERIFY_TTL_S = 10.0
FILTERS = ("since", "until", "actor", "action", "tenant")


@dataclass(frozen=True, slots=True)
class AuditQuery:
    since: float | None
    until: float | None
    actor: str | None  # prefix
    action: str | None  # prefix
    tenant: str | None
    after: int  # the page starts after this seq
    shown: dict[str, str]  # the filters as the form shows them

    def matches(self, e: AuditEntry) -> bool:
        return (self.actor is None or e.actor.startswith(self.actor)) and (
            self.action is None or e.action.startswith(self.action)
        )

    def link(self, path: str, **more: str) -> str:
        params = {k: v for k, v in {**self.shown, **more}.items() if v}
        return f"{path}?{urlencode(params)}" if params else path


def audit_query(request: Request, actor: Actor) -> AuditQuery:
    """The page's query from its URL; ValueError names the bad parameter. A tenant actor sees its tenant only."""
    q = request.query_params
    shown = {k: (q.get(k) or "").strip() for k in FILTERS}
    if "since" not in q:
        shown["since"] = "24h"
    if actor.tenant is not None:
        shown["tenant"] = actor.tenant
    bounds = {k: parse_instant(shown[k], k) if shown[k] else None for k in ("since", "until")}
    after_text = q.get("after") or "0"
    if not (after_text.isdigit() and len(after_text) <= 18):
        raise ValueError("'after' must be an entry's sequence number.")
    return AuditQuery(
        bounds["since"],
        bounds["until"],
        shown["actor"] or None,
        shown["action"] or None,
        shown["tenant"] or None,
        int(after_text),
        shown,
    )


@dataclass(frozen=True, slots=True)
class AuditPage:
    entries: list[AuditEntry]
    next_after: int | None  # more may match after this seq
    scanned_to: int | None  # the scan stopped here without filling the page


def read_page(store: AuditStore, query: AuditQuery) -> AuditPage:
    """Blocking: run it in a worker thread."""
    found: list[AuditEntry] = []
    cursor, scanned = query.after, 0
    while True:
        rows = store.list_audit(after_seq=cursor, since=query.since, until=query.until, tenant=query.tenant, limit=READ)
        for e in rows:
            cursor, scanned = e.seq, scanned + 1
            if query.matches(e):
                found.append(e)
                if len(found) == PAGE:
                    return AuditPage(found, e.seq, None)
        if len(rows) < READ:
            return AuditPage(found, None, None)
        if scanned >= SCAN:
            return AuditPage(found, cursor, cursor)


def export_lines(log: AuditLog, query: AuditQuery) -> Iterator[bytes]:
    """The whole filtered range as JSONL, each entry with its chain links, in chunks of up to `READ` lines
    (blocking: a worker thread iterates it, one hop per chunk rather than per line)."""
    chunk: list[bytes] = []
    for e in log.entries(since=query.since, until=query.until, tenant=query.tenant):
        if query.matches(e):
            chunk.append(orjson.dumps(entry_json(e)) + b"\n")
            if len(chunk) == READ:
                yield b"".join(chunk)
                chunk = []
    if chunk:
        yield b"".join(chunk)


def export_response(log: AuditLog, query: AuditQuery) -> Response:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    return StreamingResponse(
        export_lines(log, query),  # a sync iterator: Starlette reads it in a worker thread
        media_type="application/x-ndjson",
        headers={
            "content-disposition": f'attachment; filename="keel-audit-{stamp}.jsonl"',
            "cache-control": "no-store",
            "x-content-type-options": "nosniff",
        },
    )


class Verifier:
    """`AuditLog.verify`, its verdict reused for `ttl_s` while the chain's head stays where it was."""

    def __init__(self, log: AuditLog, store: AuditStore, ttl_s: float = VERIFY_TTL_S) -> None:
        self._log, self._store, self._ttl_s = log, store, ttl_s
        self._lock = threading.Lock()
        self._last: tuple[tuple[int, str], float, Verdict] | None = None

    def verdict(self) -> tuple[Verdict, float]:
        """The verdict and when it was reached (blocking: run it in a worker thread)."""
        with self._lock:  # one walk of the chain at a time; others wait and reuse it
            head = self._store.audit_head()
            last = self._last
            if last is not None and last[0] == head and time.monotonic() - last[1] < self._ttl_s:
                return last[2], time.time() - (time.monotonic() - last[1])
            verdict = self._log.verify()
            self._last = (head, time.monotonic(), verdict)
            return verdict, time.time()


async def read_audit(store: AuditStore, verifier: Verifier, query: AuditQuery) -> tuple[AuditPage, Verdict, float]:
    page = await asyncio.to_thread(read_page, store, query)
    verdict, at = await asyncio.to_thread(verifier.verdict)
    return page, verdict, at


def render_audit(query: AuditQuery, page: AuditPage, verdict: Verdict, verified_at: float, scoped: bool) -> Safe:
    return h(
        "<h1>Audit log</h1>{}{}{}{}{}",
        _status(verdict, verified_at),
        _form(query, scoped),
        _table(page.entries),
        _more(query, page),
        h('<p><a id="export" href="{}">Download this range as JSONL</a></p>', query.link("/ui/audit/export")),
    )


def render_error(query_shown: dict[str, str], message: str, scoped: bool) -> View:
    dummy = AuditQuery(None, None, None, None, None, 0, query_shown)
    body = h('<h1>Audit log</h1>{}<p class="error" id="error">{}</p>', _form(dummy, scoped), message)
    return View("Audit", body, 400)


def _status(v: Verdict, at: float) -> Safe:
    if v.ok:
        return h(
            '<p id="chain" class="ok" data-ok="true">Chain verified: all {} entries hold (checked {}).</p>',
            v.checked,
            when(at),
        )
    return h(
        '<p id="chain" class="error" data-ok="false">Chain broken at entry {}: {} ({} entries before it hold; checked {}).</p>',
        v.bad_seq,
        v.reason,
        v.checked,
        when(at),
    )


def _form(query: AuditQuery, scoped: bool) -> Safe:
    names = [n for n in FILTERS if not (scoped and n == "tenant")]
    hints = {
        "since": "since (24h, ISO, unix)",
        "until": "until",
        "actor": "actor (prefix)",
        "action": "action (prefix)",
    }
    fields = join(
        h('<label>{}<input name="{}" value="{}"></label>', hints.get(n, n), n, query.shown.get(n, "")) for n in names
    )
    return h(
        '<form class="filters" method="get" action="/ui/audit">{}<button type="submit">Filter</button></form>', fields
    )


def _table(entries: list[AuditEntry]) -> Safe:
    head = Safe(
        '<tr><th class="n">Seq</th><th>When (UTC)</th><th>Tenant</th><th>Actor</th><th>Action</th><th>Target</th>'
        "<th>Source IP</th><th>Detail</th><th>Hash</th></tr>"
    )
    rows = join(_row(e) for e in entries) or Safe('<tr><td colspan="9" class="muted">No entries</td></tr>')
    return h('<table id="audit">{}{}</table>', head, rows)


def _row(e: AuditEntry) -> Safe:
    try:
        detail = orjson.dumps(orjson.loads(e.detail), option=orjson.OPT_INDENT_2).decode()
    except orjson.JSONDecodeError:
        detail = e.detail
    return h(
        '<tr data-seq="{}"><td class="n">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>'
        "<td><details><summary>detail</summary><pre>{}</pre></details></td><td><code>{}</code></td></tr>",
        e.seq,
        e.seq,
        when(e.at),
        e.tenant or "–",
        e.actor,
        e.action,
        e.target or "–",
        e.source_ip or "–",
        detail,
        e.hash[:12],
    )


def _more(query: AuditQuery, page: AuditPage) -> Safe:
    if page.next_after is None:
        return Safe("")
    why = (
        h("Looked through entries up to {} without filling the page. ", page.scanned_to)
        if page.scanned_to is not None
        else Safe("")
    )
    return h(
        '<p class="muted">{}<a id="next" href="{}">Next entries →</a></p>',
        why,
        query.link("/ui/audit", after=str(page.next_after)),
    )
