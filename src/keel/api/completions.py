"""`POST /v1/completions`, the legacy text-completions API.

When the alias's first target offers it (catalog `endpoints`: OpenAI, vLLM, Together, ...), the body is
passed through as it is (keel.api.forward). Otherwise it is served as chat through the whole pipeline:
the prompt becomes one user message and the answer `choices[0].text`, streamed in the completions
chunk shape. What chat cannot honour is a 400 naming the field: `echo`, `logprobs`, `suffix`,
`best_of` > 1, several prompts, token-id prompts.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from keel.api.bounds import Bounds
from keel.api.forward import Forwarder
from keel.api.openai import (
    JSON_TYPE,
    SSE_HEADERS,
    authenticate,
    error_body,
    error_response,
    new_call,
    read_json,
    response_headers,
)
from keel.errors import InvalidRequest, KeelError
from keel.gateway.call import Call, Reply
from keel.runtime.components import Runtime
from keel.types import JSON, ChatRequest, ChatResponse, Finish, Text, Usage, UsageEvent
from keel.wire import openai_chat as wire

log = logging.getLogger("keel.api")

# Completions fields that mean the same in chat, carried over as they are.
_CARRIED = (
    "model",
    "max_tokens",
    "temperature",
    "top_p",
    "n",
    "stream",
    "stream_options",
    "stop",
    "presence_penalty",
    "frequency_penalty",
    "logit_bias",
    "seed",
    "user",
    "metadata",
)


class Completions:
    def __init__(self, runtime: Runtime, forwarder: Forwarder) -> None:
        self._rt = runtime
        self._forward = forwarder
        self._payloads = runtime.config.traces.store_payloads
        self._bounds = Bounds.of(runtime.config.server)

    async def create(self, request: Request) -> Response:
        t0 = time.perf_counter()
        try:
            principal, allowed = await authenticate(self._rt, request)
            body = await read_json(request, self._bounds)
            model = wire.require_model(body)
            found = self._forward.offering("completions", model, principal, allowed, first=True)
            if found is not None:
                passage = self._forward.passage("completions", body, principal, allowed, found)
                assert passage is not None
                if body.get("stream") is True:
                    return await self._forward.stream(passage)
                return await self._forward.send(passage)
            chat = wire.parse_request(chat_body(body))
            call = new_call(request, chat, body, "completions", self._payloads)
        except KeelError as err:
            return error_response(err)
        call.t0, call.principal, call.allowed = t0, principal, allowed
        try:
            reply = await self._rt.pipeline(call)
            if chat.stream:
                headers = response_headers(call, reply) | SSE_HEADERS
                return StreamingResponse(
                    self._stream(call, chat, reply), headers=headers, media_type="text/event-stream"
                )
            response = await reply.collect()
        except KeelError as err:
            return error_response(err, call.trace.id)
        except Exception:
            log.exception("internal error on trace %s", call.trace.id)
            return error_response(KeelError("Internal gateway error; see the trace."), call.trace.id)
        model = response.model or call.trace.model or chat.model
        payload = orjson.dumps(completion_json(response, f"cmpl-{call.trace.id}", model, int(call.trace.started_at)))
        return Response(payload, 200, response_headers(call, reply), JSON_TYPE)

    async def _stream(self, call: Call, chat: ChatRequest, reply: Reply) -> AsyncIterator[bytes]:
        rid, created = f"cmpl-{call.trace.id}", int(call.trace.started_at)
        usage: Usage | None = None
        try:
            async for event in reply:
                model = reply.model or call.trace.model or chat.model
                if isinstance(event, Text) and event.text:
                    yield _sse(_chunk(rid, model, created, event.text, None))
                elif isinstance(event, Finish):
                    yield _sse(_chunk(rid, model, created, "", event.reason))
                elif isinstance(event, UsageEvent):
                    usage = event.usage
            if chat.include_usage and usage is not None:
                model = reply.model or call.trace.model or chat.model
                tail = {"id": rid, "object": "text_completion", "created": created, "model": model, "choices": []}
                yield _sse(tail | {"usage": _usage(usage)})
            yield b"data: [DONE]\n\n"
        except KeelError as err:
            yield b"data: " + error_body(err) + b"\n\n"  # never a clean [DONE] after a failure
        except Exception:
            log.exception("internal error mid-stream on trace %s", call.trace.id)
            yield b"data: " + error_body(KeelError("Internal gateway error; see the trace.")) + b"\n\n"
        finally:
            reply.abandon()


def chat_body(body: dict[str, Any]) -> JSON:
    """The chat request that serves a completions body, or InvalidRequest naming what chat cannot honour."""
    if body.get("echo"):
        raise InvalidRequest("'echo' is not supported: this target serves completions through chat.", "echo")
    if body.get("logprobs") is not None:
        raise InvalidRequest("'logprobs' is not supported: this target serves completions through chat.", "logprobs")
    if body.get("suffix"):
        raise InvalidRequest("'suffix' is not supported: this target serves completions through chat.", "suffix")
    best_of = body.get("best_of")
    if best_of is not None and best_of != 1:
        raise InvalidRequest(
            "'best_of' above 1 is not supported: this target serves completions through chat.", "best_of"
        )
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise InvalidRequest(
            "'prompt' must be one string here: several prompts or token ids need a target with a completions endpoint.",
            "prompt",
        )
    chat: JSON = {k: body[k] for k in _CARRIED if k in body}
    chat["messages"] = [{"role": "user", "content": prompt}]
    return chat


def completion_json(r: ChatResponse, rid: str, model: str, created: int) -> JSON:
    out: JSON = {
        "id": rid,
        "object": "text_completion",
        "created": created,
        "model": model,
        "choices": [{"text": r.content or "", "index": 0, "logprobs": None, "finish_reason": r.finish_reason}],
    }
    if r.usage is not None:
        out["usage"] = _usage(r.usage)
    return out


def _chunk(rid: str, model: str, created: int, text: str, finish: str | None) -> JSON:
    choice = {"text": text, "index": 0, "logprobs": None, "finish_reason": finish}
    return {"id": rid, "object": "text_completion", "created": created, "model": model, "choices": [choice]}


def _usage(u: Usage) -> JSON:
    return {
        "prompt_tokens": u.input_tokens,
        "completion_tokens": u.output_tokens,
        "total_tokens": u.input_tokens + u.output_tokens,
    }


def _sse(data: JSON) -> bytes:
    return b"data: " + orjson.dumps(data) + b"\n\n"
