"""The audit page: the hash-chained log of changes, filtered (time window, actor, action prefix, tenant)
and paged in chain order, with the chain's verification status and an export (JSONL or CSV) of the range
shown.

Queries and exports are the audit capability's own (`keel.audit.export`: the store filters, the export
pages in bounded memory and its JSONL ends with a trailer that lets the file verify on its own), so the
page shows exactly what `GET /api/audit` and `keel audit export` would. Verification is incremental: a
view walks only the entries appended since the last verified head (the whole chain every
`FULL_VERIFY_S`, and after a break), and a verdict is kept for `VERIFY_TTL_S` while the head has not
moved. Audit details are
redacted when written; they still reach the page only through `h`.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from dataclasses import dataclass
from urllib.parse import urlencode

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from keel.audit.export import AuditQuery, QueryError, export
from keel.audit.log import AuditLog, Checkpoint, Verdict
from keel.dashboard.markup import Safe, View, h, join, when
from keel.store.protocols.audit import AuditEntry, AuditStore
from keel.tenancy.actor import Actor

PAGE = 100  # entries shown per page
VERIFY_TTL_S = 10.0
FULL_VERIFY_S = 3600.0  # the whole chain again: finds an edit of an entry verified before
FILTERS = ("since", "until", "actor", "action", "tenant")


@dataclass(frozen=True, slots=True)
class AuditView:
    query: AuditQuery
    after: int  # the page starts after this seq
    shown: dict[str, str]  # the filters as the form shows them

    def link(self, path: str, **more: str) -> str:
        params = {k: v for k, v in {**self.shown, **more}.items() if v}
        return f"{path}?{urlencode(params)}" if params else path


def audit_query(request: Request, actor: Actor) -> AuditView:
    """The page's query from its URL; ValueError names the bad parameter. A tenant actor sees its tenant only."""
    q = request.query_params
    shown = {k: (q.get(k) or "").strip() for k in FILTERS}
    if "since" not in q:
        shown["since"] = "24h"
    if actor.tenant is not None:
        shown["tenant"] = actor.tenant
    try:
        query = AuditQuery.parse({k: v or None for k, v in shown.items()})
    except QueryError as exc:
        raise ValueError(str(exc)) from None
    after_text = q.get("after") or "0"
    if not (after_text.isdigit() and len(after_text) <= 18):
        raise ValueError("'after' must be an entry's sequence number.")
    return AuditView(query, int(after_text), shown)


@dataclass(frozen=True, slots=True)
class AuditPage:
    entries: list[AuditEntry]
    next_after: int | None  # more may match after this seq


def read_page(store: AuditStore, view: AuditView) -> AuditPage:
    """Blocking: run it in a worker thread."""
    rows = view.query.page(store, view.after, PAGE)
    return AuditPage(rows, rows[-1].seq if len(rows) == PAGE else None)


def export_response(store: AuditStore, view: AuditView, fmt: str) -> Response:
    """The audit capability's export of the page's range (JSONL with its trailer, or CSV), streamed."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    return StreamingResponse(
        export(store, view.query, fmt),  # a sync iterator of pages: Starlette reads it in a worker thread
        media_type="application/x-ndjson" if fmt == "jsonl" else "text/csv",
        headers={
            "content-disposition": f'attachment; filename="keel-audit-{stamp}.{fmt}"',
            "cache-control": "no-store",
            "x-content-type-options": "nosniff",
        },
    )


class Verifier:
    """The chain's verdict for the page: `AuditLog.verify_new` from the last verified head, so a page view
    walks only the entries appended since; the whole chain again every `full_s` (an edit before the
    checkpoint is found then) and after a verdict that did not hold. A verdict is reused for `ttl_s` while
    the head stays where it was."""

    def __init__(
        self, log: AuditLog, store: AuditStore, ttl_s: float = VERIFY_TTL_S, full_s: float = FULL_VERIFY_S
    ) -> None:
        self._log, self._store, self._ttl_s, self._full_s = log, store, ttl_s, full_s
        self._lock = threading.Lock()
        self._last: tuple[tuple[int, str], float, Verdict] | None = None
        self._checkpoint: Checkpoint | None = None
        self._full_at = -math.inf  # monotonic

    def verdict(self) -> tuple[Verdict, float]:
        """The verdict and when it was reached (blocking: run it in a worker thread)."""
        with self._lock:  # one walk of the chain at a time; others wait and reuse it
            head = self._store.audit_head()
            last = self._last
            if last is not None and last[0] == head and time.monotonic() - last[1] < self._ttl_s:
                return last[2], time.time() - (time.monotonic() - last[1])
            if self._checkpoint is None or time.monotonic() - self._full_at >= self._full_s:
                self._checkpoint, self._full_at = None, time.monotonic()
            verdict, checkpoint = self._log.verify_new(self._checkpoint)
            self._checkpoint = checkpoint if verdict.ok else None
            self._last = (head, time.monotonic(), verdict)
            return verdict, time.time()


async def read_audit(store: AuditStore, verifier: Verifier, view: AuditView) -> tuple[AuditPage, Verdict, float]:
    page = await asyncio.to_thread(read_page, store, view)
    verdict, at = await asyncio.to_thread(verifier.verdict)
    return page, verdict, at


def render_audit(view: AuditView, page: AuditPage, verdict: Verdict, verified_at: float, scoped: bool) -> Safe:
    return h(
        "<h1>Audit log</h1>{}{}{}{}{}",
        _status(verdict, verified_at),
        _form(view.shown, scoped),
        _table(page.entries),
        _more(view, page),
        h(
            '<p>Download this range: <a id="export" href="{}">JSONL</a> (verifies on its own: '
            '<code>keel audit verify --file</code>) · <a id="export-csv" href="{}">CSV</a></p>',
            view.link("/ui/audit/export"),
            view.link("/ui/audit/export", format="csv"),
        ),
    )


def render_error(shown: dict[str, str], message: str, scoped: bool) -> View:
    body = h('<h1>Audit log</h1>{}<p class="error" id="error">{}</p>', _form(shown, scoped), message)
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


def _form(shown: dict[str, str], scoped: bool) -> Safe:
    names = [n for n in FILTERS if not (scoped and n == "tenant")]
    hints = {
        "since": "since (24h, ISO, unix)",
        "until": "until",
        "actor": "actor (user:ann)",
        "action": "action (prefix)",
    }
    fields = join(
        h('<label>{}<input name="{}" value="{}"></label>', hints.get(n, n), n, shown.get(n, "")) for n in names
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


def _more(view: AuditView, page: AuditPage) -> Safe:
    if page.next_after is None:
        return Safe("")
    link = view.link("/ui/audit", after=str(page.next_after))
    return h('<p class="muted"><a id="next" href="{}">Next entries →</a></p>', link)
