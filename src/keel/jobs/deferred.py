"""Keel's deferred OpenAI work, as job kinds: async calls (`openai.call`), their webhook deliveries
(`webhook.deliver`) and batches (`openai.batch`). The builder registers the three handlers and offers
`Deferred`, which the HTTP edge uses to queue calls and batches and to show a job to its caller.

An async call's job runs its body through the pipeline as its key (keel.jobs.calls) when a worker
takes it. A call refused for now or failed on every provider (429, 5xx) is retried by the queue with
backoff while attempts remain; its last answer, success or error, is the job's result. With a
webhook URL, the handler queues one delivery (idempotency key `webhook:<job id>`) carrying the result;
a handler that runs again after a crash finds that delivery and keeps its result, so the webhook and
`GET /v1/jobs/{id}` always tell the same answer.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from keel.errors import AuthError
from keel.gateway.capability import Context, Contribution, Pipeline
from keel.gateway.pipeline import Handler
from keel.jobs import webhooks
from keel.jobs.batch import KIND as BATCH_KIND
from keel.jobs.batch import BatchRunner
from keel.jobs.calls import Caller, error_json, resolve_key, run_body
from keel.jobs.queue import JobQueue
from keel.store.protocols import BlobStore, Job, JobContext

CALL_KIND = "openai.call"
CALL_KINDS = (CALL_KIND,)


def job_status(state: str, result: Any) -> str:
    """A job's state as its caller sees it: queued, in_progress, completed, failed or cancelled."""
    if state == "running":
        return "in_progress"
    if state == "succeeded":
        ok = isinstance(result, dict) and int(result.get("status_code", 500)) < 400
        return "completed" if ok else "failed"
    if state == "dead":
        return "failed"
    return state


def job_json(job: Job, status_url: str, *, state: str | None = None, result: Any = None) -> dict[str, Any]:
    """The `keel.job` object: `GET /v1/jobs/{id}`'s answer and a webhook's `data`. `state`/`result`
    stand in for the job's own while its handler is still finishing it (a webhook's body)."""
    state = state or job.state
    result = result if result is not None else job.result
    status = job_status(state, result)
    out: dict[str, Any] = {
        "id": job.id,
        "object": "keel.job",
        "endpoint": job.payload.get("url"),
        "status": status,
        "status_url": status_url,
        "created_at": int(job.created_at),
        "started_at": None if job.started_at is None else int(job.started_at),
        "completed_at": None if job.finished_at is None else int(job.finished_at),
        "attempts": job.attempts,
        "response": None,
        "error": None,
    }
    if state == "succeeded" and isinstance(result, dict):
        out["response"] = {
            "status_code": result["status_code"],
            "request_id": result["trace_id"],
            "body": result["body"],
        }
        if status == "failed":
            out["error"] = result["body"].get("error")
    elif status == "failed":
        out["error"] = {
            "message": job.error or "The job failed.",
            "type": "server_error",
            "param": None,
            "code": "job_failed",
        }
    elif status == "cancelled":
        out["error"] = {"message": "The job was cancelled.", "type": "cancelled", "param": None, "code": "cancelled"}
    if job.payload.get("webhook_url"):
        out["webhook_url"] = job.payload["webhook_url"]
    return out


def status_path(job_id: str) -> str:
    return f"/v1/jobs/{job_id}"


class Deferred:
    """What the edges use: the queue, and the handlers' settings."""

    def __init__(self, ctx: Context, queue: JobQueue) -> None:
        self.queue = queue
        self._ctx = ctx
        self._store = ctx.store
        self._payloads = ctx.config.traces.store_payloads

    def pipeline(self) -> Handler:
        return self._ctx.get(Pipeline).handler

    async def run_call(self, job: Job, ctx: JobContext) -> Any:
        """The `openai.call` handler."""
        p = job.payload
        resolved = await self.queue.call(resolve_key, self._store, job.tenant, p["key_id"])
        if resolved is None:
            err = AuthError("The API key that queued this call was revoked.")
            result: dict[str, Any] = {"status_code": err.status, "body": error_json(err), "trace_id": None}
        else:
            principal, allowed = resolved
            caller = Caller(
                principal, allowed, priority=p.get("priority"), timeout_s=p.get("timeout_s"),
                feature=p.get("feature"), session=p.get("session"), user=p.get("user"),
            )  # fmt: skip
            answer = await run_body(
                self.pipeline(), p["url"], p["body"], caller, tags=p.get("tags"), store_payloads=self._payloads
            )
            if answer.transient and job.attempts < job.max_attempts:
                raise RuntimeError(f"the call failed for now ({answer.status}); retried with backoff")
            result = {"status_code": answer.status, "body": answer.body, "trace_id": answer.trace_id}
        if p.get("webhook_url"):
            result = await self._deliver(job, result)
        return result

    async def _deliver(self, job: Job, result: dict[str, Any]) -> dict[str, Any]:
        """Queue the webhook delivery (once per job); the result it carries is the job's result."""
        link = str(job.payload.get("base_url") or "") + status_path(job.id)
        view = job_json(job, link, state="succeeded", result=result)
        view["completed_at"] = int(time.time())
        event = "keel.job.completed" if view["status"] == "completed" else "keel.job.failed"
        delivery_id = f"whd_{job.id}"
        body = {"id": delivery_id, "event": event, "created_at": int(time.time()), "data": view}
        payload = {
            "url": job.payload["webhook_url"], "delivery_id": delivery_id, "job_id": job.id,
            "result": result, "body": orjson.dumps(body).decode(),
        }  # fmt: skip
        cfg = self._ctx.config.async_calls
        delivery = await self.queue.enqueue(
            webhooks.KIND, payload, tenant=job.tenant, idempotency_key=f"webhook:{job.id}",
            max_attempts=cfg.webhook_attempts,
        )  # fmt: skip
        kept = delivery.payload.get("result") if isinstance(delivery.payload, dict) else None
        return kept if isinstance(kept, dict) else result


def build(ctx: Context) -> Contribution:
    queue = ctx.get(JobQueue)
    deferred = Deferred(ctx, queue)
    ctx.add(deferred)
    cfg = ctx.config.async_calls
    deliveries = webhooks.Deliveries(cfg.webhook_secret, cfg.webhook_timeout_s)
    blobs = ctx.find(BlobStore)  # type: ignore[type-abstract]
    handlers: dict[str, Any] = {CALL_KIND: deferred.run_call, webhooks.KIND: deliveries}
    if blobs is not None:
        batches = BatchRunner(ctx.store, blobs, deferred.pipeline, ctx.config.batches, ctx.config.traces.store_payloads)
        handlers[BATCH_KIND] = batches
    return Contribution(jobs=handlers, close=[deliveries.aclose])
