"""HttpProvider: a codec plus the one connection pool of its upstream host. The only I/O.

Pools are shared per (scheme, host, port) through `Sessions`, so every provider row pointing at one
host reuses one set of keep-alive connections (keel.providers.client). Tests reach an https upstream
with a self-signed certificate through `Sessions(tls=...)`. Proxy variables (HTTPS_PROXY, ...) are
not used: upstream calls go direct, as they always have.
Every error leaves through `_own`, which redacts the upstream's text (`redact`): this is where
upstream words enter Keel, so API errors, stream error events, traces and logs all get it clean.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Callable
from urllib.parse import urlsplit

from keel.errors import ErrorKind, InvalidRequest, ProviderError
from keel.providers.client import Pool, Response
from keel.types import ChatEvent, ChatRequest, EmbeddingRequest, EmbeddingResponse, Target, Text, ToolCallDelta
from keel.wire.base import Codec, Outbound, Oversized, token_cap


class Sessions:
    """One connection pool per upstream (scheme, host, port), shared by every provider row."""

    def __init__(self, tls: ssl.SSLContext | None = None, idle_s: float = 15.0) -> None:
        self._tls = tls  # None: the system's trust store
        self._idle_s = idle_s
        self._by_host: dict[tuple[str, str, int], Pool] = {}

    def get(self, base_url: str) -> Pool:
        parts = urlsplit(base_url)
        host, https = parts.hostname or "", parts.scheme == "https"
        key = (parts.scheme, host, parts.port or (443 if https else 80))
        pool = self._by_host.get(key)
        if pool is None:
            if https and self._tls is None:
                self._tls = ssl.create_default_context()
            pool = self._by_host[key] = Pool(host, key[2], self._tls if https else None, self._idle_s)
        return pool

    async def aclose(self) -> None:
        for pool in self._by_host.values():
            pool.close()
        self._by_host.clear()


class HttpProvider:
    def __init__(
        self,
        name: str,
        codec: Codec,
        base_url: str,
        headers: dict[str, str],
        sessions: Sessions,
        *,
        region: str | None = None,
        connect_timeout: float = 5.0,
        timeout: float = 600.0,
        max_response_bytes: int = 32 * 2**20,
        max_stream_bytes: int = 16 * 2**20,
        overrun_tokens: int = 1024,
        redact: Callable[[str], str],
    ) -> None:
        self.name = name
        self._redact = redact  # credentials out of upstream text (keel.traces.redaction.Credentials)
        self.region = region
        self._codec = codec
        self._pool = sessions.get(base_url)
        parts = urlsplit(base_url.rstrip("/"))
        self._path = parts.path.encode()
        self._head = _head(parts.netloc.rpartition("@")[2], {"content-type": "application/json", **headers})
        self._connect_timeout = connect_timeout
        self._timeout = timeout
        self._max_body = max_response_bytes
        self._max_stream = max_stream_bytes
        self._overrun = overrun_tokens

    async def _send(self, out: Outbound) -> Response:
        deadline = asyncio.get_running_loop().time() + self._timeout
        size = str(len(out.body)).encode()
        own = "".join(f"\r\n{k}: {v}" for k, v in out.headers).encode()  # codecs admit no line breaks in them
        data = b"".join((b"POST ", self._path, out.path.encode(), self._head, size, own, b"\r\n\r\n", out.body))
        try:
            resp = await self._pool.send(data, deadline, self._connect_timeout)
            try:
                await resp.head()
            except BaseException:
                resp.release()
                raise
        except ProviderError as err:
            raise self._own(err) from None
        if resp.status >= 400:
            raise self._rejected(resp.status, await self._read(resp), resp.headers)
        return resp

    def _rejected(self, status: int, body: bytes, headers: dict[str, str]) -> ProviderError:
        err = self._codec.classify(status, body, headers)
        if err.error_kind is ErrorKind.auth:  # the upstream's text may echo part of our key
            err.message = (
                f"The upstream '{self.name}' rejected Keel's credentials; check providers.{self.name}.api_key."
            )
        return self._own(err)

    def _own(self, err: ProviderError) -> ProviderError:
        """`err` as this provider's, with the upstream's words redacted."""
        err.provider = self.name
        err.message = self._redact(err.message)
        err.args = (err.message,)
        if err.param:
            err.param = self._redact(err.param)
        return err

    async def _read(self, resp: Response) -> bytes:
        try:
            return await resp.read(self._max_body)
        except ProviderError as err:
            raise self._own(err) from None
        finally:
            resp.release()

    async def chat(self, request: ChatRequest, target: Target) -> AsyncIterator[ChatEvent]:
        try:
            out = self._codec.encode_chat(request, target, request.stream)
        except InvalidRequest as exc:  # this wire format cannot carry the request: another target may
            raise ProviderError(ErrorKind.bad_request, exc.message, provider=self.name, param=exc.param) from None
        resp = await self._send(out)
        notes = out.notes
        del out  # the encoded body is sent: a stream need not hold a second copy of the request
        cap = token_cap(target)
        try:
            for note in notes:
                yield note
            if not request.stream:
                for event in self._codec.decode_chat(await self._read(resp), cap):
                    yield event
                return
            decoder = self._codec.stream_decoder(cap)
            meter = _Meter(request, self._overrun)
            async for data in _sse_data(resp, self._max_stream):
                for event in decoder.feed(data):
                    meter.see(event)
                    yield event
            for event in decoder.close():  # the body ended: complete only if the answer finished
                yield event
        except ProviderError as err:
            raise self._own(err) from None
        finally:
            resp.release()

    async def embed(self, request: EmbeddingRequest, target: Target) -> EmbeddingResponse:
        resp = await self._send(self._codec.encode_embed(request, target))
        try:
            return self._codec.decode_embed(await self._read(resp))
        except ProviderError as err:
            raise self._own(err) from None

    async def aclose(self) -> None:
        return None  # pools are owned by `Sessions`


def _head(host: str, headers: dict[str, str]) -> bytes:
    """The request head after the path, up to the content-length value: built once per provider."""
    lines = [f"host: {host}", "accept-encoding: identity", *(f"{k}: {v}" for k, v in headers.items())]
    bad = [line.partition(":")[0] for line in lines if any(c in line for c in "\r\n\0")]
    if bad:  # a value that could end the header early and inject another
        raise ValueError(f"header {bad[0]!r} holds a line break or NUL")
    return (" HTTP/1.1\r\n" + "\r\n".join(lines) + "\r\ncontent-length: ").encode()


async def _sse_data(resp: Response, limit: int) -> AsyncIterator[bytes]:
    """Yield the `data` payload of each server-sent event (multi-line data joined by newlines).

    More than `limit` body bytes is a protocol error: an endless stream must not fill memory.
    """
    parts: list[bytes] = []
    buf = bytearray()
    async for chunk in resp.chunks():
        if resp.received > limit:
            raise Oversized(f"upstream stream exceeds {limit} bytes")
        scan = len(buf)  # bytes before it hold no line break: never search them twice
        buf += chunk
        start = 0
        while (end := buf.find(b"\n", scan)) >= 0:
            line = bytes(buf[start:end]).rstrip(b"\r")
            start = scan = end + 1
            if not line:
                if parts:
                    yield b"\n".join(parts)
                    parts = []
            elif line.startswith(b"data:"):
                parts.append(line[5:].lstrip(b" "))
        del buf[:start]
    if buf.startswith(b"data:"):
        parts.append(bytes(buf).rstrip(b"\r")[5:].lstrip(b" "))
    if parts:
        yield b"\n".join(parts)


class _Meter:
    """Cuts a stream that runs far past the request's `max_tokens`, counted as it streams.

    The estimate is the smaller of content chunks and characters / 4: each chunk carries at least one
    token and ordinary text at most ~4 characters per token, so it stays under the true count.
    """

    __slots__ = ("_chars", "_chunks", "_limit")

    def __init__(self, request: ChatRequest, overrun: int) -> None:
        cap = request.max_tokens or request.extra.get("max_completion_tokens")
        self._limit = cap + overrun if isinstance(cap, int) and cap > 0 else None
        self._chunks = 0
        self._chars = 0

    def see(self, event: ChatEvent) -> None:
        if self._limit is None:
            return
        if isinstance(event, Text):
            self._chars += len(event.text)
        elif isinstance(event, ToolCallDelta):
            self._chars += len(event.arguments)
        else:
            return
        self._chunks += 1
        if min(self._chunks, self._chars // 4) > self._limit:
            raise Oversized(f"upstream stream went past {self._limit} tokens (max_tokens plus the allowed overrun)")
