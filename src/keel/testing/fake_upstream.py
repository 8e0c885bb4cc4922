"""A fake upstream LLM provider: a real HTTP server on 127.0.0.1 with per-request fault scripts.

It speaks the OpenAI chat-completions/embeddings and the Anthropic Messages wire formats (SSE
included), and small answers for the routes Keel passes through (legacy completions, moderations,
rerank, Anthropic's count_tokens) and stands for the outside world, so it imports nothing from Keel. It runs its own
event loop in a daemon thread, so sync tests and gateways in other processes can use it alike.
Each request pops the next queued `Script` (the default `Script()` when none is queued); a
script's faults touch only its own request, and `stop()` closes hanging connections at once.
Answers are deterministic, so a restarted answer repeats the first; a request that ends with an
assistant prefill (Anthropic: any trailing assistant message; OpenAI: one marked `prefix: true`, or
vLLM's `continue_final_message`) is answered with the rest of that answer, as a model continues it.
"""

from __future__ import annotations

import asyncio
import collections
import json
import socket
import struct
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal, Self

from aiohttp import web

from . import fake_cloud as cloud
from . import fake_responses
from . import fake_wire as wire

Kind = Literal[
    "chat", "messages", "embeddings", "models", "completions", "moderations", "rerank", "count_tokens", "responses"
]
_SHUTDOWN_TIMEOUT = 1.0
_START_TIMEOUT = 10.0
ENDLESS_BYTES = 256 * 2**20  # an endless stream still ends here, so a test of a client that never stops ends
_MAX_BODY = 100 * 1024 * 1024  # real providers take bodies of tens of MB (images); aiohttp's default is 1 MB


@dataclass
class Script:
    """How the fake answers one request. Stream chunk numbers count content chunks from 0.

    `cut_after=N` closes the connection once N content chunks are sent (no end marker);
    `end_after=N` ends the body cleanly there instead (no finish reason, no end marker);
    `stall_after=N` sends N content chunks then nothing more, until the client leaves;
    `malformed_at=N` (or a tuple of Ns) sends those content chunks as invalid JSON; `endless` repeats
    the content chunks until the client goes away (at most `ENDLESS_BYTES`; the request's record
    counts `streamed` bytes). `ttft` delays the first content chunk of a stream, or the whole body of
    a non-streamed reply (after `delay`).
    Lies under HTTP 200: `error_in_200=S` answers with status S's error object (or `error_body`) as
    the whole body, or as a stream's event after `error_after` content chunks (0: the first event,
    and the stream ends there); `body_override` replaces a non-streamed reply's body (JSON, or bytes
    as they are); `bad_usage` is merged into the usage object as sent, in the format's own field
    names (e.g. {"prompt_tokens": -5} for OpenAI, {"output_tokens": 1e30} for Anthropic).
    `echo_headers` makes an error message quote the request's headers, as careless upstreams do.
    `refuse_prefill` answers a request carrying an assistant prefill with a 400.
    `arguments` is the JSON a tool call (`tool_call`, or an Anthropic tool_choice that forces one)
    carries; `thinking` is reasoning the model shows first (OpenAI: `reasoning_content`; Anthropic: a
    signed thinking block, when the request enables thinking). `strict` refuses, as OpenAI does, an
    OpenAI chat request with a top-level field OpenAI does not take.
    """

    status: int = 200
    error_body: dict[str, Any] | None = None
    error_code: str | None = None
    retry_after: float | None = None
    delay: float = 0
    ttft: float = 0
    chunk_delay: float = 0
    text: str | None = None
    tool_call: bool = False
    usage: dict[str, int] | None = None
    cut_after: int | None = None
    end_after: int | None = None
    stall_after: int | None = None
    malformed_at: int | tuple[int, ...] | None = None
    no_done: bool = False
    error_in_200: int | None = None
    error_after: int = 0
    body_override: Any = None
    bad_usage: dict[str, Any] | None = None
    echo_headers: bool = False
    hang: bool = False
    reset: bool = False
    endless: bool = False
    model: str | None = None
    refuse_prefill: bool = False
    arguments: str | None = None
    thinking: str | None = None
    strict: bool = False

    def __post_init__(self) -> None:
        unknown = set(self.usage or {}) - wire.USAGE_KEYS
        if unknown:
            raise ValueError(f"unknown usage keys {sorted(unknown)}; use {sorted(wire.USAGE_KEYS)}")


class _Drop(Exception):
    """Raised inside a handler to end its request by dropping the connection."""

    def __init__(self, *, rst: bool) -> None:
        super().__init__("drop connection")
        self.rst = rst


