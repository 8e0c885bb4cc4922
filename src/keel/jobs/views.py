"""A job as operators see it (admin API, `keel jobs`): its fields, with `stuck` shown as a state."""

from __future__ import annotations

from typing import Any

from keel.store.protocols import JOB_STATES, Job, JobQuery

FILTERS = ("state", "kind", "tenant", "queue")
STATES = (*JOB_STATES, "stuck")  # `stuck`: a filter and a shown state, never stored


def shown_state(job: Job, stuck_after: int) -> str:
    return "stuck" if job.stuck(stuck_after) else job.state


def job_view(job: Job, stuck_after: int) -> dict[str, Any]:
    return {
        "id": job.id,
        "kind": job.kind,
        "queue": job.queue,
        "tenant": job.tenant,
        "state": shown_state(job, stuck_after),
        "stored_state": job.state,
        "priority": job.priority,
        "attempts": job.attempts,
        "max_attempts": job.max_attempts,
        "lease_expiries": job.expiries,
        "cancel_requested": job.cancel_requested,
        "idempotency_key": job.idempotency_key,
        "progress": {"done": job.progress_done, "total": job.progress_total, "message": job.progress_message},
        "payload": job.payload,
        "result": job.result,
        "error": job.error,
        "worker": job.worker,
        "run_at": job.run_at,
        "created_at": job.created_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
        "lease_until": job.lease_until,
        "timeout_s": job.timeout_s,
    }


def job_query(params: dict[str, str], stuck_after: int) -> JobQuery:
    """Filters from a query string or the command line; ValueError names the bad one."""
    state = params.get("state")
    if state is not None and state not in STATES:
        raise ValueError(f"state must be one of {', '.join(STATES)}, not {state!r}")
    try:
        limit = int(params.get("limit", "50"))
    except ValueError:
        raise ValueError(f"limit must be a whole number, not {params['limit']!r}") from None
    if not 1 <= limit <= 1000:
        raise ValueError("limit must be between 1 and 1000")
    return JobQuery(
        state=None if state in (None, "stuck") else state,  # type: ignore[arg-type]
        kind=params.get("kind"),
        tenant=params.get("tenant"),
        queue=params.get("queue"),
        stuck_after=stuck_after if state == "stuck" else None,
        limit=limit,
        before=params.get("before"),
    )
