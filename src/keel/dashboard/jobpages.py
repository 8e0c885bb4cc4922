"""The jobs page: queue depth and oldest age per queue and state, then the newest jobs (filters: state,
kind, tenant), stuck ones shown as such. Read-only; cancel and retry stay with the admin API and CLI.
A job's payload, result and error are untrusted: they reach the page only through `h`.
"""

from __future__ import annotations

from keel.dashboard.markup import Safe, h, join, when
from keel.jobs.views import STATES, job_query, shown_state
from keel.store.protocols import Job, JobQuery, QueueDepth

LIST_LIMIT = 100


def jobs_query(query: dict[str, str], stuck_after: int) -> tuple[dict[str, str], JobQuery]:
    """The filter form's fields (empty ones dropped) and their query; ValueError names a bad field."""
    params = {k: query[k].strip() for k in ("state", "kind", "tenant") if query.get(k, "").strip()}
    return params, job_query({**params, "limit": str(LIST_LIMIT)}, stuck_after)


def render_jobs(
    params: dict[str, str], depths: list[QueueDepth], jobs: list[Job], stuck_after: int, error: str | None = None
) -> Safe:
    states = join(
        h('<option value="{}"{}>{}</option>', s, Safe(" selected" if s == params.get("state", "") else ""), s or "any")
        for s in ("", *STATES)
    )
    fields = join(
        h('<label>{}<input name="{}" value="{}"></label>', n, n, params.get(n, "")) for n in ("kind", "tenant")
    )
    form = h(
        '<form class="filters" method="get" action="/ui/jobs"><label>state<select name="state">{}</select></label>{}'
        '<button type="submit">Filter</button></form>',
        states,
        fields,
    )
    cards = join(_card(d) for d in depths) or Safe('<p class="muted">No queued, running or dead jobs.</p>')
    if error:
        return h('<h1>Jobs</h1><div class="cards">{}</div>{}<p class="error" id="error">{}</p>', cards, form, error)
    head = Safe(
        "<tr><th>Created (UTC)</th><th>Job</th><th>Kind</th><th>Queue</th><th>Tenant</th><th>State</th>"
        '<th class="n">Attempts</th><th>Progress</th><th>Error</th></tr>'
    )
    rows = join(_row(j, stuck_after) for j in jobs) or Safe('<tr><td colspan="9" class="muted">No jobs</td></tr>')
    return h('<h1>Jobs</h1><div class="cards">{}</div>{}<table id="jobs">{}{}</table>', cards, form, head, rows)


def _card(d: QueueDepth) -> Safe:
    age = f"oldest {d.oldest_s:.0f} s" + (f", {d.stuck} stuck" if d.stuck else "")
    detail = h('<span class="muted">{}</span>', age) if d.state != "dead" else Safe("")
    return h(
        '<div class="card" data-queue="{}" data-state="{}">{} · {}<b>{}</b>{}</div>',
        d.queue,
        d.state,
        d.queue,
        d.state,
        d.count,
        detail,
    )


def _row(j: Job, stuck_after: int) -> Safe:
    state = shown_state(j, stuck_after)
    progress = "" if j.progress_done is None and j.progress_total is None else f"{j.progress_done}/{j.progress_total}"
    if j.progress_message:
        progress = f"{progress} {j.progress_message}".strip()
    css = "status-error" if state in ("dead", "stuck") else ""
    return h(
        '<tr data-job="{}"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class="{}">{}</td>'
        '<td class="n">{}/{}</td><td>{}</td><td>{}</td></tr>',
        j.id, when(j.created_at), j.id, j.kind, j.queue, j.tenant or "–", css, state, j.attempts,
        j.max_attempts, progress or "–", (j.error or "")[:200],
    )  # fmt: skip
