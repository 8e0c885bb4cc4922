"""The Anthropic-shaped HTTP edge, `POST /v1/messages`: parse → Call → pipeline → render.

Anthropic SDK clients point `base_url` at Keel and reach any provider: the body becomes Keel's
OpenAI-shaped ChatRequest (anthropic_request), the reply is rendered back as a Messages answer or
SSE stream (anthropic_response). Call, trace and header plumbing are the OpenAI edge's own. Errors
leave in Anthropic's format; after the first streamed byte a failure is an `event: error`, never
a clean `message_stop`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from keel.api.bounds import Bounds
from keel.api.openai import JSON_TYPE, authenticate, new_call, read_json, response_headers
from keel.errors import KeelError
from keel.gateway.call import Call, Reply
from keel.runtime.components import Runtime
from keel.wire.anthropic_request import parse_request
from keel.wire.anthropic_response import StreamEncoder, error_json, message_json, sse

log = logging.getLogger("keel.api")


def error_response(err: KeelError, trace_id: str | None = None) -> Response:
    headers = err.headers()
    if trace_id:
        headers["x-keel-trace-id"] = trace_id
    return Response(orjson.dumps(error_json(err)), err.status, headers, JSON_TYPE)


def _internal() -> KeelError:
    return KeelError("Internal gateway error; see the trace.")


class AnthropicEdge:
    def __init__(self, runtime: Runtime) -> None:
        self._rt = runtime
        self._payloads = runtime.config.traces.store_payloads
        self._bounds = Bounds.of(runtime.config.server)

    async def messages(self, request: Request) -> Response:
        t0 = time.perf_counter()
        try:
            principal, allowed = await authenticate(self._rt, request)
            body = await read_json(request, self._bounds)
            chat = parse_request(body, request.headers.get("anthropic-beta"))
            call = new_call(request, chat, body, "messages", self._payloads)
        except KeelError as err:
            return error_response(err)
        call.t0, call.principal, call.allowed = t0, principal, allowed
        message_id = f"msg_{call.trace.id}"
        try:
            reply = await self._rt.pipeline(call)
            model = reply.model or call.trace.model or chat.model  # the model answering, not the alias
            if chat.stream:
                events = self._stream(call, reply, StreamEncoder(message_id, model))
                return StreamingResponse(events, headers=response_headers(call, reply), media_type="text/event-stream")
            response = await reply.collect()
        except KeelError as err:
            return error_response(err, call.trace.id)
        except Exception:
            log.exception("internal error on trace %s", call.trace.id)
            return error_response(_internal(), call.trace.id)
        payload = orjson.dumps(message_json(response, message_id, response.model or model))
        return Response(payload, 200, response_headers(call, reply), JSON_TYPE)

    async def _stream(self, call: Call, reply: Reply, encoder: StreamEncoder) -> AsyncIterator[bytes]:
        try:
            yield encoder.start()
            async for event in reply:
                frame = encoder.feed(event)
                if frame:
                    yield frame
            yield encoder.end()
        except KeelError as err:
            yield sse("error", error_json(err))
        except Exception:
            log.exception("internal error mid-stream on trace %s", call.trace.id)
            yield sse("error", error_json(_internal()))
        finally:
            reply.abandon()
