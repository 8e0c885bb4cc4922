"""The OpenAI-shaped HTTP edge: parse → Call → pipeline → render. The only place errors become JSON."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from typing import Any, Protocol

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from keel.api.bounds import Bounds, check_depth, deep_message, read_body
from keel.cache.stage import CacheState
from keel.errors import InvalidRequest, KeelError, ModelNotFound, ProviderError
from keel.gateway.call import Call, Reply, ResponseFields
from keel.gateway.directives import HEADER as CACHE_HEADER
from keel.gateway.directives import Directives
from keel.limits.stage import LimitState
from keel.runtime.components import Runtime
from keel.traces.ids import new_trace_id
from keel.traces.otel import join_caller_trace
from keel.types import ChatRequest, EmbeddingRequest, Principal, TraceRecord, UsageEvent
from keel.wire import openai_chat as wire
from keel.wire.openai_embeddings import embedding_json, parse_embedding_request

log = logging.getLogger("keel.api")
JSON_TYPE = "application/json"
# Streams must reach the client as they are made: no cache, and no buffering in nginx-style proxies.
SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


def error_body(err: KeelError) -> bytes:
    return orjson.dumps({"error": {"message": err.message, "type": err.type, "param": err.param, "code": err.code}})


def error_response(err: KeelError, trace_id: str | None = None) -> Response:
    headers = err.headers()
    if trace_id:
        headers["x-keel-trace-id"] = trace_id
    return Response(error_body(err), err.status, headers, JSON_TYPE)


def bearer(request: Request) -> str | None:
    auth = request.headers.get("authorization")
    if auth and auth[:7].lower() == "bearer ":
        return auth[7:].strip()
    return request.headers.get("x-api-key") or request.headers.get("api-key")  # Anthropic's, Azure's


async def read_json(request: Request, bounds: Bounds) -> Any:
    """The body parsed, within `bounds`: 413 past `max_body_bytes`, 400 if invalid or nested too deep.

    On Azure's URL shape (`/openai/deployments/{deployment}/...`) the deployment names the model."""
    body = await read_body(request, bounds.max_body_bytes)
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        if "depth" in str(exc):  # orjson's own limit (1024), far past ours
            raise InvalidRequest(deep_message(bounds.max_json_depth, "in the body"), None) from None
        raise InvalidRequest("The request body is not valid JSON.", None) from None
    check_depth(body, value, bounds.max_json_depth)
    params = request.scope.get("path_params")
    if params and "deployment" in params and isinstance(value, dict):
        value["model"] = params["deployment"]
    return value


async def authenticate(runtime: Runtime, request: Request) -> tuple[Principal, tuple[str, ...] | None]:
    """The caller's key, resolved before its body is read: a stranger's large body is never read or parsed.

    The pipeline's auth stage then reuses the principal (one key lookup per call). A refusal is counted
    with the trace stage's unauthenticated calls, and not traced, as before.
    """
    try:
        return await runtime.authenticator.resolve(bearer(request))
    except KeelError:
        runtime.trace_stage.unauthenticated += 1
        raise


RESERVED = "keel."  # tags Keel writes itself (cache, resumed, sanitized, replay_of, ...): never the client's
MAX_TAGS = 32  # x-keel-tags: at most this many key=value pairs
MAX_TAG_KEY = 64  # characters of one key
MAX_TAG_VALUE = 256  # characters of one value (what a rollup or an index keys on, at most)


def _tags(header: str | None, metadata: Any) -> dict[str, Any]:
    """The call's tags: the body's `metadata`, then `x-keel-tags: k=v,k2=v2` over it.

    A client naming a reserved `keel.*` tag gets a 400 rather than a silent drop: it asked for
    something Keel will not record, and a quiet loss would surface only later, as a wrong report.
    """
    tags: dict[str, Any] = {}
    if isinstance(metadata, dict):
        for key in metadata:
            if key.startswith(RESERVED):
                raise InvalidRequest(f"Tag '{key[:MAX_TAG_KEY]}' is reserved: keel.* tags are Keel's own.", "metadata")
        tags.update(metadata)
    if not header:
        return tags
    parts = header.split(",")
    if len(parts) > MAX_TAGS:
        raise InvalidRequest(f"The x-keel-tags header holds at most {MAX_TAGS} tags.", "x-keel-tags")
    for part in parts:
        key, _, value = part.strip().partition("=")
        if not key:
            continue
        if len(key) > MAX_TAG_KEY or len(value) > MAX_TAG_VALUE:
            raise InvalidRequest(
                f"x-keel-tags: a key holds at most {MAX_TAG_KEY} characters, a value {MAX_TAG_VALUE}.", "x-keel-tags"
            )
        if key.startswith(RESERVED):
            raise InvalidRequest(f"Tag '{key}' is reserved: keel.* tags are Keel's own.", "x-keel-tags")
        tags[key] = value
    return tags


