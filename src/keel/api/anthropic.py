"""The Anthropic-shaped HTTP edge, `POST /v1/messages`: parse → Call → pipeline → render.

Anthropic SDK clients point `base_url` at Keel and reach any provider: the body becomes Keel's
OpenAI-shaped ChatRequest (anthropic_request), the reply is rendered back as a Messages answer or
SSE stream (anthropic_response). Call, trace and header plumbing are the OpenAI edge's own. Errors
leave in Anthropic's format (an overloaded upstream is Anthropic's 529 `overloaded_error`); after the
first streamed byte a failure is an `event: error`, never a clean `message_stop`.

Streams open with `message_start` carrying the prompt's `input_tokens`: the upstream's when it reports
them up front (an Anthropic upstream), else Keel's estimate (the exact count follows in `message_delta`), then a `ping`, and send another `ping` whenever no event came for
`server.sse_ping_s`, as Anthropic does. `POST /v1/messages/count_tokens` asks an Anthropic target's
own counter; any other target gets Keel's estimate (characters / 4 plus framing).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from keel.api.bounds import Bounds
from keel.api.forward import Forwarder
from keel.api.openai import JSON_TYPE, SSE_HEADERS, authenticate, new_call, read_json, response_headers
from keel.errors import AllTargetsFailed, ErrorKind, InvalidRequest, KeelError, ProviderError
from keel.gateway.call import Call, Reply
from keel.gateway.routing import estimate_prompt_tokens
from keel.runtime.components import Runtime
from keel.types import ChatEvent, Start
from keel.wire.anthropic_request import parse_request
from keel.wire.anthropic_response import StreamEncoder, error_json, message_json, sse, usage_json

log = logging.getLogger("keel.api")


OVERLOADED = 529  # Anthropic's status for an overloaded API; OpenAI clients get 503
PING = sse("ping", {"type": "ping"})


def overloaded(err: KeelError) -> bool:
    """The upstream (every target tried) was overloaded: Anthropic clients expect 529 for it."""
    if isinstance(err, ProviderError):
        return err.error_kind is ErrorKind.overloaded
    return isinstance(err, AllTargetsFailed) and all(a.error_kind is ErrorKind.overloaded for a in err.attempts)


def anthropic_error(err: KeelError) -> tuple[int, dict[str, Any]]:
    body = error_json(err)
    if overloaded(err):
        body["error"]["type"] = "overloaded_error"
        return OVERLOADED, body
    return err.status, body


def error_response(err: KeelError, trace_id: str | None = None) -> Response:
    headers = err.headers()
    if trace_id:
        headers["x-keel-trace-id"] = trace_id
    status, body = anthropic_error(err)
    return Response(orjson.dumps(body), status, headers, JSON_TYPE)


def _internal() -> KeelError:
    return KeelError("Internal gateway error; see the trace.")


class AnthropicEdge:
    def __init__(self, runtime: Runtime, forwarder: Forwarder) -> None:
        self._rt = runtime
        self._forward = forwarder
        self._payloads = runtime.config.traces.store_payloads
        self._bounds = Bounds.of(runtime.config.server)
        self._ping_s = runtime.config.server.sse_ping_s

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
                events = self._stream(call, reply, StreamEncoder(message_id, model), estimate_prompt_tokens(chat))
                headers = response_headers(call, reply) | SSE_HEADERS
                return StreamingResponse(events, headers=headers, media_type="text/event-stream")
            response = await reply.collect()
        except KeelError as err:
            return error_response(err, call.trace.id)
        except Exception:
            log.exception("internal error on trace %s", call.trace.id)
            return error_response(_internal(), call.trace.id)
        payload = orjson.dumps(message_json(response, message_id, response.model or model))
        return Response(payload, 200, response_headers(call, reply), JSON_TYPE)

    async def _stream(
        self, call: Call, reply: Reply, encoder: StreamEncoder, input_tokens: int
    ) -> AsyncIterator[bytes]:
        pending: asyncio.Future[ChatEvent] | None = None
        try:
            first = await anext(reply, None)  # buffered: the reply was primed up to its first content
            prompt = first.prompt if isinstance(first, Start) else None
            start = usage_json(prompt) if prompt else {"input_tokens": input_tokens, "output_tokens": 0}
            yield encoder.start(start | {"output_tokens": 0}) + PING
            frame = encoder.feed(first) if first is not None else b""
            if frame:
                yield frame
            while first is not None:
                pending = pending or asyncio.ensure_future(reply.__anext__())
                done, _ = await asyncio.wait((pending,), timeout=self._ping_s)
                if not done:
                    yield PING  # idle: tell the client (and proxies) the stream is alive
                    continue
                event, pending = pending, None
                try:
                    frame = encoder.feed(event.result())
                except StopAsyncIteration:
                    break
                if frame:
                    yield frame
            yield encoder.end()
        except KeelError as err:
            yield sse("error", anthropic_error(err)[1])
        except Exception:
            log.exception("internal error mid-stream on trace %s", call.trace.id)
            yield sse("error", error_json(_internal()))
        finally:
            if pending is not None:
                pending.cancel()
            reply.abandon()

    async def count_tokens(self, request: Request) -> Response:
        """`POST /v1/messages/count_tokens`: an Anthropic target's own count, else Keel's estimate."""
        try:
            principal, allowed = await authenticate(self._rt, request)
            body = await read_json(request, self._bounds)
            if not isinstance(body, dict):
                raise InvalidRequest("The request body must be a JSON object.", None)
            chat = parse_request({**body, "max_tokens": 1})  # validates model and messages; names bad fields
            found = self._forward.offering("count_tokens", chat.model, principal, allowed, first=True)
            passage = found and self._forward.passage("count_tokens", body, principal, allowed, found)
            if passage:
                response = await self._forward.send(passage)
                response.headers["x-keel-token-count"] = "provider"
                return response
        except KeelError as err:
            return error_response(err)
        payload = orjson.dumps({"input_tokens": estimate_prompt_tokens(chat)})
        return Response(payload, 200, {"x-keel-token-count": "estimated"}, JSON_TYPE)
