"""The admin API's job routes (`/api/jobs…`): the same views and filters as `keel jobs`
(keel.jobs.views), over the runtime's queue. Mounted by admin.py behind the guard: an operator sees
every tenant's jobs, anyone else their own tenant's only."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from keel.api.openai import JSON_TYPE
from keel.errors import InvalidRequest, NotFound
from keel.jobs.queue import JobQueue
from keel.jobs.views import job_query, job_view
from keel.runtime.components import Runtime
from keel.store.protocols import Job
from keel.tenancy.actor import Actor

Endpoint = Callable[[Runtime, Request, Actor], Awaitable[Response]]


def _queue(rt: Runtime) -> JobQueue:
    assert rt.jobs is not None  # the jobs builder is always listed
    return rt.jobs


def _json(data: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status, media_type=JSON_TYPE)


def _found(rt: Runtime, job: Job | None, job_id: str) -> Response:
    if job is None:
        raise NotFound(f"No job with id '{job_id}'.")
    return _json(job_view(job, rt.config.jobs.stuck_after))


async def _own(rt: Runtime, actor: Actor, job_id: str) -> Job | None:
    """The job, if it is the actor's tenant's (an operator: any job)."""
    job = await _queue(rt).get(job_id)
    if job is None or actor.tenant not in (None, job.tenant):
        raise NotFound(f"No job with id '{job_id}'.")
    return job


async def list_jobs(rt: Runtime, request: Request, actor: Actor) -> Response:
    """?state=queued|running|succeeded|dead|cancelled|stuck&kind=&tenant=&queue=&limit=&before=<job id>"""
    params = dict(request.query_params)
    if actor.tenant is not None:
        params["tenant"] = actor.tenant
    try:
        query = job_query(params, rt.config.jobs.stuck_after)
    except ValueError as exc:
        field = str(exc).split(" ", 1)[0]
        raise InvalidRequest(str(exc), field) from None
    jobs = await _queue(rt).list_jobs(query)
    data = [job_view(j, rt.config.jobs.stuck_after) for j in jobs]
    return _json({"data": data, "next_before": jobs[-1].id if len(jobs) == query.limit else None})


async def get_job(rt: Runtime, request: Request, actor: Actor) -> Response:
    job_id = request.path_params["job_id"]
    return _found(rt, await _own(rt, actor, job_id), job_id)


async def cancel_job(rt: Runtime, request: Request, actor: Actor) -> Response:
    job_id = request.path_params["job_id"]
    await _own(rt, actor, job_id)
    return _found(rt, await _queue(rt).cancel(job_id), job_id)


async def retry_job(rt: Runtime, request: Request, actor: Actor) -> Response:
    job_id = request.path_params["job_id"]
    before = await _own(rt, actor, job_id)
    if before is not None and before.state not in ("dead", "cancelled"):
        raise InvalidRequest(f"Job '{job_id}' is {before.state}: only dead or cancelled jobs can be retried.", "job_id")
    return _found(rt, await _queue(rt).retry(job_id), job_id)


ROUTES: tuple[tuple[str, Endpoint, str, str], ...] = (  # path, endpoint, method, permission
    ("/api/jobs", list_jobs, "GET", "jobs.read"),
    ("/api/jobs/{job_id}", get_job, "GET", "jobs.read"),
    ("/api/jobs/{job_id}/cancel", cancel_job, "POST", "jobs.write"),
    ("/api/jobs/{job_id}/retry", retry_job, "POST", "jobs.write"),
)
