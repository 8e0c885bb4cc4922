"""A lean pooled HTTP/1.1 client for upstream calls: asyncio Protocols and httptools' response parser.

Why not aiohttp: its client was the largest single cost of the gateway's request path (decision
0011-upstream-client). One `Pool` per (scheme, host, port) keeps idle keep-alive connections, most
recently used first. A `Connection` carries one exchange at a time; its `Response` is read whole
(`read`) or as body chunks (`chunks`), and reading from the socket pauses while more than
`_HIGH_WATER` bytes wait for the consumer. Every failure is a `ProviderError` without a provider name
(the caller adds it): network, timeout, or protocol (a malformed or oversized answer).

Invariants: a connection goes back to the pool only after a complete response that allows keep-alive;
an error, a timeout or a response released unfinished closes it. A request is written only to a
connection not seen closed, and is moved to another connection only when its write failed at once
(nothing was sent); a connection that closes after the write, before any response byte, is an
error, never retried here (the server may have read the request: failover decides).
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import AsyncIterator
from typing import cast

import httptools

from keel.errors import ErrorKind, ProviderError

_HIGH_WATER = 256 * 1024  # body bytes buffered before reading from the socket pauses
_LOW_WATER = 64 * 1024


class Response:
    """One HTTP response as it arrives: status and headers first, then body chunks."""

    __slots__ = ("_buffered", "_chunks", "_conn", "_done", "_error", "_waiter", "headers", "received", "status")

    def __init__(self, conn: Connection) -> None:
        self.status = 0
        self.headers: dict[str, str] = {}  # lower-case names; a repeated header keeps its last value
        self.received = 0  # body bytes so far
        self._conn: Connection | None = conn
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._done = False
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None

    async def head(self) -> None:
        """Wait until the status line and headers are in."""
        while not self.status:
            await self._wait()

    async def read(self, limit: int) -> bytes:
        """The whole body; more than `limit` bytes is a protocol error (and closes the connection)."""
        declared = self.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            self.release()
            raise _too_large(limit)
        while not self._done:
            if self.received > limit:
                self.release()
                raise _too_large(limit)
            await self._wait()
        if self.received > limit:
            raise _too_large(limit)
        body = b"".join(self._chunks)
        self._chunks.clear()
        return body

    async def chunks(self) -> AsyncIterator[bytes]:
        """Body chunks as they arrive, the socket paused while the consumer is behind."""
        while True:
            while self._chunks:
                chunk = self._chunks.popleft()
                self._buffered -= len(chunk)
                if self._buffered < _LOW_WATER and self._conn is not None:
                    self._conn.resume()
                yield chunk
            if self._done:
                return
            await self._wait()

    def release(self) -> None:
        """Done with this response: an unfinished one closes its connection."""
        self._error = None  # raised, it holds the frames that hold this response: a cycle keeping the request
        conn, self._conn = self._conn, None
        if conn is not None and not self._done:
            conn.abort()

    async def _wait(self) -> None:
        if self._error is not None:
            raise self._error
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None
        if self._error is not None:
            raise self._error

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _feed(self, chunk: bytes) -> None:
        self._chunks.append(chunk)
        self.received += len(chunk)
        self._buffered += len(chunk)
        if self._buffered > _HIGH_WATER and self._conn is not None:
            self._conn.pause()
        self._wake()

    def _finish(self) -> None:
        self._done = True
        self._conn = None
        self._wake()

    def _fail(self, error: BaseException) -> None:
        if not self._done and self._error is None:
            self._error = error
            self._wake()


def _too_large(limit: int) -> ProviderError:
    return ProviderError(ErrorKind.protocol, f"upstream response body exceeds {limit} bytes")


class Connection(asyncio.Protocol):
    """One keep-alive connection; the parser's callbacks fill the response in flight."""

    def __init__(self, pool: Pool) -> None:
        self._pool = pool
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._response: Response | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._paused = False
        self._interim = False
        self.closed = False
        self.idle_since = 0.0

    # -- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass it

    def data_received(self, data: bytes) -> None:
        if self._response is None:  # bytes nobody asked for: the connection's state is unknown
            self.abort()
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._end(ProviderError(ErrorKind.protocol, f"upstream sent malformed HTTP: {exc}"))

    def eof_received(self) -> bool:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._pool.forget(self)
        response = self._response
        if response is not None and response.status and _delimited_by_close(response.headers):
            self.on_message_complete()
            return
        self._end(ProviderError(ErrorKind.network, "upstream closed the connection before the response ended"))

    # -- httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        if self._response is not None:
            self._response.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if status < 200:  # an interim answer (100 Continue, 103 Early Hints): the real one follows
            self._interim = True
            if self._response is not None:
                self._response.headers.clear()
        elif self._response is not None:
            self._response.status = status
            self._response._wake()

    def on_body(self, body: bytes) -> None:
        if self._response is not None:
            self._response._feed(body)

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            return
        response, self._response = self._response, None
        if response is None:
            return
        self._cancel_timer()
        keep = not self.closed and self._parser.should_keep_alive()
        response._finish()
        if keep:
            self.resume()
            self._pool.put(self)
        else:
            self.abort()

    # -- used by Pool and Response
    def send(self, data: bytes, deadline: float) -> Response:
        assert self._transport is not None
        response = self._response = Response(self)
        self._timer = asyncio.get_running_loop().call_at(deadline, self._expire)
        self._transport.write(data)
        return response

    def writable(self) -> bool:
        return not self.closed and self._transport is not None and not self._transport.is_closing()

    def pause(self) -> None:
        if not self._paused and self._transport is not None:
            self._paused = True
            self._transport.pause_reading()

    def resume(self) -> None:
        if self._paused and self._transport is not None and not self._transport.is_closing():
            self._paused = False
            self._transport.resume_reading()

    def abort(self) -> None:
        self._cancel_timer()
        self.closed = True
        self._response = None
        self._pool.forget(self)
        if self._transport is not None:
            self._transport.abort()

    def _expire(self) -> None:
        self._timer = None
        self._end(ProviderError(ErrorKind.timeout, "upstream did not finish in time"))

    def _end(self, error: ProviderError) -> None:
        response = self._response
        self.abort()
        if response is not None:
            response._fail(error)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


