"""Async calls at the HTTP edge, and `GET /v1/jobs/{id}`.

A chat or embeddings call sent with `Prefer: respond-async` (or `x-keel-async: true`) is checked as
a live call would be (key, body), then queued: `202 Accepted` with the `keel.job` object, `Location`
and `Preference-Applied: respond-async`. A call to an alias in `async_calls.async_only_aliases`, or
asking for more than `async_calls.async_only_max_tokens`, is queued the same way without being asked,
and its 202 says why in `x-keel-async-reason`. `webhook_url` (a body field Keel removes before the
call runs, or the `x-keel-webhook-url` header; either alone also queues the call) receives the finished job by a signed
POST (keel.jobs.webhooks). `GET /v1/jobs/{id}` shows the calling key its own jobs only: any other is 404.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from keel.api.files import path_id
from keel.api.openai import JSON_TYPE, authenticate, error_response
from keel.errors import InvalidRequest, KeelError, NotFound
from keel.gateway.call import Call
from keel.jobs import webhooks
from keel.jobs.calls import parse
from keel.jobs.deferred import CALL_KIND, Deferred, job_json, status_path
from keel.runtime.components import Runtime
from keel.types import ChatRequest, EmbeddingRequest

MAX_IDEMPOTENCY_KEY = 255


class AsyncEdge:
    def __init__(self, runtime: Runtime) -> None:
        self._rt = runtime
        self._cfg = runtime.config.async_calls
        self._aliases = frozenset(self._cfg.async_only_aliases)
        self._max_tokens = self._cfg.async_only_max_tokens

    @property
    def _deferred(self) -> Deferred:
        found = self._rt.find(Deferred)
        if found is None:
            raise KeelError("Async calls need the job queue, which this gateway does not run.")
        return found

    def wanted(self, request: Request, model_request: ChatRequest | EmbeddingRequest) -> str | None:
        """Why this call goes to the queue ("requested", or the async_only rule it meets); None: it does not."""
        h = request.headers
        asked = h.get("x-keel-async")
        if asked is not None and asked.lower() in ("true", "1", "yes"):
            return "requested"
        prefer = h.get("prefer")
        if prefer is not None and "respond-async" in prefer.lower():
            return "requested"
        if "webhook_url" in model_request.extra or h.get("x-keel-webhook-url") is not None:
            return "webhook_url given: the answer is delivered there (and by GET on the job)"
        if model_request.model in self._aliases:
            return f"alias '{model_request.model}' is async_only (async_calls.async_only_aliases)"
        limit = self._max_tokens
        if limit is not None and isinstance(model_request, ChatRequest):
            asked_tokens = model_request.max_tokens
            if asked_tokens is not None and asked_tokens > limit:
                return f"max_tokens {asked_tokens} is above async_calls.async_only_max_tokens ({limit})"
        return None

    async def submit(self, request: Request, call: Call, body: Any, url: str, reason: str) -> Response:
        """Queue the call; 202 with its job."""
        try:
            job = await self._enqueue(request, call, body, url)
        except KeelError as err:
            return error_response(err)
        link = str(request.base_url).rstrip("/") + status_path(job.id)
        headers = {"location": link, "preference-applied": "respond-async"}
        if reason != "requested":
            headers["x-keel-async-reason"] = reason
        return Response(orjson.dumps(job_json(job, link)), 202, headers, JSON_TYPE)

    async def _enqueue(self, request: Request, call: Call, body: Any, url: str) -> Any:
        assert call.principal is not None
        parse(url, body)  # what the job could never run (a stream) is refused now
        hook = body.pop("webhook_url", None) if isinstance(body, dict) else None
        hook = hook or request.headers.get("x-keel-webhook-url")
        if hook is not None:
            if self._cfg.webhook_secret is None:
                raise InvalidRequest(
                    "webhook_url needs async_calls.webhook_secret in the gateway's config to sign deliveries.",
                    "webhook_url",
                )
            webhooks.check_url(hook, self._cfg.allow_private_webhooks)
        idem = request.headers.get("idempotency-key")
        if idem is not None and not 0 < len(idem) <= MAX_IDEMPOTENCY_KEY:
            raise InvalidRequest(f"Idempotency-Key holds 1 to {MAX_IDEMPOTENCY_KEY} characters.", "idempotency-key")
        payload = {
            "url": url,
            "body": body,
            "key_id": call.principal.key_id,
            "webhook_url": hook,
            "priority": call.asked_priority,
            "timeout_s": call.timeout_s,
            "feature": call.feature,
            "session": call.session,
            "user": call.user,
            "tags": call.tags,
            "base_url": str(request.base_url).rstrip("/"),  # the webhook's status_url, as the caller reached Keel
        }
        return await self._deferred.queue.enqueue(
            CALL_KIND,
            payload,
            tenant=call.principal.tenant,
            priority=self._cfg.priority,
            idempotency_key=None if idem is None else f"{call.principal.key_id}:{idem}",
        )

    def routes(self) -> list[Route]:
        return [Route("/v1/jobs/{job_id}", self.show, methods=["GET"])]

    async def show(self, request: Request) -> Response:
        try:
            principal, _ = await authenticate(self._rt, request)
            job_id = path_id(request, "job_id", "job")
            job = await self._deferred.queue.get(job_id)
            mine = (
                job is not None
                and job.kind == CALL_KIND
                and job.tenant == principal.tenant
                and isinstance(job.payload, dict)
                and job.payload.get("key_id") == principal.key_id
            )
            if not mine or job is None:
                raise NotFound(f"No such job: '{job_id}'.")
        except KeelError as err:
            return error_response(err)
        link = str(request.base_url).rstrip("/") + status_path(job.id)
        return Response(orjson.dumps(job_json(job, link)), 200, None, JSON_TYPE)
