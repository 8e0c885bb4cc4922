"""HttpProvider: a codec plus the one pooled aiohttp session of its upstream host. The only I/O.

Sessions are shared per (scheme, host, port) through `Sessions`, so every provider row pointing at
one host reuses one connection pool. Tests inject a connector through `Sessions(connector_factory)`.
Every error leaves through `_own`, which redacts the upstream's text (`redact`): this is where
upstream words enter Keel, so API errors, stream error events, traces and logs all get it clean.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from urllib.parse import urlsplit

import aiohttp

from keel.errors import ErrorKind, InvalidRequest, ProviderError
from keel.providers.base import Codec, Outbound, token_cap
from keel.types import ChatEvent, ChatRequest, EmbeddingRequest, EmbeddingResponse, Target


class Sessions:
    """One aiohttp ClientSession per upstream host, created lazily inside the running loop."""

    def __init__(self, connector_factory: Callable[[], aiohttp.BaseConnector] | None = None) -> None:
        self._factory = connector_factory or (lambda: aiohttp.TCPConnector(limit=0, ttl_dns_cache=300))
        self._by_host: dict[str, aiohttp.ClientSession] = {}

    def get(self, base_url: str) -> aiohttp.ClientSession:
        parts = urlsplit(base_url)
        host = f"{parts.scheme}://{parts.netloc}"
        session = self._by_host.get(host)
        if session is None or session.closed:
            session = aiohttp.ClientSession(
                connector=self._factory(),
                cookie_jar=aiohttp.DummyCookieJar(),  # upstream APIs need no cookies; a jar costs on every call
                skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding"),
            )
            self._by_host[host] = session
        return session

    async def aclose(self) -> None:
        for session in self._by_host.values():
            await session.close()
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
        redact: Callable[[str], str],
    ) -> None:
        self.name = name
        self._redact = redact  # credentials out of upstream text (keel.redaction.Credentials)
        self.region = region
        self._codec = codec
        self._base = base_url.rstrip("/")
        self._headers = {"content-type": "application/json", **headers}
        self._sessions = sessions
        self._timeout = aiohttp.ClientTimeout(total=timeout, sock_connect=connect_timeout)

    async def _send(self, out: Outbound) -> aiohttp.ClientResponse:
        session = self._sessions.get(self._base)
        try:
            resp = await session.post(
                self._base + out.path, data=out.body, headers=self._headers, timeout=self._timeout
            )
        except TimeoutError:
            raise self._error(ErrorKind.timeout, "upstream did not answer in time") from None
        except aiohttp.ClientError as exc:
            raise self._error(ErrorKind.network, f"cannot reach upstream: {type(exc).__name__}") from None
        if resp.status >= 400:
            body = await self._read(resp)
            err = self._codec.classify(resp.status, body, resp.headers)
            if err.error_kind is ErrorKind.auth:  # the upstream's text may echo part of our key
                err.message = (
                    f"The upstream '{self.name}' rejected Keel's credentials; check providers.{self.name}.api_key."
                )
            raise self._own(err)
        return resp

    def _own(self, err: ProviderError) -> ProviderError:
        """`err` as this provider's, with the upstream's words redacted."""
        err.provider = self.name
        err.message = self._redact(err.message)
        err.args = (err.message,)
        if err.param:
            err.param = self._redact(err.param)
        return err

    async def _read(self, resp: aiohttp.ClientResponse) -> bytes:
        try:
            return await resp.read()
        except TimeoutError:
            raise self._error(ErrorKind.timeout, "upstream stopped sending") from None
        except aiohttp.ClientError as exc:
            raise self._error(ErrorKind.network, f"upstream connection broke: {type(exc).__name__}") from None
        finally:
            resp.release()

    def _error(self, kind: ErrorKind, message: str) -> ProviderError:
        return ProviderError(kind, message, provider=self.name)

    async def chat(self, request: ChatRequest, target: Target) -> AsyncIterator[ChatEvent]:
        try:
            out = self._codec.encode_chat(request, target, request.stream)
        except InvalidRequest as exc:  # this wire format cannot carry the request: another target may
            raise ProviderError(ErrorKind.bad_request, exc.message, provider=self.name, param=exc.param) from None
        resp = await self._send(out)
        cap = token_cap(target)
        try:
            if not request.stream:
                for event in self._codec.decode_chat(await self._read(resp), cap):
                    yield event
                return
            decoder = self._codec.stream_decoder(cap)
            async for data in _sse_data(resp):
                for event in decoder.feed(data):
                    yield event
            for event in decoder.close():  # the body ended: complete only if the answer finished
                yield event
        except ProviderError as err:
            raise self._own(err) from None
        except TimeoutError:
            raise self._error(ErrorKind.timeout, "upstream stream timed out") from None
        except aiohttp.ClientError as exc:
            raise self._error(ErrorKind.network, f"upstream stream broke: {type(exc).__name__}") from None
        finally:
            resp.release()

    async def embed(self, request: EmbeddingRequest, target: Target) -> EmbeddingResponse:
        resp = await self._send(self._codec.encode_embed(request, target))
        try:
            return self._codec.decode_embed(await self._read(resp))
        except ProviderError as err:
            raise self._own(err) from None

    async def aclose(self) -> None:
        return None  # sessions are owned by `Sessions`


async def _sse_data(resp: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
    """Yield the `data` payload of each server-sent event (multi-line data joined by newlines)."""
    parts: list[bytes] = []
    async for raw in resp.content:
        line = raw.rstrip(b"\r\n")
        if not line:
            if parts:
                yield b"\n".join(parts)
                parts = []
        elif line.startswith(b"data:"):
            parts.append(line[5:].lstrip(b" "))
    if parts:
        yield b"\n".join(parts)