def _delimited_by_close(headers: dict[str, str]) -> bool:
    """A body with neither a length nor chunking ends when the server closes (RFC 9112 §6.3)."""
    return "content-length" not in headers and "chunked" not in headers.get("transfer-encoding", "")


class Pool:
    """Keep-alive connections to one (scheme, host, port), most recently used first."""

    def __init__(self, host: str, port: int, tls: ssl.SSLContext | None, idle_s: float) -> None:
        self._host = host
        self._port = port
        self._tls = tls
        self._idle_s = idle_s
        self._idle: list[Connection] = []
        self._all: set[Connection] = set()

    async def send(self, data: bytes, deadline: float, connect_timeout: float) -> Response:
        """Write one request (head and body, already encoded) and return its response.

        A reused connection whose write fails at once (the server reset it while idle, and the loop
        had not seen it yet) sent nothing: the request goes on another connection instead.
        """
        while (conn := self._take()) is not None:
            response = conn.send(data, deadline)
            if conn.writable():
                return response
            conn.abort()
        conn = await self._open(deadline, connect_timeout)
        return conn.send(data, deadline)

    @property
    def idle(self) -> int:
        """Connections waiting for a request."""
        return len(self._idle)

    def put(self, conn: Connection) -> None:
        conn.idle_since = asyncio.get_running_loop().time()
        self._idle.append(conn)

    def forget(self, conn: Connection) -> None:
        self._all.discard(conn)
        if conn in self._idle:
            self._idle.remove(conn)

    def close(self) -> None:
        for conn in list(self._all):
            conn.abort()

    def _take(self) -> Connection | None:
        fresh_after = asyncio.get_running_loop().time() - self._idle_s
        while self._idle:
            conn = self._idle.pop()
            if conn.writable() and conn.idle_since >= fresh_after:
                return conn
            conn.abort()  # closed by the server, or idle long enough that it may be about to be
        return None

    async def _open(self, deadline: float, connect_timeout: float) -> Connection:
        loop = asyncio.get_running_loop()
        budget = min(connect_timeout, deadline - loop.time())
        try:
            async with asyncio.timeout(budget):
                _, conn = await loop.create_connection(
                    lambda: Connection(self),
                    self._host,
                    self._port,
                    ssl=self._tls,
                    server_hostname=self._host if self._tls is not None else None,
                )
        except TimeoutError:
            raise ProviderError(ErrorKind.timeout, "cannot connect to upstream in time") from None
        except (OSError, ssl.SSLError) as exc:
            raise ProviderError(ErrorKind.network, f"cannot reach upstream: {type(exc).__name__}") from None
        self._all.add(conn)
        return conn
