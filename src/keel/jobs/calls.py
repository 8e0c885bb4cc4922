"""One OpenAI-shaped request body through the gateway pipeline, for a principal, outside any HTTP
request: what an async call's job and each batch line run. The same stages apply as to a live call
(auth honours the principal given, then route, limits and budgets, cache, failover, invoke, trace,
cost); the answer is the status and JSON body the HTTP edge would have sent.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from keel.errors import InvalidRequest, KeelError, RateLimited, Unavailable
from keel.gateway.call import Call
from keel.gateway.pipeline import Handler
from keel.store.protocols import KeyStore
from keel.traces.ids import new_trace_id
from keel.types import ChatRequest, EmbeddingRequest, Principal, TraceRecord
from keel.wire import openai_chat as wire
from keel.wire.openai_embeddings import embedding_json, parse_embedding_request

log = logging.getLogger("keel.jobs")
CHAT, EMBEDDINGS = "/v1/chat/completions", "/v1/embeddings"
_ENDPOINT = {CHAT: "chat", EMBEDDINGS: "embeddings"}


@dataclass(frozen=True, slots=True)
class Answer:
    status: int  # the HTTP status the edge would have sent
    body: dict[str, Any]  # the response, or {"error": {message, type, param, code}}
    trace_id: str  # also the answer's request id
    retry_after: float | None = None  # refused for now (rate limited, saturated, a store down): when to retry

    @property
    def ok(self) -> bool:
        return self.status < 400

    @property
    def transient(self) -> bool:
        """Would the same call likely succeed later: refused for now (a rate limit, not a spent budget), or
        every provider failed."""
        if self.retry_after is not None or self.status in (500, 502, 503, 504):
            return True
        error = self.body.get("error") or {}
        return self.status == 429 and error.get("type") != "insufficient_quota"


@dataclass(frozen=True, slots=True)
class Caller:
    """Who a deferred call runs as, and how: the principal and its aliases, the call's priority in a
    saturated target's queue (None: the key's own), its budget, and its attribution."""

    principal: Principal
    allowed: tuple[str, ...] | None = None
    priority: int | None = None
    timeout_s: float | None = None
    feature: str | None = None
    session: str | None = None
    user: str | None = None


def error_json(err: KeelError) -> dict[str, Any]:
    return {"error": {"message": err.message, "type": err.type, "param": err.param, "code": err.code}}


def parse(url: str, body: Any) -> ChatRequest | EmbeddingRequest:
    """The request of `body` for endpoint `url`; InvalidRequest as the edge would say it. No streams:
    a deferred answer is one JSON body."""
    if url == EMBEDDINGS:
        return parse_embedding_request(body)
    if url != CHAT:
        raise InvalidRequest(f"'url' must be {CHAT} or {EMBEDDINGS}.", "url")
    chat = wire.parse_request(body)
    if chat.stream:
        raise InvalidRequest("'stream' is not supported here: the answer is delivered whole.", "stream")
    return chat


async def run_body(
    pipeline: Handler,
    url: str,
    body: Any,
    caller: Caller,
    *,
    tags: Mapping[str, Any] | None = None,
    store_payloads: bool = True,
) -> Answer:
    """Run `body` (for `url`) through `pipeline` as `caller`; the answer, never an exception (but a
    cancellation). `tags` join the body's metadata on the trace."""
    started = time.time()
    trace_id = new_trace_id()
    try:
        request = parse(url, body)
    except KeelError as err:
        return Answer(err.status, error_json(err), trace_id)
    metadata = body.get("metadata") if isinstance(body, dict) else None
    all_tags = {**(metadata if isinstance(metadata, dict) else {}), **(tags or {})}
    record = TraceRecord(
        id=trace_id,
        started_at=started,
        endpoint=_ENDPOINT[url],
        alias=request.model,
        request=body if store_payloads else None,
    )
    call = Call(
        request,
        record,
        principal=caller.principal,
        allowed=caller.allowed,
        user=getattr(request, "user", None) or caller.user,
        feature=caller.feature,
        session=caller.session,
        tags=all_tags or None,
        timeout_s=caller.timeout_s,
        asked_priority=caller.priority,
    )
    try:
        reply = await pipeline(call)
        if isinstance(request, EmbeddingRequest):
            await reply.collect()
            assert reply.embedding is not None
            b64 = body.get("encoding_format") == "base64"
            return Answer(200, embedding_json(reply.embedding, request.model, b64), trace_id)
        response = await reply.collect()
    except KeelError as err:
        wait = err.retry_after if isinstance(err, RateLimited | Unavailable) else None
        return Answer(err.status, error_json(err), trace_id, wait)
    except Exception:
        log.exception("internal error on trace %s", trace_id)
        return Answer(500, error_json(KeelError("Internal gateway error; see the trace.")), trace_id)
    model = response.model or record.model or request.model
    return Answer(200, wire.response_json(response, model, int(started)), trace_id)


def resolve_key(store: KeyStore, tenant: str, key_id: str) -> tuple[Principal, tuple[str, ...] | None] | None:
    """The principal of key `key_id` of `tenant` as it is now, and its aliases; None if it was revoked or
    is gone (deferred work runs as its key, so a revoked key's queued work is refused, not run)."""
    row = next((k for k in store.list_keys(tenant) if k.id == key_id), None)
    if row is None or row.revoked_at is not None:
        return None
    found = store.get_tenant(tenant)
    if found is None:
        return None
    principal = Principal(
        tenant=row.tenant,
        key_id=row.id,
        key_name=row.name,
        user=row.user,
        regions=found.regions,
        priority=row.priority,
        max_priority=row.max_priority,
    )
    return principal, row.models