def new_call(
    request: Request, model_request: ChatRequest | EmbeddingRequest, body: Any, endpoint: str, store_payloads: bool
) -> Call:
    h = request.headers
    user = getattr(model_request, "user", None) or h.get("x-keel-user")
    tags = _tags(h.get("x-keel-tags"), getattr(model_request, "metadata", None))
    prompt_version = h.get("x-keel-prompt-version") or tags.get("prompt_version")
    record = TraceRecord(
        id=new_trace_id(),
        started_at=time.time(),
        endpoint=endpoint,
        alias=model_request.model,
        request=body if store_payloads else None,
        stream=getattr(model_request, "stream", False),
        prompt_version=str(prompt_version) if prompt_version is not None else None,
    )
    if "traceparent" in h:
        join_caller_trace(record, h.get("traceparent"), ", ".join(h.getlist("tracestate")))
    call = Call(
        model_request,
        record,
        api_key=bearer(request),
        user=user,
        feature=h.get("x-keel-feature"),
        session=h.get("x-keel-session"),
        tags=tags or None,
        timeout_s=_timeout(h.get("x-keel-timeout")),
        tier=h.get("x-keel-tier"),
        asked_priority=_priority(h.get("x-keel-priority")),
    )
    cache_control = h.get(CACHE_HEADER)
    if cache_control:
        call.state(CacheState).directives = Directives.parse(cache_control)
    return call


