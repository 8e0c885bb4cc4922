"""The OpenAI Files API, for batch input: upload JSONL, read, download, delete, list — per tenant.

`POST /v1/files` (multipart: `file`, `purpose=batch`) checks every line (keel.jobs.batchfile) and
stores the bytes in the blob store under `files/<tenant>/<id>`, the row in the store. Batch output
and error files are files too (purpose `batch_output`), written by the batch runner. A file of
another tenant is a 404, exactly like one that does not exist.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import time
from typing import Any

import orjson
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from keel.api.bounds import TooLarge, read_body
from keel.api.openai import JSON_TYPE, authenticate, error_response
from keel.errors import InvalidRequest, KeelError, NotFound
from keel.jobs.batchfile import blob_key, parse_lines
from keel.runtime.components import Runtime
from keel.store.protocols import BlobStore, FileRow

ID = re.compile(r"[A-Za-z0-9_-]{1,128}")  # file-…, batch_…, job_…: anything else names nothing
MAX_FILENAME = 255
PURPOSES = ("batch",)  # what a client may upload; Keel writes batch_output files itself
FORM_SLACK = 64 * 1024  # multipart framing and the small fields beside the file


def new_id(prefix: str) -> str:
    """Time-ordered ids: listings sort by id, newest first."""
    return f"{prefix}{time.time_ns():x}{secrets.token_hex(6)}"


def file_json(f: FileRow) -> dict[str, Any]:
    return {
        "id": f.id,
        "object": "file",
        "bytes": f.bytes,
        "created_at": int(f.created_at),
        "filename": f.filename,
        "purpose": f.purpose,
        "status": f.status,
        "status_details": None,
        "expires_at": None,
    }


def json_response(value: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(value), status, headers, JSON_TYPE)


def page_limit(request: Request, default: int, most: int) -> int:
    raw = request.query_params.get("limit")
    if raw is None:
        return default
    if not raw.isdigit() or not 1 <= int(raw) <= most:
        raise InvalidRequest(f"'limit' must be an integer from 1 to {most}.", "limit")
    return int(raw)


def path_id(request: Request, name: str, what: str) -> str:
    """The id in the path; one that cannot be an id is a 404 like any unknown one (never a query)."""
    value = str(request.path_params[name])
    if ID.fullmatch(value) is None:
        raise NotFound(f"No such {what}: '{value[:128]}'.")
    return value


def cursor(request: Request) -> str | None:
    """The `after` of a page: the last id of the previous one."""
    value = request.query_params.get("after")
    if value is not None and ID.fullmatch(value) is None:
        raise InvalidRequest("'after' must be the id of the last item of the previous page.", "after")
    return value


def _filename(raw: str | None) -> str:
    name = (raw or "").replace("\x00", "").encode("utf-8", "replace").decode()[:MAX_FILENAME]
    return name or "upload.jsonl"


def list_json(items: list[dict[str, Any]], has_more: bool) -> dict[str, Any]:
    first, last = (items[0]["id"], items[-1]["id"]) if items else (None, None)
    return {"object": "list", "data": items, "first_id": first, "last_id": last, "has_more": has_more}


class FilesEdge:
    def __init__(self, runtime: Runtime) -> None:
        self._rt = runtime
        self._store = runtime.store
        self._cfg = runtime.config.batches

    @property
    def _blobs(self) -> BlobStore:
        if self._rt.blobs is None:
            raise KeelError("No blob store is configured for files (traces.blobs_url).")
        return self._rt.blobs

    def routes(self) -> list[Route]:
        return [
            Route("/v1/files", self.upload, methods=["POST"]),
            Route("/v1/files", self.list, methods=["GET"]),
            Route("/v1/files/{file_id}", self.get, methods=["GET"]),
            Route("/v1/files/{file_id}", self.delete, methods=["DELETE"]),
            Route("/v1/files/{file_id}/content", self.content, methods=["GET"]),
        ]

    async def upload(self, request: Request) -> Response:
        try:
            principal, _ = await authenticate(self._rt, request)
            name, data, purpose = await self._form(request)
            lines = parse_lines(data, self._cfg.max_lines)
            file_id, tenant = new_id("file-"), principal.tenant
            row = FileRow(file_id, tenant, name, purpose, len(data), time.time(), blob_key(tenant, file_id), len(lines))
            await asyncio.to_thread(self._blobs.put, row.blob_key, data)
            await asyncio.to_thread(self._store.put_file, row)
        except KeelError as err:
            return error_response(err)
        return json_response(file_json(row))

    async def _form(self, request: Request) -> tuple[str, bytes, str]:
        limit = self._cfg.max_file_bytes
        try:
            await read_body(request, limit + FORM_SLACK)
        except TooLarge:
            raise _too_large(limit) from None
        if not request.headers.get("content-type", "").startswith("multipart/form-data"):
            raise InvalidRequest("Upload the file as multipart/form-data with fields 'file' and 'purpose'.", "file")
        try:
            form = await request.form(max_files=1, max_fields=8)
        except (HTTPException, MultiPartException) as exc:
            raise InvalidRequest(
                f"The multipart body could not be read: {getattr(exc, 'detail', exc)}.", "file"
            ) from None
        try:
            purpose, upload = form.get("purpose"), form.get("file")
            if purpose not in PURPOSES:
                raise InvalidRequest(f"'purpose' must be one of: {', '.join(PURPOSES)}.", "purpose")
            if not isinstance(upload, UploadFile):
                raise InvalidRequest("The form has no 'file' part.", "file")
            data = await upload.read(limit + 1)
            name = _filename(upload.filename)
        finally:
            await form.close()
        if len(data) > limit:
            raise _too_large(limit)
        return name, data, str(purpose)

    async def list(self, request: Request) -> Response:
        try:
            principal, _ = await authenticate(self._rt, request)
            limit = page_limit(request, 10_000, 10_000)
            q = request.query_params
            rows = await asyncio.to_thread(
                self._store.list_files,
                principal.tenant,
                purpose=q.get("purpose"),
                after=q.get("after"),
                limit=limit + 1,
            )
        except KeelError as err:
            return error_response(err)
        return json_response(list_json([file_json(f) for f in rows[:limit]], len(rows) > limit))

    async def get(self, request: Request) -> Response:
        try:
            row = await self._find(request)
        except KeelError as err:
            return error_response(err)
        return json_response(file_json(row))

    async def content(self, request: Request) -> Response:
        try:
            row = await self._find(request)
            data = await asyncio.to_thread(self._blobs.get, row.blob_key)
            if data is None:
                raise NotFound(f"The content of file '{row.id}' is gone from the blob store.")
        except KeelError as err:
            return error_response(err)
        return Response(data, 200, None, "application/octet-stream")

    async def delete(self, request: Request) -> Response:
        try:
            principal, _ = await authenticate(self._rt, request)
            file_id = path_id(request, "file_id", "file")
            row = await asyncio.to_thread(self._store.delete_file, principal.tenant, file_id)
            if row is None:
                raise NotFound(f"No such file: '{file_id}'.")
            await asyncio.to_thread(self._blobs.delete, [row.blob_key])  # row first: a failure leaves an orphan
        except KeelError as err:
            return error_response(err)
        return json_response({"id": row.id, "object": "file", "deleted": True})

    async def _find(self, request: Request) -> FileRow:
        principal, _ = await authenticate(self._rt, request)
        file_id = path_id(request, "file_id", "file")
        row = await asyncio.to_thread(self._store.get_file, principal.tenant, file_id)
        if row is None:
            raise NotFound(f"No such file: '{file_id}'.")
        return row


def _too_large(limit: int) -> TooLarge:
    return TooLarge(f"The file is larger than {limit} bytes (batches.max_file_bytes); split it into smaller files.")
