"""The OpenAI Responses API edge: `POST /v1/responses`, and `GET`/`DELETE /v1/responses/{id}` and its
`input_items`, over the same pipeline as chat (auth, routing, limits, cache, failover, traces, cost).

The body becomes Keel's ChatRequest (wire.openai_responses), after the conversation its
`previous_response_id` names, read from the store within the caller's tenant (404 when absent or
another tenant's). With `store` (the default) the Response and its input items are written before
the client gets the answer — before `response.completed` in a stream — so the next turn can name
it at once. Errors leave in OpenAI's format; after the first streamed byte a failure is an `error`
event and `response.failed`, never a completion.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from typing import Any, TypeVar

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from keel.api.bounds import Bounds
from keel.api.openai import JSON_TYPE, authenticate, error_response, new_call, read_json, response_headers
from keel.errors import InvalidRequest, KeelError, NotFound, Unavailable
from keel.gateway.call import Call, Reply
from keel.runtime.components import Runtime
from keel.store.protocols import StoredResponse
from keel.store.protocols.responses import MAX_CHAIN
from keel.types import JSON, Principal
from keel.wire import openai_responses as wire
from keel.wire import openai_responses_reply as reply_wire

log = logging.getLogger("keel.api")
T = TypeVar("T")
SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


def _not_found(response_id: str, param: str | None = None) -> NotFound:
    if param is None:
        return NotFound(f"Response with id '{response_id[:100]}' not found.")
    err = NotFound(f"Previous response with id '{response_id[:100]}' not found.")
    err.param, err.code = param, "previous_response_not_found"
    return err


def _internal() -> KeelError:
    return KeelError("Internal gateway error; see the trace.")


class ResponsesEdge:
    def __init__(self, runtime: Runtime) -> None:
        self._rt = runtime
        self._store = runtime.store
        self._payloads = runtime.config.traces.store_payloads
        self._bounds = Bounds.of(runtime.config.server)
        self._keeps = runtime.config.responses.store  # false: no response is ever stored

    # ---- POST /v1/responses ---------------------------------------------------------------------

    async def create(self, request: Request) -> Response:
        t0 = time.perf_counter()
        try:
            principal, allowed = await authenticate(self._rt, request)
            body = await read_json(request, self._bounds)
            parsed = await self._resolve(principal.tenant, self._storable(wire.parse_request(body)))
            history = await self._history(principal.tenant, parsed.previous_response_id)
            chat = wire.chat_request(parsed, history)
            call = new_call(request, chat, body, "responses", self._payloads)
        except KeelError as err:
            return error_response(err)
        call.t0, call.principal, call.allowed = t0, principal, allowed
        response_id = f"resp_{call.trace.id}"
        try:
            reply = await self._rt.pipeline(call)
            model = reply.model or call.trace.model or parsed.model
            if parsed.stream:
                encoder = reply_wire.StreamEncoder(parsed, response_id, call.trace.started_at, model)
                headers = response_headers(call, reply) | SSE_HEADERS
                events = self._stream(call, reply, parsed, encoder)
                return StreamingResponse(events, headers=headers, media_type="text/event-stream")
            answer = await reply.collect()
        except KeelError as err:
            return error_response(err, call.trace.id)
        except Exception:
            log.exception("internal error on trace %s", call.trace.id)
            return error_response(_internal(), call.trace.id)
        headers = response_headers(call, reply)
        status, incomplete = reply_wire.status_of(answer.finish_reason)
        output = reply_wire.output_items(answer, call.trace.id)
        out = reply_wire.response_json(
            parsed,
            response_id,
            call.trace.started_at,
            answer.model or model,
            status=status,
            output=output,
            usage=answer.usage,
            incomplete=incomplete,
        )
        await self._keep(call, parsed, out)
        return Response(orjson.dumps(out), 200, headers, JSON_TYPE)

    async def _stream(
        self, call: Call, reply: Reply, parsed: wire.ResponsesRequest, encoder: reply_wire.StreamEncoder
    ) -> AsyncIterator[bytes]:
        try:
            yield encoder.start()
            async for event in reply:
                frame = encoder.feed(event)
                if frame:
                    yield frame
            encoder.model = reply.model or encoder.model  # a resumed stream may end on another model
            frames, final = encoder.close()
            yield frames
            await self._keep(call, parsed, final)
            yield encoder.completed(final)
        except KeelError as err:
            yield encoder.failed(err)
        except Exception:
            log.exception("internal error mid-stream on trace %s", call.trace.id)
            yield encoder.failed(_internal())
        finally:
            reply.abandon()

    async def _history(self, tenant: str, previous_id: str | None) -> list[JSON]:
        """The items of the conversation ending at `previous_id`: each response's input, then its output."""
        if previous_id is None:
            return []
        chain = await _read(self._store.response_chain, tenant, _own(previous_id, "previous_response_id"))
        if not chain:
            raise _not_found(previous_id, "previous_response_id")
        gone = chain[0].previous_id
        if gone is not None and len(chain) < MAX_CHAIN:  # a link was deleted (by a client or retention)
            raise _not_found(gone, "previous_response_id")
        items: list[JSON] = []
        for stored in chain:
            items += stored.input_items
            items += stored.response.get("output") or []
        return items

    def _storable(self, parsed: wire.ResponsesRequest) -> wire.ResponsesRequest:
        """With `responses.store: false`, nothing is stored (the Response says `store: false`), and a request
        that needs stored state is a 400 saying so rather than a 404 for a response that never existed."""
        if self._keeps:
            return parsed
        fix = "this gateway keeps no responses (responses.store: false); send the whole conversation as input."
        if parsed.previous_response_id is not None:
            raise InvalidRequest(f"'previous_response_id' cannot be used: {fix}", "previous_response_id")
        if any(item["type"] == "item_reference" for item in parsed.items):
            raise InvalidRequest(f"'item_reference' items cannot be used: {fix}", "input")
        return replace(parsed, store=False)

    async def _resolve(self, tenant: str, parsed: wire.ResponsesRequest) -> wire.ResponsesRequest:
        """The request with its item references replaced by the stored items they name (the tenant's own)."""
        found: dict[str, JSON] = {}
        for response_id in wire.referenced(parsed):
            stored = await _read(self._store.get_response, tenant, response_id)
            if stored is not None:
                found.update((item["id"], item) for item in (*stored.input_items, *stored.response.get("output", [])))
        return wire.resolve(parsed, found)

    async def _keep(self, call: Call, parsed: wire.ResponsesRequest, response: JSON) -> None:
        """Store the response for `previous_response_id` and retrieval; a store failure is logged, and the
        answer still goes out (the call is served, as when any store stalls)."""
        if not parsed.store:
            return
        assert call.principal is not None
        row = StoredResponse(
            id=response["id"],
            tenant=call.principal.tenant,
            created_at=call.trace.started_at,
            response=response,
            input_items=wire.with_ids(parsed.items, call.trace.id),
            previous_id=parsed.previous_response_id,
            user=call.user,
            trace_id=call.trace.id,
        )
        try:
            await asyncio.to_thread(self._store.put_response, row)
        except Exception as exc:
            log.warning("storing response %s failed (%s): previous_response_id cannot name it", row.id, exc)

    # ---- GET / DELETE /v1/responses/{id}, GET …/input_items ----------------------------------------

    async def retrieve(self, request: Request) -> Response:
        try:
            principal, _ = await authenticate(self._rt, request)
            stored = await self._stored(principal, request)
        except KeelError as err:
            return error_response(err)
        return Response(orjson.dumps(stored.response), 200, None, JSON_TYPE)

    async def delete(self, request: Request) -> Response:
        try:
            principal, _ = await authenticate(self._rt, request)
            response_id = request.path_params["response_id"]
            if not await _read(self._store.delete_response, principal.tenant, _own(response_id)):
                raise _not_found(response_id)
        except KeelError as err:
            return error_response(err)
        body = {"id": response_id, "object": "response", "deleted": True}
        return Response(orjson.dumps(body), 200, None, JSON_TYPE)

    async def input_items(self, request: Request) -> Response:
        try:
            principal, _ = await authenticate(self._rt, request)
            stored = await self._stored(principal, request)
            page = _page(stored.input_items, request.query_params)
        except KeelError as err:
            return error_response(err)
        return Response(orjson.dumps(page), 200, None, JSON_TYPE)

    async def _stored(self, principal: Principal, request: Request) -> StoredResponse:
        response_id = request.path_params["response_id"]
        stored = await _read(self._store.get_response, principal.tenant, _own(response_id))
        if stored is None:
            raise _not_found(response_id)
        return stored