def _priority(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise InvalidRequest("The x-keel-priority header must be an integer.", "x-keel-priority") from None


def _timeout(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise InvalidRequest("The x-keel-timeout header must be a positive number of seconds.", "x-keel-timeout")
    return seconds


def _headers(call: Call, reply: Reply) -> dict[str, str]:
    overhead = (time.perf_counter() - call.t0 - reply.upstream_s - call.waited_s) * 1000
    record = call.trace
    record.overhead_ms = overhead
    headers = {
        "x-keel-trace-id": record.id,
        "x-keel-provider": record.provider or "",
        "x-keel-model": reply.model or record.model or "",
        "x-keel-alias": record.alias or "",
        "x-keel-fallback": record.fallback or "primary",
        "x-keel-overhead-ms": f"{overhead:.3f}",
    }
    if record.prompt_version is not None:
        headers["x-keel-prompt-version"] = record.prompt_version
    limits = call.find(LimitState)
    if limits is not None and limits.warnings:
        headers["x-keel-limit-warning"] = "; ".join(limits.warnings)
    cache = record.cache or record.tags.get("keel.cache")
    if cache == "semantic":
        headers["x-keel-cache"] = f"semantic; similarity={record.tags.get('keel.cache_similarity')}"
    elif cache is not None:
        headers["x-keel-cache"] = str(cache)
    return headers


response_headers = _headers  # the Anthropic edge sends the same headers


class Deferral(Protocol):
    """Sends a call to the job queue instead of answering it now (keel.api.deferred.AsyncEdge)."""

    def wanted(self, request: Request, model_request: ChatRequest | EmbeddingRequest) -> str | None: ...

    async def submit(self, request: Request, call: Call, body: Any, url: str, reason: str) -> Response: ...


class OpenAIEdge:
    def __init__(self, runtime: Runtime, deferral: Deferral | None = None) -> None:
        self._rt = runtime
        self._payloads = runtime.config.traces.store_payloads
        self._bounds = Bounds.of(runtime.config.server)
        self._defer = deferral  # Prefer: respond-async, async_only aliases: queued, answered 202

    async def chat(self, request: Request) -> Response:
        t0 = time.perf_counter()
        try:
            principal, allowed = await authenticate(self._rt, request)
            body = await read_json(request, self._bounds)
            chat = wire.parse_request(body)
            call = new_call(request, chat, body, "chat", self._payloads)
        except KeelError as err:
            return error_response(err)
        call.t0, call.principal, call.allowed = t0, principal, allowed
        if self._defer is not None and (why := self._defer.wanted(request, chat)) is not None:
            return await self._defer.submit(request, call, body, "/v1/chat/completions", why)
        try:
            reply = await self._rt.pipeline(call)
            if chat.stream:
                headers = _headers(call, reply) | SSE_HEADERS
                return StreamingResponse(
                    self._stream(call, chat, reply), headers=headers, media_type="text/event-stream"
                )
            response = await reply.collect()
        except KeelError as err:
            return error_response(err, call.trace.id)
        except Exception:
            log.exception("internal error on trace %s", call.trace.id)
            return error_response(KeelError("Internal gateway error; see the trace."), call.trace.id)
        model = response.model or call.trace.model or chat.model  # the model that answered, as OpenAI names it
        body = wire.response_json(response, model, int(call.trace.started_at))
        added = call.find(ResponseFields)
        payload = orjson.dumps(body | added.fields if added else body)
        return Response(payload, 200, _headers(call, reply), JSON_TYPE)

    async def _stream(self, call: Call, chat: ChatRequest, reply: Reply) -> AsyncIterator[bytes]:
        rid, created = "", int(call.trace.started_at)
        named = call.trace.model or chat.model  # until the reply names the model answering (a resume may change it)
        usage = None
        try:
            async for event in reply:
                if isinstance(event, UsageEvent):
                    usage = event.usage
                    continue
                rid = rid or reply.id or f"chatcmpl-{call.trace.id}"
                chunk = wire.chunk_json(rid, reply.model or named, created, event)
                if chunk is not None:
                    yield b"data: " + orjson.dumps(chunk) + b"\n\n"
            if chat.include_usage and usage is not None:
                chunk = wire.usage_chunk_json(rid, reply.model or named, created, usage)
                yield b"data: " + orjson.dumps(chunk) + b"\n\n"
            added = call.find(ResponseFields)
            if added is not None and added.fields:  # a last chunk with no choices, as the usage chunk
                chunk = {
                    "id": rid,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": reply.model or named,
                }
                yield b"data: " + orjson.dumps(chunk | {"choices": []} | added.fields) + b"\n\n"
            yield b"data: [DONE]\n\n"
        except KeelError as err:
            # After the first byte a failure must never look like success: an explicit error event, no [DONE].
            yield b"data: " + error_body(err) + b"\n\n"
        except Exception:
            log.exception("internal error mid-stream on trace %s", call.trace.id)
            yield b"data: " + error_body(KeelError("Internal gateway error; see the trace.")) + b"\n\n"
        finally:
            reply.abandon()

    async def embeddings(self, request: Request) -> Response:
        t0 = time.perf_counter()
        try:
            principal, allowed = await authenticate(self._rt, request)
            body = await read_json(request, self._bounds)
            emb = parse_embedding_request(body)
            call = new_call(request, emb, body, "embeddings", self._payloads)
        except KeelError as err:
            return error_response(err)
        call.t0, call.principal, call.allowed = t0, principal, allowed
        if self._defer is not None and (why := self._defer.wanted(request, emb)) is not None:
            return await self._defer.submit(request, call, body, "/v1/embeddings", why)
        try:
            reply = await self._rt.pipeline(call)
            await reply.collect()
        except KeelError as err:
            return error_response(err, call.trace.id)
        assert reply.embedding is not None
        payload = orjson.dumps(embedding_json(reply.embedding, emb.model, body.get("encoding_format") == "base64"))
        return Response(payload, 200, _headers(call, reply), JSON_TYPE)

    async def models(self, request: Request) -> Response:
        try:
            _, allowed = await self._rt.authenticator.resolve(bearer(request))
        except KeelError as err:
            return error_response(err)
        data = [_model_json(a) for a in self._rt.router.aliases(allowed)]
        return Response(orjson.dumps({"object": "list", "data": data}), 200, None, JSON_TYPE)

    async def model(self, request: Request) -> Response:
        """`GET /v1/models/{id}`: one alias this key may use, or OpenAI's 404 (unknown and not allowed alike)."""
        try:
            _, allowed = await self._rt.authenticator.resolve(bearer(request))
            name = request.path_params["model"]
            aliases = self._rt.router.aliases(allowed)
            if name not in aliases:
                raise ModelNotFound(name, aliases)
        except KeelError as err:
            return error_response(err)
        return Response(orjson.dumps(_model_json(name)), 200, None, JSON_TYPE)


def _model_json(alias: str) -> dict[str, Any]:
    return {"id": alias, "object": "model", "created": 0, "owned_by": "keel"}


__all__ = ["OpenAIEdge", "ProviderError", "error_response", "new_trace_id", "parse_embedding_request"]
