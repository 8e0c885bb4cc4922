"""RAG collections and documents over HTTP (`/api/rag/collections…`).

Behind the admin guard (api/guard.py): an operator names the tenant (`tenant` in the query or a JSON
body); a user or a tenant's virtual key acts on its own tenant only. A document is put as JSON (`{"text": …, "title"?, "kind"?,
"metadata"?, "users"?, "groups"?, "valid_until"?, "source"?}`) or as multipart/form-data (a `file` part,
the same fields as form fields, `metadata`/`users`/`groups` as JSON text). The answer is the document
with its status: 201 for a new document, 200 for a new version or an unchanged one (`"result"` says
which). Ingestion runs as a job; GET shows its progress, its stage and, when failed, why. A collection
belongs to a team or to the whole tenant (api/owners.py): a developer creates, fills, changes and lists
their team's only; reading and searching are unchanged.
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import orjson
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from keel.api.bounds import TooLarge, check_depth, read_body
from keel.api.guard import Guard, Handler
from keel.api.openai import JSON_TYPE
from keel.api.owners import asked_owner, check_reach
from keel.errors import InvalidRequest, KeelError, NotFound
from keel.rag.chunk import ChunkingSpec
from keel.rag.collections import SpecError, check_name, collection_in, collection_view, rerank_in
from keel.rag.documents import KIND_RECHUNK, Library, check_id, document_view, fields_from
from keel.rag.ingest import Ingestor
from keel.rag.parse import kind_of
from keel.rag.rerank import Reranker
from keel.runtime.components import Runtime
from keel.store.protocols.rag_docs import DOC_STATUSES
from keel.tenancy.actor import Actor
from keel.tenancy.roles import reaches_team, team_bound

MAX_DOCUMENT_BYTES = 64 * 1024 * 1024  # one document's bytes, as JSON text or a file
FORM_SLACK = 256 * 1024  # multipart framing and the fields beside the file
TEXT_KINDS = ("txt", "md", "html", "jsonl", "csv")
_FORM_FIELDS = ("title", "source", "kind", "metadata", "users", "groups", "valid_until")


class RagAdmin:
    def __init__(self, runtime: Runtime, guard: Guard) -> None:
        self._rt = runtime
        self._guard = guard
        self._depth = runtime.config.server.max_json_depth
        self._body_limit = runtime.config.server.max_body_bytes

    @property
    def _library(self) -> Library:
        return self._rt.get(Library)

    def routes(self) -> list[Route]:
        if self._rt.find(Library) is None:
            return []

        def r(path: str, handler: Handler, method: str, permission: str) -> Route:
            return self._guard.route(path, handler, [method], permission, translate=_translate, check=_collection)

        base, doc = "/api/rag/collections", "/api/rag/collections/{collection}/documents"
        return [
            r(base, self.create, "POST", "rag.write"),
            r(base, self.list_collections, "GET", "rag.read"),
            r(base + "/{collection}", self.get_collection, "GET", "rag.read"),
            r(base + "/{collection}", self.drop_collection, "DELETE", "rag.write"),
            r(base + "/{collection}/rechunk", self.rechunk, "POST", "rag.write"),
            r(base + "/{collection}/rerank", self.set_rerank, "PUT", "rag.write"),
            r(base + "/{collection}/rerank", self.drop_rerank, "DELETE", "rag.write"),
            r(doc, self.list_documents, "GET", "rag.read"),
            r(doc + "/{id:path}", self.put, "PUT", "rag.write"),
            r(doc + "/{id:path}", self.get_document, "GET", "rag.read"),
            r(doc + "/{id:path}", self.delete, "DELETE", "rag.write"),
        ]

    async def _json(self, request: Request, limit: int) -> dict[str, Any]:
        raw = await read_body(request, limit)
        try:
            body = orjson.loads(raw) if raw else {}
        except orjson.JSONDecodeError:
            raise InvalidRequest("The request body is not valid JSON.", None) from None
        if not isinstance(body, dict):
            raise InvalidRequest("The request body must be a JSON object.", None)
        check_depth(raw, body, self._depth)
        return body

    # ---- collections -----------------------------------------------------------------------------

    async def create(self, request: Request, caller: Actor) -> Response:
        body = await self._json(request, self._body_limit)
        tenant = caller.tenant_for(body.get("tenant", request.query_params.get("tenant")))
        c = collection_in(body)
        owner = await asked_owner(self._rt.store, caller, tenant, body)
        lib = self._library
        row, created = await asyncio.to_thread(lib.create_collection, tenant, c, owner.team)
        if not created:
            check_reach(caller, f"Collection '{c.name}'", row.team)
            if owner.given and row.team != owner.team:
                given = await asyncio.to_thread(lib.store.set_collection_team, tenant, c.name, owner.team)
                row = given if given is not None else row
        self._forget_rerank(tenant, c.name)
        return _json(collection_view(row), 201 if created else 200)

    async def list_collections(self, request: Request, caller: Actor) -> Response:
        tenant = caller.scope(request.query_params.get("tenant"))
        rows = await asyncio.to_thread(self._library.store.list_collections, tenant)
        data = [collection_view(r) for r in rows if reaches_team(caller, r.team)]
        return _json({"object": "list", "data": data})

    async def _reach(self, caller: Actor, tenant: str, name: str) -> None:
        """PermissionDenied unless `caller` may change collection `name` (a developer: their team's only);
        NotFound when there is none."""
        if team_bound(caller):
            row = await asyncio.to_thread(self._library.collection, tenant, name)
            check_reach(caller, f"Collection '{name}'", row.team)

    async def get_collection(self, request: Request, caller: Actor) -> Response:
        tenant, name = caller.tenant_for(request.query_params.get("tenant")), request.path_params["collection"]
        lib = self._library
        row = await asyncio.to_thread(lib.collection, tenant, name)
        return _json(collection_view(row, await asyncio.to_thread(lib.counts, tenant, name)))

    async def drop_collection(self, request: Request, caller: Actor) -> Response:
        tenant, name = caller.tenant_for(request.query_params.get("tenant")), request.path_params["collection"]
        await asyncio.to_thread(self._library.collection, tenant, name)
        await self._reach(caller, tenant, name)
        gone = await self._rt.get(Ingestor).drop_collection(tenant, name)
        self._forget_rerank(tenant, name)
        return _json({"object": "rag.collection", "name": name, "deleted": True, **gone})

    async def set_rerank(self, request: Request, caller: Actor) -> Response:
        """Body {model, top_n?, weight?, timeout_s?} (and `tenant` for an operator): the collection's reranking."""
        body = await self._json(request, self._body_limit)
        tenant = caller.tenant_for(body.pop("tenant", request.query_params.get("tenant")))
        spec = rerank_in(body, "")
        await self._reach(caller, tenant, request.path_params["collection"])
        return await self._rerank(tenant, request.path_params["collection"], spec)

    async def drop_rerank(self, request: Request, caller: Actor) -> Response:
        tenant = caller.tenant_for(request.query_params.get("tenant"))
        await self._reach(caller, tenant, request.path_params["collection"])
        return await self._rerank(tenant, request.path_params["collection"], None)

    async def _rerank(self, tenant: str, name: str, spec: Any) -> Response:
        row = await asyncio.to_thread(self._library.set_rerank, tenant, name, spec)
        self._forget_rerank(tenant, name)
        return _json(collection_view(row))

    def _forget_rerank(self, tenant: str, name: str) -> None:
        """This process reads the new setting at once (others within keel.rag.rerank.SETTING_TTL_S)."""
        reranker = self._rt.find(Reranker)
        if reranker is not None:
            reranker.forget(tenant, name)

    async def rechunk(self, request: Request, caller: Actor) -> Response:
        """Body {"chunking": {...}}: re-chunk the stored text into a shadow index, then swap (a job)."""
        body = await self._json(request, self._body_limit)
        tenant, name = (
            caller.tenant_for(body.get("tenant", request.query_params.get("tenant"))),
            request.path_params["collection"],
        )
        try:
            spec = ChunkingSpec.from_json(body.get("chunking"))
        except ValueError as exc:
            raise InvalidRequest(str(exc), str(exc).split(":", 1)[0]) from None
        lib = self._library
        await asyncio.to_thread(lib.collection, tenant, name)
        await self._reach(caller, tenant, name)
        payload = {"tenant": tenant, "collection": name, "chunking": spec.json()}
        key = f"rag.rechunk:{name}:{orjson.dumps(spec.json(), option=orjson.OPT_SORT_KEYS).decode()}"
        job = await asyncio.to_thread(lib.enqueue, KIND_RECHUNK, payload, tenant, key[:256])
        self._wake()
        return _json({"object": "rag.rechunk", "collection": name, "job_id": job.id, "state": job.state}, 202)

    # ---- documents -------------------------------------------------------------------------------

    async def put(self, request: Request, caller: Actor) -> Response:
        name, doc_id = request.path_params["collection"], check_id(request.path_params["id"])
        if request.headers.get("content-type", "").startswith("multipart/form-data"):
            tenant = caller.tenant_for(request.query_params.get("tenant"))
            fields, data, filename, media = await self._form(request)
        else:
            body = await self._json(request, MAX_DOCUMENT_BYTES + FORM_SLACK)
            tenant = caller.tenant_for(body.get("tenant", request.query_params.get("tenant")))
            text = body.get("text")
            if not isinstance(text, str) or not text.strip():
                raise InvalidRequest("'text' must be the document's text (or upload a file as multipart).", "text")
            fields, data, filename, media = fields_from(body), text.encode(), None, "text/plain"
            if fields.kind is None and kind_of(doc_id) not in TEXT_KINDS:  # text, whatever the id looks like
                fields = dataclasses.replace(fields, kind="txt")
        await self._reach(caller, tenant, name)
        lib = self._library
        row, result = await asyncio.to_thread(
            lambda: lib.put(tenant, name, doc_id, data, fields, filename=filename, media_type=media)
        )
        if result != "unchanged":
            self._wake()
        return _json({**document_view(row), "result": result}, 201 if result == "created" else 200)

    async def _form(self, request: Request) -> tuple[Any, bytes, str | None, str | None]:
        try:
            await read_body(request, MAX_DOCUMENT_BYTES + FORM_SLACK)
        except TooLarge:
            raise _too_large() from None
        try:
            form = await request.form(max_files=1, max_fields=16)
        except (HTTPException, MultiPartException) as exc:
            raise InvalidRequest(
                f"The multipart body could not be read: {getattr(exc, 'detail', exc)}.", "file"
            ) from None
        try:
            upload = form.get("file")
            if not isinstance(upload, UploadFile):
                raise InvalidRequest("The form has no 'file' part.", "file")
            data = await upload.read(MAX_DOCUMENT_BYTES + 1)
            values: dict[str, Any] = {}
            for key in _FORM_FIELDS:
                value = form.get(key)
                if value is None or isinstance(value, UploadFile):
                    continue
                values[key] = _form_value(key, value)
            filename, media = upload.filename, upload.content_type
        finally:
            await form.close()
        if len(data) > MAX_DOCUMENT_BYTES:
            raise _too_large()
        return fields_from(values), data, filename, media

    async def list_documents(self, request: Request, caller: Actor) -> Response:
        q = request.query_params
        tenant, name = caller.tenant_for(q.get("tenant")), request.path_params["collection"]
        status = q.get("status")
        if status is not None and status not in DOC_STATUSES:
            raise InvalidRequest(f"'status' must be one of {', '.join(DOC_STATUSES)}.", "status")
        raw = q.get("limit", "100")
        if not raw.isdigit() or not 1 <= int(raw) <= 1000:
            raise InvalidRequest("'limit' must be an integer from 1 to 1000.", "limit")
        limit, after = int(raw), q.get("after")
        lib = self._library
        await asyncio.to_thread(lib.collection, tenant, name)
        rows = await asyncio.to_thread(
            lambda: lib.store.list_documents(tenant, name, status=status, after=after, limit=limit + 1)
        )
        data = [document_view(d) for d in rows[:limit]]
        return _json({"object": "list", "data": data, "has_more": len(rows) > limit,
                      "last_id": data[-1]["id"] if data else None})  # fmt: skip

    async def get_document(self, request: Request, caller: Actor) -> Response:
        tenant, name = caller.tenant_for(request.query_params.get("tenant")), request.path_params["collection"]
        doc_id = check_id(request.path_params["id"])
        row = await asyncio.to_thread(self._library.store.get_document, tenant, name, doc_id)
        if row is None:
            raise NotFound(f"No document '{doc_id}' in collection '{name}'.")
        job = await self._rt.jobs.get(row.job_id) if row.job_id and self._rt.jobs is not None else None
        return _json(document_view(row, job, self._rt.config.jobs.stuck_after))

    async def delete(self, request: Request, caller: Actor) -> Response:
        tenant, name = caller.tenant_for(request.query_params.get("tenant")), request.path_params["collection"]
        doc_id = check_id(request.path_params["id"])
        await self._reach(caller, tenant, name)
        row = await asyncio.to_thread(self._library.delete, tenant, name, doc_id)
        self._wake()
        return _json({**document_view(row), "deleted": True})

    def _wake(self) -> None:
        if self._rt.jobs is not None:
            self._rt.jobs.wakeup.set()


def _translate(err: Exception) -> KeelError | None:
    return InvalidRequest(str(err), err.field) if isinstance(err, SpecError) else None


def _collection(request: Request) -> None:
    if "collection" in request.path_params:
        check_name(request.path_params["collection"], "collection")


def _form_value(key: str, value: str) -> Any:
    if key in ("metadata", "users", "groups"):
        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError:
            raise InvalidRequest(f"'{key}' must be JSON text in a multipart form.", key) from None
    if key == "valid_until":
        try:
            return float(value)
        except ValueError:
            raise InvalidRequest("'valid_until' must be a Unix time in seconds.", key) from None
    return value


def _too_large() -> TooLarge:
    return TooLarge(f"The document is larger than {MAX_DOCUMENT_BYTES} bytes; split it into smaller documents.")


def _json(data: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status, None, JSON_TYPE)