# Keel's response ids are `resp_` + a trace id; any other string (NUL bytes, slashes, megabytes) is not
# one of them: a 404 without a store read, so a malformed id can never pass for a store outage.
_OWN_ID = re.compile(r"resp_[A-Za-z0-9_-]{1,128}")


def _own(response_id: str, param: str | None = None) -> str:
    if _OWN_ID.fullmatch(response_id) is None:
        raise _not_found(response_id, param)
    return response_id


async def _read(fn: Callable[..., T], *args: Any) -> T:
    """A store call in a worker thread; the store failing is a 503 to retry, in OpenAI's format."""
    try:
        return await asyncio.to_thread(fn, *args)
    except Exception as exc:
        log.warning("response store call %s failed: %s", getattr(fn, "__name__", fn), exc)
        raise Unavailable("The response store is unreachable; stored responses cannot be read now.", 1.0) from None


def _page(items: list[JSON], query: Any) -> JSON:
    """One page of a list, as OpenAI's cursor pages: `order` (desc by default), `after` an item id, `limit`."""
    order = query.get("order", "desc")
    if order not in ("asc", "desc"):
        raise InvalidRequest("'order' must be 'asc' or 'desc'.", "order")
    try:
        limit = int(query.get("limit", 20))
    except ValueError:
        limit = 0
    if not 1 <= limit <= 100:
        raise InvalidRequest("'limit' must be an integer from 1 to 100.", "limit")
    ordered = items if order == "asc" else items[::-1]
    after = query.get("after")
    if after is not None:
        at = next((i for i, item in enumerate(ordered) if item.get("id") == after), None)
        if at is None:
            raise InvalidRequest(f"No item with id '{after[:100]}' in this response's input.", "after")
        ordered = ordered[at + 1 :]
    data = ordered[:limit]
    first, last = (data[0]["id"], data[-1]["id"]) if data else (None, None)
    return {"object": "list", "data": data, "first_id": first, "last_id": last, "has_more": len(ordered) > limit}
