"""Routes Keel passes through as they are: `/v1/moderations`, `/v1/rerank`, and the upstream's own legacy
completions and Anthropic token counting when a target offers them.

The caller's key is checked and its `model` routed like any call (aliases, allowed models, regions);
the body goes, with `model` set to the target's upstream model, to the first target of the plan whose
catalog row lists the endpoint (`CatalogRow.endpoints`). No target offering it is a 400 naming
`model` and the endpoint. These calls are traced (endpoint, alias, target, status, latency), not
cached, limited or failed over: their answers are the upstream's, byte for byte. A whole answer's
`usage` (completions, rerank) is recorded and priced on the trace; a streamed one's is not read.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any, Protocol, runtime_checkable

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from keel.api.bounds import Bounds
from keel.api.openai import (
    JSON_TYPE,
    SSE_HEADERS,
    authenticate,
    error_response,
    new_trace_id,
    read_json,
)
from keel.catalog import CATALOG, Endpoint
from keel.errors import InvalidRequest, KeelError
from keel.runtime.components import Runtime
from keel.types import EmbeddingRequest, Principal, Target, TraceRecord, Usage
from keel.wire import openai_chat as wire


@runtime_checkable
class Forwarding(Protocol):
    """A provider that can pass a body through to its upstream (keel.providers.http.HttpProvider)."""

    async def forward(self, path: str, body: bytes) -> bytes: ...

    def forward_stream(self, path: str, body: bytes) -> AsyncIterator[bytes]: ...


_PATHS: dict[Endpoint, str] = {
    "completions": "/completions",
    "moderations": "/moderations",
    "rerank": "/rerank",
    "count_tokens": "/messages/count_tokens",
}


class Passage:
    """One forwarded call: the body, its upstream path, its trace record and the target that offers it."""

    __slots__ = ("body", "path", "provider", "record", "t0", "target")

    def __init__(
        self, body: dict[str, Any], path: str, record: TraceRecord, target: Target, provider: Forwarding
    ) -> None:
        self.body, self.path, self.record, self.target, self.provider = body, path, record, target, provider
        self.t0 = time.perf_counter()

    @property
    def payload(self) -> bytes:
        return orjson.dumps({**self.body, "model": self.target.model})


class Forwarder:
    def __init__(self, runtime: Runtime) -> None:
        self._rt = runtime
        self._bounds = Bounds.of(runtime.config.server)
        self._offers = {name: CATALOG[p.type].endpoints for name, p in runtime.config.providers.items()}

    def offering(
        self,
        endpoint: Endpoint,
        model: str,
        principal: Principal,
        allowed: tuple[str, ...] | None,
        *,
        first: bool = False,
    ) -> tuple[Target, Forwarding] | None:
        """The first target of `model`'s plan whose upstream offers `endpoint` (with `first`: only if the
        plan's first target does), or None. An unknown or forbidden model raises ModelNotFound."""
        plan = self._rt.router.plan(model, EmbeddingRequest(model, ()), principal, allowed)
        for target in plan.targets[:1] if first else plan.targets:
            provider = self._rt.providers.get(target.provider)
            if endpoint in self._offers.get(target.provider, ()) and isinstance(provider, Forwarding):
                return target, provider
        return None

    def passage(
        self,
        endpoint: Endpoint,
        body: dict[str, Any],
        principal: Principal,
        allowed: tuple[str, ...] | None,
        found: tuple[Target, Forwarding] | None = None,
    ) -> Passage | None:
        model = wire.require_model(body)
        found = found or self.offering(endpoint, model, principal, allowed)
        if found is None:
            return None
        record = TraceRecord(id=new_trace_id(), started_at=time.time(), endpoint=endpoint, alias=model)
        record.tenant, record.key_id = principal.tenant, principal.key_id
        record.provider, record.model = found[0].provider, found[0].model
        return Passage(body, _PATHS[endpoint], record, *found)

    async def send(self, passage: Passage) -> Response:
        """The upstream's answer as it is, traced; an upstream error in OpenAI's format."""
        try:
            answer = await passage.provider.forward(passage.path, passage.payload)
        except KeelError as err:
            self.finish(passage, err)
            raise
        self._bill(passage.record, answer)
        self.finish(passage, None)
        return Response(answer, 200, self.headers(passage), JSON_TYPE)

    def _bill(self, record: TraceRecord, answer: bytes) -> None:
        """Usage and cost from the answer's `usage`, when it has one (completions, rerank): best effort."""
        try:
            usage = orjson.loads(answer).get("usage")
        except (orjson.JSONDecodeError, AttributeError):
            return
        if not isinstance(usage, dict):
            return
        counts = [usage.get(k) for k in ("prompt_tokens", "completion_tokens", "total_tokens")]
        if not all(c is None or (type(c) is int and 0 <= c < 10**9) for c in counts):
            return
        prompt, completion, total = counts
        spent = Usage(input_tokens=prompt if prompt is not None else total or 0, output_tokens=completion or 0)
        record.input_tokens, record.output_tokens = spent.input_tokens, spent.output_tokens
        if record.model is not None:
            record.cost_usd = self._rt.prices.cost(record.model, spent)

    async def stream(self, passage: Passage) -> Response:
        """A streamed answer passed through chunk by chunk (SSE), traced when it ends. The upstream's
        refusal (an error status) is an error response, not a 200 stream: its first bytes are read first."""
        chunks = passage.provider.forward_stream(passage.path, passage.payload)
        try:
            first = await anext(chunks, b"")
        except KeelError as err:
            self.finish(passage, err)
            raise
        relay = self._relay(passage, first, chunks)
        return StreamingResponse(relay, headers=self.headers(passage) | SSE_HEADERS, media_type="text/event-stream")

    async def _relay(self, passage: Passage, first: bytes, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        error: KeelError | None = None
        finished = False
        try:
            if b"data: [DONE]" in first:
                finished = True
                self.finish(passage, None)
            yield first
            async for chunk in chunks:
                if not finished and b"data: [DONE]" in chunk:  # traced before the answer's end reaches the client
                    finished = True
                    self.finish(passage, None)
                yield chunk
        except KeelError as err:
            error = err
            yield b"data: " + orjson.dumps({"error": {"message": err.message, "type": err.type}}) + b"\n\n"
        finally:
            await _close(chunks)
            if not finished:
                self.finish(passage, error)

    def headers(self, passage: Passage) -> dict[str, str]:
        r = passage.record
        return {"x-keel-trace-id": r.id, "x-keel-provider": r.provider or "", "x-keel-model": r.model or ""}

    def finish(self, passage: Passage, error: KeelError | None) -> None:
        record = passage.record
        record.latency_ms = (time.perf_counter() - passage.t0) * 1000
        if error is not None:
            record.status, record.error_kind, record.error_message = "error", error.kind, error.message
            record.http_status = error.status
        self._rt.writer.put(record)

    async def moderations(self, request: Request) -> Response:
        return await self._only_forwarded(request, "moderations")

    async def rerank(self, request: Request) -> Response:
        return await self._only_forwarded(request, "rerank")

    async def _only_forwarded(self, request: Request, endpoint: Endpoint) -> Response:
        try:
            principal, allowed = await authenticate(self._rt, request)
            body = await read_json(request, self._bounds)
            if not isinstance(body, dict):
                raise InvalidRequest("The request body must be a JSON object.", None)
            passage = self.passage(endpoint, body, principal, allowed)
            if passage is None:
                raise InvalidRequest(
                    f"No target of model '{body['model']}' offers /v1/{endpoint}; route it to a provider "
                    f"whose catalog row lists '{endpoint}' (see the README's route table).",
                    "model",
                )
            return await self.send(passage)
        except KeelError as err:
            return error_response(err)


async def _close(chunks: AsyncIterator[bytes]) -> None:
    closer = getattr(chunks, "aclose", None)
    if closer is not None:
        await closer()
