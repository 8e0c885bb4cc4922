"""The OpenAI Batch API: create, read, list (paged) and cancel batches of a tenant.

A batch is a row (keel.store.protocols.batches) and one `openai.batch` job that runs it
(keel.jobs.batch). Creating one checks what can be checked at once — the input file is the tenant's
and a `batch` file, the endpoint and window are known, metadata is 16 string pairs at most — and
queues the job; the job validates the lines against the endpoint (status `validating`, then
`failed` with errors naming the lines, or `in_progress`). Cancel moves a batch to `cancelling`; its
job stops taking lines, writes what was answered and ends it `cancelled`.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from keel.api.bounds import Bounds
from keel.api.files import ID, cursor, json_response, list_json, new_id, page_limit, path_id
from keel.api.openai import authenticate, error_response, read_json
from keel.errors import InvalidRequest, KeelError, NotFound, RequestError
from keel.jobs.batch import KIND, WINDOWS
from keel.jobs.batchfile import ENDPOINTS
from keel.jobs.deferred import Deferred
from keel.runtime.components import Runtime
from keel.store.protocols import BatchRow

MAX_METADATA = 16
BATCH_JOB_ATTEMPTS = 20  # each crash (an expired lease) takes one: a batch outlives many


class Conflict(RequestError):
    status = 409
    code = "conflict"


def batch_json(b: BatchRow) -> dict[str, Any]:
    def ts(value: float | None) -> int | None:
        return None if value is None else int(value)

    return {
        "id": b.id,
        "object": "batch",
        "endpoint": b.endpoint,
        "errors": None if not b.errors else {"object": "list", "data": list(b.errors)},
        "input_file_id": b.input_file_id,
        "completion_window": b.completion_window,
        "status": b.status,
        "output_file_id": b.output_file_id,
        "error_file_id": b.error_file_id,
        "created_at": int(b.created_at),
        "in_progress_at": ts(b.in_progress_at),
        "expires_at": ts(b.expires_at),
        "finalizing_at": ts(b.finalizing_at),
        "completed_at": ts(b.completed_at),
        "failed_at": ts(b.failed_at),
        "expired_at": ts(b.expired_at),
        "cancelling_at": ts(b.cancelling_at),
        "cancelled_at": ts(b.cancelled_at),
        "request_counts": {"total": b.total, "completed": b.completed, "failed": b.failed},
        "metadata": dict(b.metadata) if b.metadata else None,
    }


def _text(value: Any, most: int) -> bool:
    """A string every store keeps as given: at most `most` characters, no NUL, valid UTF-8."""
    if not isinstance(value, str) or len(value) > most or "\x00" in value:
        return False
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


def _metadata(value: Any) -> dict[str, str] | None:
    if value is None:
        return None
    if (
        not isinstance(value, dict)
        or len(value) > MAX_METADATA
        or not all(
            isinstance(k, str) and len(k) <= 64 and isinstance(v, str) and len(v) <= 512 for k, v in value.items()
        )
    ):
        raise InvalidRequest(
            f"'metadata' must be an object of at most {MAX_METADATA} string pairs (keys up to 64, values up to 512 characters).",
            "metadata",
        )
    return value


class BatchesEdge:
    def __init__(self, runtime: Runtime) -> None:
        self._rt = runtime
        self._store = runtime.store
        self._bounds = Bounds.of(runtime.config.server)

    def routes(self) -> list[Route]:
        return [
            Route("/v1/batches", self.create, methods=["POST"]),
            Route("/v1/batches", self.list, methods=["GET"]),
            Route("/v1/batches/{batch_id}", self.get, methods=["GET"]),
            Route("/v1/batches/{batch_id}/cancel", self.cancel, methods=["POST"]),
        ]

    async def create(self, request: Request) -> Response:
        try:
            principal, _ = await authenticate(self._rt, request)
            body = await read_json(request, self._bounds)
            if not isinstance(body, dict):
                raise InvalidRequest("The request body must be a JSON object.", None)
            endpoint, window = body.get("endpoint"), body.get("completion_window")
            if endpoint not in ENDPOINTS:
                raise InvalidRequest(f"'endpoint' must be one of: {', '.join(ENDPOINTS)}.", "endpoint")
            if not isinstance(window, str) or window not in WINDOWS:
                raise InvalidRequest(f"'completion_window' must be one of: {', '.join(WINDOWS)}.", "completion_window")
            metadata = _metadata(body.get("metadata"))
            file_id = body.get("input_file_id")
            if not isinstance(file_id, str) or ID.fullmatch(file_id) is None:
                raise InvalidRequest("'input_file_id' must be the id of an uploaded file.", "input_file_id")
            found = await asyncio.to_thread(self._store.get_file, principal.tenant, file_id)
            if found is None:
                raise NotFound(f"No such file: '{file_id}'.")
            if found.purpose != "batch":
                raise InvalidRequest(f"File '{file_id}' has purpose '{found.purpose}', not 'batch'.", "input_file_id")
            deferred = self._rt.find(Deferred)
            if deferred is None:
                raise KeelError("Batches need the job queue, which this gateway does not run.")
            now = time.time()
            row = BatchRow(
                new_id("batch_"), principal.tenant, principal.key_id, endpoint, file_id, window, now,
                now + WINDOWS[window], metadata=metadata, total=found.lines,
            )  # fmt: skip
            await asyncio.to_thread(self._store.create_batch, row)
            job = await deferred.queue.enqueue(
                KIND, {"batch_id": row.id}, tenant=row.tenant, priority=self._rt.config.batches.priority,
                timeout_s=WINDOWS[window] + 3600, max_attempts=BATCH_JOB_ATTEMPTS,
            )  # fmt: skip
            linked = await asyncio.to_thread(self._store.update_batch, row.id, {"job_id": job.id})
            row = linked or row
        except KeelError as err:
            return error_response(err)
        return json_response(batch_json(row))

    async def get(self, request: Request) -> Response:
        try:
            row = await self._find(request)
        except KeelError as err:
            return error_response(err)
        return json_response(batch_json(row))

    async def list(self, request: Request) -> Response:
        try:
            principal, _ = await authenticate(self._rt, request)
            limit = page_limit(request, 20, 100)
            after = cursor(request)
            rows = await asyncio.to_thread(self._store.list_batches, principal.tenant, after=after, limit=limit + 1)
        except KeelError as err:
            return error_response(err)
        return json_response(list_json([batch_json(b) for b in rows[:limit]], len(rows) > limit))

    async def cancel(self, request: Request) -> Response:
        try:
            row = await self._find(request)
            if row.status not in ("cancelling", "cancelled"):
                changes = {"status": "cancelling", "cancelling_at": time.time()}
                moved = await asyncio.to_thread(
                    self._store.update_batch, row.id, changes, when=("validating", "in_progress")
                )
                if moved is None:
                    now = await asyncio.to_thread(self._store.get_batch, row.tenant, row.id)
                    status = row.status if now is None else now.status
                    raise Conflict(
                        f"Batch '{row.id}' is {status}: only a validating or running batch can be cancelled."
                    )
                row = moved
        except KeelError as err:
            return error_response(err)
        return json_response(batch_json(row))

    async def _find(self, request: Request) -> BatchRow:
        principal, _ = await authenticate(self._rt, request)
        batch_id = path_id(request, "batch_id", "batch")
        row = await asyncio.to_thread(self._store.get_batch, principal.tenant, batch_id)
        if row is None:
            raise NotFound(f"No such batch: '{batch_id}'.")
        return row
