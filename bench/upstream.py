"""A fast fake OpenAI upstream for the benchmark: a raw asyncio Protocol HTTP/1.1 server on uvloop.

POST /v1/chat/completions answers a canned chat.completion, or a canned SSE stream (chunked transfer
encoding) when the body asks for `"stream": true`. GET /stats returns how many chat requests it
answered. `--delay-ms` waits before each response; `--status 503` makes every chat request fail with that
status instead (a provider that is down but still answers). Keep-alive and pipelining are supported; parsing
is the minimum: request line, Content-Length, body. It never imports keel, so its cost is not the gateway's.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import time
from typing import cast

import uvloop

MODEL = "gpt-4o-mini"
PIECES = ("Hello", " from", " the", " bench", " upstream", ".")
USAGE = {"prompt_tokens": 12, "completion_tokens": len(PIECES), "total_tokens": 12 + len(PIECES)}


def _compact(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def _completion() -> bytes:
    message = {"role": "assistant", "content": "".join(PIECES), "refusal": None}
    return _compact(
        {
            "id": "chatcmpl-bench",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": MODEL,
            "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": "stop"}],
            "usage": USAGE,
            "system_fingerprint": "fp_bench",
        }
    )


def _event(obj: object) -> bytes:
    data = b"data: " + (obj if isinstance(obj, bytes) else _compact(obj)) + b"\n\n"
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


def _chunk(delta: dict[str, str], finish: str | None = None, usage: object = None) -> bytes:
    choices = [] if usage else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
    body = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": int(time.time()), "model": MODEL}
    return _event({**body, "choices": choices, "usage": usage})


def _stream_parts() -> tuple[bytes, bytes]:
    """The stream in two writes: head + role chunk + first content chunk, then the rest."""
    head = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
    first = head + _chunk({"role": "assistant", "content": ""}) + _chunk({"content": PIECES[0]})
    rest = b"".join(_chunk({"content": p}) for p in PIECES[1:])
    rest += _chunk({}, "stop") + _chunk({}, usage=USAGE) + _event(b"[DONE]") + b"0\r\n\r\n"
    return first, rest


def _json_response(body: bytes, status: str = "200 OK") -> bytes:
    head = f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n"
    return head.encode() + body


COMPLETION = _json_response(_completion())
STREAM_FIRST, STREAM_REST = _stream_parts()
NOT_FOUND = _json_response(b'{"error":{"message":"not found","type":"invalid_request_error"}}', "404 Not Found")


def _failure(status: int) -> bytes:
    body = {"error": {"message": f"the bench upstream is down ({status})", "type": "server_error", "code": None}}
    return _json_response(_compact(body), f"{status} Error")


class Upstream(asyncio.Protocol):
    answered = 0  # chat requests answered, across connections

    def __init__(self, delay_s: float, failure: bytes | None = None) -> None:
        self._delay = delay_s
        self._failure = failure
        self._buf = b""
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's

    def data_received(self, data: bytes) -> None:
        self._buf += data
        while True:
            end = self._buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self._buf[:end]
            length = _content_length(head)
            if len(self._buf) < end + 4 + length:
                return
            body = self._buf[end + 4 : end + 4 + length]
            self._buf = self._buf[end + 4 + length :]
            self._answer(head, body)

    def _answer(self, head: bytes, body: bytes) -> None:
        if head.startswith(b"GET /stats"):
            self._write(_json_response(_compact({"answered": Upstream.answered})))
            return
        if not head.startswith(b"POST /v1/chat/completions"):
            self._write(NOT_FOUND)
            return
        Upstream.answered += 1
        if self._failure is not None:
            self._write(self._failure)
            return
        stream = b'"stream":true' in body or b'"stream": true' in body
        if self._delay:
            self._loop.call_later(self._delay, self._reply, stream)
        else:
            self._reply(stream)

    def _reply(self, stream: bool) -> None:
        if not stream:
            self._write(COMPLETION)
            return
        self._write(STREAM_FIRST)
        self._loop.call_soon(self._write, STREAM_REST)

    def _write(self, data: bytes) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None


def _content_length(head: bytes) -> int:
    i = head.lower().find(b"\r\ncontent-length:")
    if i < 0:
        return 0
    j = head.find(b"\r\n", i + 2)
    return int(head[i + 17 : j if j >= 0 else len(head)])


async def serve(port: int, delay_ms: float, status: int = 200) -> None:
    loop = asyncio.get_running_loop()
    failure = _failure(status) if status != 200 else None
    server = await loop.create_server(lambda: Upstream(delay_ms / 1000, failure), "127.0.0.1", port, backlog=1024)
    print(f"upstream: listening on http://127.0.0.1:{port}/v1 (delay {delay_ms:g} ms, status {status})", flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description="fake OpenAI upstream for bench/")
    parser.add_argument("--port", type=int, default=9100)
    parser.add_argument("--delay-ms", type=float, default=0.0)
    parser.add_argument("--status", type=int, default=200, help="answer every chat request with this status")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        uvloop.run(serve(args.port, args.delay_ms, args.status))


if __name__ == "__main__":
    main()