def _drop(request: web.BaseRequest, *, rst: bool) -> None:
    transport = request.transport
    if transport is None:
        return
    if rst:  # linger 0 makes close send a TCP RST instead of a FIN
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()
    else:
        transport.close()


class FakeUpstream:
    """The fake provider. `url` is its base; OpenAI and Anthropic clients both use `url + "/v1"`.

    `max_recorded_bytes` keeps bodies larger than it out of `requests` (their `json` is None), so a
    test sending many large bodies does not hold them all.
    """

    def __init__(self, port: int = 0, *, max_recorded_bytes: int | None = None) -> None:
        self._wanted_port = port
        self._max_recorded = max_recorded_bytes
        self._port: int | None = None
        self._lock = threading.Lock()
        self._scripts: collections.deque[Script] = collections.deque()
        self._requests: list[dict[str, Any]] = []
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._ready = threading.Event()
        self._start_error: BaseException | None = None

    # --- sync API, called from the test's thread ---------------------------------------------

    @property
    def url(self) -> str:
        if self._port is None:
            raise RuntimeError("FakeUpstream is not running; call start() first")
        return f"http://127.0.0.1:{self._port}"

    @property
    def requests(self) -> list[dict[str, Any]]:
        """Recorded requests, oldest first: {"path", "headers" (lowercased names), "json", "streamed",
        "size" (body bytes), "at" (time.monotonic() of arrival)}."""
        with self._lock:
            return list(self._requests)

    def script(self, *scripts: Script) -> None:
        """Queue scripts; each incoming request takes the next one."""
        with self._lock:
            self._scripts.extend(scripts)

    def reset(self) -> None:
        with self._lock:
            self._scripts.clear()
            self._requests.clear()

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("FakeUpstream is already running")
        self._ready.clear()
        self._start_error = None
        self._thread = threading.Thread(target=self._run, name="fake-upstream", daemon=True)
        self._thread.start()
        if not self._ready.wait(_START_TIMEOUT):
            raise RuntimeError("FakeUpstream did not start listening in time")
        if self._start_error is not None or self._port is None:
            self._thread.join()
            self._thread = None
            raise RuntimeError(f"FakeUpstream could not start: {self._start_error}") from self._start_error

    def stop(self) -> None:
        thread, loop, stopping = self._thread, self._loop, self._stopping
        if thread is None:
            return
        if loop is not None and stopping is not None and not loop.is_closed():
            loop.call_soon_threadsafe(stopping.set)
        thread.join()
        self._thread = None
        self._port = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # --- the server, on its own loop ---------------------------------------------------------

    def _run(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        runner = web.AppRunner(
            self._app(),
            handler_cancellation=True,
            shutdown_timeout=_SHUTDOWN_TIMEOUT,
            access_log=None,
        )
        try:
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", self._wanted_port).start()
            self._port = int(runner.addresses[0][1])
        except OSError as exc:  # typically: the port is taken
            self._start_error = exc
            await runner.cleanup()
            return
        finally:
            self._ready.set()
        try:
            await self._stopping.wait()
        finally:
            await runner.cleanup()

    def _app(self) -> web.Application:
        app = web.Application(client_max_size=_MAX_BODY)
        app.router.add_post("/v1/chat/completions", self._handler("chat"))
        app.router.add_post("/v1/messages", self._handler("messages"))
        app.router.add_post("/v1/responses", self._handler("responses"))
        app.router.add_post("/v1/embeddings", self._handler("embeddings"))
        app.router.add_get("/v1/models", self._handler("models"))
        app.router.add_post("/v1/completions", self._handler("completions"))
        app.router.add_post("/v1/moderations", self._handler("moderations"))
        app.router.add_post("/v1/rerank", self._handler("rerank"))
        app.router.add_post("/v1/messages/count_tokens", self._handler("count_tokens"))
        self._cloud_routes(app)
        app.router.add_get("/health", self._health)
        return app

    async def _health(self, request: web.Request) -> web.Response:
        """A self-hosted server's health URL (vLLM, TGI): 200 once listening. Recorded; takes no script."""
        entry = {"path": request.path, "headers": {k.lower(): v for k, v in request.headers.items()}, "json": None}
        with self._lock:
            self._requests.append(entry | {"streamed": 0, "size": 0, "at": time.monotonic()})
        return web.Response(text="")

    def _handler(self, kind: Kind) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handle(request: web.Request) -> web.StreamResponse:
            try:
                return await self._answer(request, kind)
            except _Drop as drop:
                _drop(request, rst=drop.rst)
                return web.Response()  # never reaches the client: the connection is gone

        return handle

    async def _pause(self, seconds: float) -> None:
        """Sleep, or drop the request at once when the server stops meanwhile."""
        assert self._stopping is not None
        if seconds <= 0 and not self._stopping.is_set():
            return
        try:
            await asyncio.wait_for(self._stopping.wait(), seconds)
        except TimeoutError:
            return
        raise _Drop(rst=False)

    async def _record(self, request: web.Request) -> tuple[Any, Script, dict[str, Any]]:
        raw = await request.read()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        headers = {name.lower(): value for name, value in request.headers.items()}
        kept = body if self._max_recorded is None or len(raw) <= self._max_recorded else None
        entry = {"path": request.path, "query": dict(request.query), "headers": headers, "json": kept, "streamed": 0}
        entry |= {"size": len(raw), "at": time.monotonic()}
        with self._lock:
            self._requests.append(entry)
            script = self._scripts.popleft() if self._scripts else Script()
        return body, script, entry

    async def _answer(self, request: web.Request, kind: Kind) -> web.StreamResponse:
        body, script, entry = await self._record(request)
        if script.reset:
            raise _Drop(rst=True)
        if script.hang:  # until the client goes away (cancels this handler) or the server stops
            assert self._stopping is not None
            await self._stopping.wait()
            raise _Drop(rst=False)
        await self._pause(script.delay)
        headers = {"x-request-id" if kind != "messages" else "request-id": wire.new_id("req_")}
        if script.retry_after is not None:
            headers["retry-after"] = f"{script.retry_after:g}"
        if script.status != 200:
            return web.json_response(
                _error_body(kind, script, script.status, request), status=script.status, headers=headers
            )
        if kind == "models":
            return web.json_response(wire.models_list(), headers=headers)
        if not isinstance(body, dict):
            return _error(kind, headers)
        if kind == "embeddings":
            data = wire.embeddings(body, script.model)
            if data is None:
                return _error(kind, headers)
            return web.json_response(data, headers=headers)
        if kind in _SMALL:
            return await self._small(request, kind, body, headers)
        return await self._chat(request, kind, body, script, headers, entry)

    async def _small(
        self, request: web.Request, kind: Kind, body: dict[str, Any], headers: dict[str, str]
    ) -> web.StreamResponse:
        """Routes Keel passes through: completions (streamed too), moderations, rerank, count_tokens."""
        data = _SMALL[kind](body)
        if data is None:
            return _error("messages" if kind == "count_tokens" else kind, headers)
        if kind != "completions" or body.get("stream") is not True:
            return web.json_response(data, headers=headers)
        response = web.StreamResponse(headers=headers | {"content-type": "text/event-stream"})
        await response.prepare(request)
        for frame in wire.text_completion_frames(data):
            await response.write(frame)
        await response.write_eof()
        return response

    async def _chat(
        self,
        request: web.Request,
        kind: Kind,
        body: dict[str, Any],
        script: Script,
        headers: dict[str, str],
        entry: dict[str, Any],
    ) -> web.StreamResponse:
        if kind == "responses":
            return await self._responses(request, body, script, headers)
        anthropic = kind == "messages"
        prefill = wire.prefill(body, anthropic=anthropic)
        refusal = wire.prefill_refusal(body, prefill, anthropic=anthropic, refuse=script.refuse_prefill)
        unknown = sorted(set(body) - wire.OPENAI_CHAT_FIELDS) if script.strict and not anthropic else []
        if unknown:
            refusal = {"error": {"message": f"Unrecognized request argument supplied: {unknown[0]}"}}
            refusal["error"] |= {"type": "invalid_request_error", "param": None, "code": None}
        if refusal is not None:
            return web.json_response(refusal, status=400, headers=headers)
        answer = wire.plan(
            body,
            text=script.text,
            tool_call=script.tool_call,
            usage=script.usage,
            model=script.model,
            bad_usage=script.bad_usage,
            prefill=prefill,
            arguments=script.arguments,
            thinking=script.thinking,
            anthropic=anthropic,
        )
        lie = None if script.error_in_200 is None else _error_body(kind, script, script.error_in_200, request)
        if body.get("stream") is True:
            frames = wire.anthropic_frames(answer) if anthropic else wire.openai_frames(answer)
            if lie is not None:
                frames = wire.interrupted(frames, script.error_after, wire.error_frame(anthropic, lie))
            if script.endless:
                content = [f for f in frames if f.kind == "content"]
                return await self._endless(request, frames[0], content, headers, entry)
            return await self._stream(request, script, frames, headers)
        await self._pause(script.ttft)
        if isinstance(script.body_override, bytes):
            return web.Response(body=script.body_override, headers=headers, content_type="application/json")
        reply = wire.anthropic_message(answer) if anthropic else wire.openai_completion(answer)
        reply = lie or (reply if script.body_override is None else script.body_override)
        return web.json_response(reply, headers=headers)

    async def _responses(
        self, request: web.Request, body: dict[str, Any], script: Script, headers: dict[str, str]
    ) -> web.StreamResponse:
        """The Responses API (fake_responses): the same planner, the Responses shapes."""
        chat = fake_responses.as_chat(body)
        answer = wire.plan(
            chat,
            text=script.text,
            tool_call=script.tool_call,
            usage=script.usage,
            model=script.model,
            arguments=script.arguments,
            thinking=script.thinking,
        )
        if body.get("stream") is True:
            return await self._stream(request, script, fake_responses.frames(answer), headers)
        await self._pause(script.ttft)
        return web.json_response(fake_responses.response(answer), headers=headers)

    async def _stream(
        self,
        request: web.Request,
        script: Script,
        frames: list[wire.Frame],
        headers: dict[str, str],
        content_type: str = "text/event-stream",
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers=headers)
        response.content_type = content_type
        response.headers["cache-control"] = "no-cache"
        await response.prepare(request)
        sent = 0  # content chunks sent so far
        started = False
        for frame in frames:
            if frame.kind == "end" and script.no_done:
                continue
            if frame.kind != "head":
                await self._pause(script.chunk_delay if started else script.ttft)
                started = True
                cut = script.cut_after is not None and (sent >= script.cut_after or frame.kind != "content")
                if cut:
                    raise _Drop(rst=False)
                if script.end_after is not None and (sent >= script.end_after or frame.kind != "content"):
                    break
                if script.stall_after is not None and (sent >= script.stall_after or frame.kind != "content"):
                    assert self._stopping is not None
                    await self._stopping.wait()  # silent until the client leaves (cancels this) or the server stops
                    raise _Drop(rst=False)
            if frame.kind == "content":
                frame = frame.malformed() if _at(sent, script.malformed_at) else frame
                sent += 1
            await response.write(frame.encode())
        await response.write_eof()
        return response

    async def _endless(
        self,
        request: web.Request,
        head: wire.Frame,
        content: list[wire.Frame],
        headers: dict[str, str],
        entry: dict[str, Any],
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers=headers | {"content-type": "text/event-stream"})
        await response.prepare(request)
        await response.write(head.encode())
        chunks = [frame.encode() for frame in content]
        try:
            while entry["streamed"] < ENDLESS_BYTES:
                for chunk in chunks:
                    await response.write(chunk)
                    entry["streamed"] += len(chunk)
                await self._pause(0)
        except ConnectionError:
            raise _Drop(rst=False) from None
        raise _Drop(rst=False)

    # --- Gemini and Bedrock Converse (fake_cloud) ----------------------------------------------

    def _cloud_routes(self, app: web.Application) -> None:
        """Gemini `models/{model}:generateContent` / `:streamGenerateContent?alt=sse`, and Bedrock's
        `/model/{id}/converse` / `converse-stream` (event-stream framing; SigV4 or an API key required)."""
        app.router.add_post("/v1beta/models/{call}", self._cloud_handler("gemini"))
        app.router.add_post("/model/{model}/converse", self._cloud_handler("converse"))
        app.router.add_post("/model/{model}/converse-stream", self._cloud_handler("converse-stream"))

    def _cloud_handler(self, kind: str) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handle(request: web.Request) -> web.StreamResponse:
            try:
                return await self._cloud(request, kind)
            except _Drop as drop:
                _drop(request, rst=drop.rst)
                return web.Response()

        return handle

    async def _cloud(self, request: web.Request, kind: str) -> web.StreamResponse:
        body, script, entry = await self._record(request)
        if script.reset:
            raise _Drop(rst=True)
        if script.hang:
            assert self._stopping is not None
            await self._stopping.wait()
            raise _Drop(rst=False)
        await self._pause(script.delay)
        gemini = kind == "gemini"
        headers = {"x-request-id" if gemini else "x-amzn-requestid": wire.new_id("req_")}
        refusal = None if gemini else _aws_refusal(request.raw_path, entry["headers"], await request.read(), headers)
        if refusal is not None:
            return refusal
        if script.retry_after is not None:
            headers["retry-after"] = f"{script.retry_after:g}"
        if script.status != 200:
            return _cloud_error(gemini, script.status, script, headers)
        called = _cloud_call(request, kind)
        if called is None:
            return _cloud_error(gemini, 404, Script(), headers)
        model, stream = called
        if not isinstance(body, dict):
            return _cloud_error(gemini, 400, Script(), headers)
        if model.endswith(":embed"):
            return web.json_response(cloud.gemini_embeddings(body), headers=headers)
        chat = cloud.gemini_as_chat(body, model) if gemini else cloud.converse_as_chat(body, model)
        answer = wire.plan(
            chat, text=script.text, tool_call=script.tool_call, usage=script.usage, model=script.model,
            bad_usage=script.bad_usage,
        )  # fmt: skip
        lie = None if script.error_in_200 is None else _cloud_lie(gemini, script)
        if stream:
            frames = cloud.gemini_frames(answer) if gemini else cloud.converse_frames(answer)
            if lie is not None:
                frames = wire.interrupted(frames, script.error_after, lie)
            return await self._stream(
                request, script, frames, headers, "text/event-stream" if gemini else cloud.EVENTSTREAM
            )
        await self._pause(script.ttft)
        reply = cloud.gemini_response(answer) if gemini else cloud.converse_response(answer)
        if lie is not None and gemini:
            reply = json.loads(lie.data)
        return web.json_response(reply if script.body_override is None else script.body_override, headers=headers)


def _cloud_call(request: web.Request, kind: str) -> tuple[str, bool] | None:
    """The model and whether to stream, or None for a method Gemini does not have (or a stream
    asked for without `alt=sse`, which this fake does not speak)."""
    if kind != "gemini":
        return request.match_info["model"], kind == "converse-stream"
    model, _, method = request.match_info["call"].partition(":")
    stream = method == "streamGenerateContent"
    if method == "batchEmbedContents":
        return model + ":embed", False
    if method not in ("generateContent", "streamGenerateContent") or (stream and request.query.get("alt") != "sse"):
        return None
    return model, stream


def _aws_refusal(raw_path: str, headers: dict[str, str], body: bytes, reply: dict[str, str]) -> web.Response | None:
    """AWS's 403 for a request not signed with the fake's keys (nor bearing its Bedrock API key)."""
    why = cloud.check_aws_auth("POST", raw_path, headers, body, time.time())
    if why is None:
        return None
    name = "InvalidSignatureException" if "signature" in why.lower() else "UnrecognizedClientException"
    return web.json_response({"message": why}, status=403, headers=reply | {"x-amzn-errortype": name})


def _cloud_error(gemini: bool, status: int, script: Script, headers: dict[str, str]) -> web.Response:
    if gemini:
        return web.json_response(
            script.error_body or cloud.gemini_error(status, script.error_code), status=status, headers=headers
        )
    name, body = cloud.bedrock_error(status, script.error_code)
    return web.json_response(script.error_body or body, status=status, headers=headers | {"x-amzn-errortype": name})


def _cloud_lie(gemini: bool, script: Script) -> wire.Frame:
    """An error inside a stream (or a 200 body) that began well: Gemini's error object, or a Converse
    exception event."""
    assert script.error_in_200 is not None
    if gemini:
        return wire.Frame("tail", json.dumps(cloud.gemini_error(script.error_in_200, script.error_code)))
    name, body = cloud.bedrock_error(script.error_in_200, script.error_code)
    return cloud.exception_frame(name, body)


_SMALL: dict[str, Callable[[dict[str, Any]], dict[str, Any] | None]] = {
    "completions": wire.text_completion,
    "moderations": wire.moderation,
    "rerank": wire.rerank,
    "count_tokens": wire.count_tokens,
}


def _at(n: int, where: int | tuple[int, ...] | None) -> bool:
    return n == where if isinstance(where, int) else where is not None and n in where


def _error_body(kind: Kind, script: Script, status: int, request: web.Request) -> dict[str, Any]:
    make = wire.anthropic_error if kind == "messages" else wire.openai_error
    body: dict[str, Any] = json.loads(json.dumps(script.error_body or make(status, script.error_code)))
    if script.echo_headers:  # into the message, where a careless upstream quotes what it was sent
        quoted = "; ".join(f"{name}: {value}" for name, value in request.headers.items())
        error = body["error"] if isinstance(body.get("error"), dict) else body
        error["message"] = f"{error.get('message', '')} (request headers: {quoted})"
    return body


def _error(kind: Kind, headers: dict[str, str]) -> web.Response:
    make = wire.anthropic_error if kind == "messages" else wire.openai_error
    return web.json_response(make(400, None), status=400, headers=headers)
