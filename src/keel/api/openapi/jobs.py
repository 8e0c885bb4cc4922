"""Background jobs (api/jobs_admin.py): the same views and filters as `keel jobs`; admin token only."""

from __future__ import annotations

from keel.api.openapi.spec import ANY, BOOL, INT, STR, TIME, Op, Schema, enum, null, obj, page, q

STATES = ("queued", "running", "succeeded", "dead", "cancelled", "stuck")
JOB: Schema = obj(
    ("id", "kind", "queue", "state", "attempts", "created_at"),
    id=STR,
    kind=STR,
    queue=STR,
    tenant=null(STR),
    state=STR,
    stored_state=STR,
    priority=INT,
    attempts=INT,
    max_attempts=INT,
    lease_expiries=INT,
    cancel_requested=BOOL,
    idempotency_key=null(STR),
    progress=obj(done=null(INT), total=null(INT), message=null(STR)),
    payload=ANY,
    result=ANY,
    error=null(STR),
    worker=null(STR),
    run_at=null(TIME),
    created_at=TIME,
    started_at=null(TIME),
    finished_at=null(TIME),
    lease_until=null(TIME),
)

JOBS: tuple[Op, ...] = (
    Op(
        "GET",
        "/api/jobs",
        "List jobs, newest first",
        {200: page(JOB, next_before=null(STR))},
        query=(
            q("state", enum(*STATES)),
            q("kind"),
            q("tenant"),
            q("queue"),
            q("limit", {"type": "integer", "minimum": 1, "maximum": 1000}),
            q("before", STR, "a job id: the page after it"),
        ),
    ),
    Op("GET", "/api/jobs/{job_id}", "One job", {200: JOB}),
    Op("POST", "/api/jobs/{job_id}/cancel", "Cancel a job (a running one stops at its next heartbeat)", {200: JOB}),
    Op("POST", "/api/jobs/{job_id}/retry", "Retry a dead or cancelled job", {200: JOB}),
)

NAMED: dict[str, Schema] = {"Job": JOB}
