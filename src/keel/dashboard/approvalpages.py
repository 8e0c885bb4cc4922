"""The approvals page: tool calls waiting for a person (filter: tenant), each with its arguments (redacted)
and Approve / Deny buttons that POST the decision, signed in like every page. A decision is the same one
conditional move as the admin API's and the CLI's: a second one changes nothing, and the page says so.
The arguments are untrusted: they reach the page only through `h`.
"""

from __future__ import annotations

import orjson

from keel.audit.log import redact
from keel.dashboard.markup import Safe, h, join, when
from keel.store.protocols.agents import CallRow

LIST_LIMIT = 200
RESULTS = {
    "approved": "Approved: the run goes on.",
    "denied": "Denied: the model hears it as the call's error.",
    "unchanged": "Already decided (or expired): nothing changed.",
}


def render_approvals(tenant: str, rows: list[CallRow], call: str | None = None, result: str | None = None) -> Safe:
    form = h(
        '<form class="filters" method="get" action="/ui/approvals"><label>tenant<input name="tenant" value="{}">'
        '</label><button type="submit">Filter</button></form>',
        tenant,
    )
    note = h('<p id="result" data-call="{}">{}</p>', call or "", RESULTS[result]) if result in RESULTS else Safe("")
    head = Safe(
        "<tr><th>Asked (UTC)</th><th>Tenant</th><th>Tool</th><th>Arguments</th><th>Run</th><th>Expires (UTC)</th>"
        "<th>Decide</th></tr>"
    )
    body = join(_row(r) for r in rows[:LIST_LIMIT]) or Safe('<tr><td colspan="7" class="muted">Nothing waits</td></tr>')
    return h('<h1>Approvals</h1>{}{}<table id="approvals">{}{}</table>', form, note, head, body)


def _row(r: CallRow) -> Safe:
    args = orjson.dumps(redact(r.arguments)).decode()
    buttons = join(
        h('<form method="post" action="/ui/approvals/{}/{}"><button type="submit">{}</button></form>', r.id, a, label)
        for a, label in (("approve", "Approve"), ("deny", "Deny"))
    )
    return h(
        '<tr data-call="{}"><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td>'
        "<td>{}</td></tr>",
        r.id, when(r.created_at), r.tenant, r.tool, args[:500], r.run_id, when(r.expires_at), buttons,
    )  # fmt: skip
