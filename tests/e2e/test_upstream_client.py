"""The upstream HTTP/1.1 client (keel.providers.client via HttpProvider's Sessions) over real sockets.

Each test runs a small raw server on 127.0.0.1 that answers exactly as the test scripts it (bodies
with a length, chunked or ended by close; a server that closes idle connections, stalls, or speaks
TLS with a self-signed certificate), so the client's edges are exercised byte for byte.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import socket
import ssl
import struct
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import uvloop
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from keel.errors import ErrorKind, ProviderError
from keel.providers.client import Pool, Response
from keel.providers.http import Sessions

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
OK_BODY = b'{"ok":true}'


def answer(body: bytes = OK_BODY, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n%s\r\n%s" % (len(body), extra, body)


async def read_request(reader: asyncio.StreamReader) -> bytes:
    """One request: head, then as many body bytes as its content-length says."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(int(v) for k, _, v in (ln.partition(b":") for ln in head.split(b"\r\n")) if k == b"content-length")
    return head + await reader.readexactly(length)


class Server:
    """A raw TCP (optionally TLS) server running `handler` per connection; counts what it saw.

    Without a handler it keeps each connection alive and answers every request on it with `reply`.
    """

    def __init__(
        self, handler: Handler | None = None, *, reply: bytes = b"", tls: ssl.SSLContext | None = None
    ) -> None:
        self.handler = handler or self._serve
        self.reply = reply
        self.tls = tls
        self.connections = 0
        self.requests: list[bytes] = []
        self.port = 0
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> Server:
        async def run(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.connections += 1
            try:
                await self.handler(reader, writer)
            except (ConnectionError, asyncio.IncompleteReadError):
                pass
            finally:
                writer.close()

        self._server = await asyncio.start_server(run, "127.0.0.1", 0, ssl=self.tls)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()

    def url(self, scheme: str = "http") -> str:
        return f"{scheme}://127.0.0.1:{self.port}/v1"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            self.requests.append(await read_request(reader))
            writer.write(self.reply)
            await writer.drain()


async def post(pool: Pool, body: bytes = b"{}", timeout: float = 10.0) -> Response:
    request = b"POST /v1/x HTTP/1.1\r\nhost: t\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)
    deadline = asyncio.get_running_loop().time() + timeout
    response = await pool.send(request, deadline, connect_timeout=5.0)
    await response.head()
    return response


async def until(condition: Callable[[], bool]) -> None:
    while not condition():
        await asyncio.sleep(0.001)


def run(test: Awaitable[None], loop: str = "asyncio") -> None:
    """Run on asyncio's own loop, or on uvloop (what `keel serve` runs) where transports differ."""
    factory = uvloop.new_event_loop if loop == "uvloop" else asyncio.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(asyncio.wait_for(test, 30))


LOOPS = pytest.mark.parametrize("loop", ["asyncio", "uvloop"])


# ---- bodies -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "wire",
    [
        answer(b"hello world"),
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
    ],
    ids=["content-length", "chunked"],
)
def test_a_body_with_a_length_or_chunked_is_read_whole_and_the_connection_reused(wire: bytes) -> None:
    async def main() -> None:
        async with Server(reply=wire) as server:
            pool = Sessions().get(server.url())
            for _ in range(3):
                response = await post(pool)
                assert (response.status, await response.read(1000)) == (200, b"hello world")
            assert (server.connections, len(server.requests)) == (1, 3)
            pool.close()

    run(main())


def test_an_interim_answer_is_skipped_for_the_final_one() -> None:
    early = b"HTTP/1.1 103 Early Hints\r\nlink: </x>\r\n\r\n"

    async def main() -> None:
        async with Server(reply=early + answer(b"final", b"x-final: yes\r\n")) as server:
            pool = Sessions().get(server.url())
            for _ in range(2):
                response = await post(pool)
                assert (response.status, await response.read(100)) == (200, b"final")
                assert "link" not in response.headers and response.headers["x-final"] == "yes"
            assert server.connections == 1

    run(main())


def test_a_body_ended_by_close_is_read_whole_and_the_connection_not_reused() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        server.requests.append(await read_request(reader))
        writer.write(b"HTTP/1.1 200 OK\r\n\r\nuntil the end")
        await writer.drain()

    server = Server(handler)

    async def main() -> None:
        async with server:
            pool = Sessions().get(server.url())
            for _ in range(2):
                assert await (await post(pool)).read(1000) == b"until the end"
            assert server.connections == 2

    run(main())


def test_a_chunked_body_over_the_limit_is_a_protocol_error_and_closes_the_connection() -> None:
    chunk = b"%x\r\n%s\r\n" % (4096, b"a" * 4096)

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        while True:  # endless: only the client's limit ends it
            writer.write(chunk)
            await writer.drain()

    async def main() -> None:
        async with Server(handler) as server:
            response = await post(Sessions().get(server.url()))
            with pytest.raises(ProviderError) as caught:
                await response.read(100_000)
            assert caught.value.error_kind is ErrorKind.protocol
            assert "exceeds 100000 bytes" in caught.value.message

    run(main())


def test_a_declared_length_over_the_limit_fails_before_the_body_is_read() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 999999999\r\n\r\nabc")
        await writer.drain()
        await reader.read()  # until the client hangs up

    async def main() -> None:
        async with Server(handler) as server:
            response = await post(Sessions().get(server.url()))
            with pytest.raises(ProviderError, match="exceeds 1000 bytes"):
                await response.read(1000)

    run(main())


def test_malformed_http_is_a_protocol_error() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: nope\r\n\r\n")
        await writer.drain()
        await reader.read()

    async def main() -> None:
        async with Server(handler) as server:
            with pytest.raises(ProviderError) as caught:
                await post(Sessions().get(server.url()))
            assert caught.value.error_kind is ErrorKind.protocol

    run(main())


# ---- streaming and backpressure -------------------------------------------------------------------


@LOOPS
def test_a_slow_consumer_pauses_reading_and_then_gets_every_byte(loop: str) -> None:
    size = 8 * 2**20
    drained = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(answer(b"b" * size))
        await writer.drain()  # completes only once the client has taken nearly all of it
        drained.set()
        await reader.read()

    async def main() -> None:
        async with Server(handler) as server:
            response = await post(Sessions().get(server.url()))
            chunks = response.chunks()
            got = len(await anext(chunks))
            await until(lambda: response.received > 256 * 1024)  # the client's buffer filled up...
            for _ in range(200):  # ...and reading stopped there: the server cannot drain
                await asyncio.sleep(0)
            assert response.received < 2**20 and not drained.is_set()
            async for chunk in chunks:
                got += len(chunk)
            assert got == size
            await drained.wait()

    run(main(), loop)


def test_releasing_an_unfinished_response_closes_its_connection() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        server.requests.append(await read_request(reader))
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n")
        await writer.drain()
        await reader.read()  # the rest never comes; the client must not reuse this connection

    server = Server(handler)

    async def main() -> None:
        async with server:
            pool = Sessions().get(server.url())
            first = await post(pool)
            assert await anext(first.chunks()) == b"hello"
            first.release()
            second = await post(pool)
            second.release()
            assert server.connections == 2

    run(main())


# ---- timeouts -------------------------------------------------------------------------------------


def test_a_server_that_stalls_mid_body_hits_the_total_timeout() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly part")
        await writer.drain()
        await reader.read()

    async def main() -> None:
        async with Server(handler) as server:
            response = await post(Sessions().get(server.url()), timeout=0.3)
            with pytest.raises(ProviderError) as caught:
                await response.read(1000)
            assert caught.value.error_kind is ErrorKind.timeout

    run(main())


def test_a_listener_that_never_accepts_hits_the_connect_timeout() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    queued = []  # fill the accept queue: Linux then drops further SYNs, so connecting hangs
    for _ in range(8):
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", port))
        queued.append(s)

    async def main() -> None:
        pool = Sessions().get(f"http://127.0.0.1:{port}/v1")
        deadline = asyncio.get_running_loop().time() + 10
        with pytest.raises(ProviderError) as caught:
            await pool.send(b"POST / HTTP/1.1\r\n\r\n", deadline, connect_timeout=0.3)
        assert caught.value.error_kind is ErrorKind.timeout
        assert "connect" in caught.value.message

    try:
        run(main())
    finally:
        for s in [*queued, listener]:
            s.close()


def test_a_refused_connection_is_a_network_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: refused

        async def main() -> None:
            with pytest.raises(ProviderError) as caught:
                await post(Sessions().get(f"http://127.0.0.1:{port}/v1"))
            assert caught.value.error_kind is ErrorKind.network

        run(main())


# ---- connections the server closes ---------------------------------------------------------------


def test_a_connection_the_server_closed_while_idle_is_not_used_again() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        server.requests.append(await read_request(reader))
        writer.write(answer())  # says nothing of closing, then closes: an idle timeout
        await writer.drain()

    server = Server(handler)

    async def main() -> None:
        async with server:
            pool = Sessions().get(server.url())
            assert await (await post(pool)).read(100) == OK_BODY
            await until(lambda: pool.idle == 0)  # the close was seen: the pool let the connection go
            assert await (await post(pool)).read(100) == OK_BODY
            assert (server.connections, len(server.requests)) == (2, 2)

    run(main())


@LOOPS
def test_a_request_written_onto_a_connection_reset_while_idle_goes_on_a_new_one(loop: str) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    reset_now, was_reset = threading.Event(), threading.Event()
    seen: list[bytes] = []

    def serve_one(conn: socket.socket) -> None:
        seen.append(conn.recv(65536))  # the small request arrives whole
        conn.sendall(answer())

    def server() -> None:  # a thread: it resets the connection while the client's loop is not looking
        first, _ = listener.accept()
        serve_one(first)
        reset_now.wait(10)
        first.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        first.close()  # linger 0: an RST, not a FIN
        was_reset.set()
        second, _ = listener.accept()
        serve_one(second)
        second.recv(1)  # until the client hangs up
        second.close()

    async def main() -> None:
        pool = Sessions().get(f"http://127.0.0.1:{port}/v1")
        assert await (await post(pool)).read(100) == OK_BODY
        reset_now.set()
        assert was_reset.wait(10)  # blocks the loop on purpose: the pool must not have seen the reset
        assert pool.idle == 1
        assert await (await post(pool)).read(100) == OK_BODY  # the write failed at once: sent anew
        assert len(seen) == 2
        pool.close()

    thread = threading.Thread(target=server, daemon=True)
    thread.start()
    try:
        run(main(), loop)
    finally:
        thread.join(10)
        listener.close()


def test_a_reused_connection_closed_without_an_answer_is_an_error_never_a_silent_retry() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        server.requests.append(await read_request(reader))
        writer.write(answer())
        await writer.drain()
        server.requests.append(await read_request(reader))  # read the second request, then hang up

    server = Server(handler)

    async def main() -> None:
        async with server:
            pool = Sessions().get(server.url())
            assert await (await post(pool)).read(100) == OK_BODY
            with pytest.raises(ProviderError) as caught:
                await post(pool)
            assert caught.value.error_kind is ErrorKind.network
            assert len(server.requests) == 2  # the server may have acted on it: sent once, not twice

    run(main())


def test_connections_idle_past_the_pool_idle_time_are_replaced() -> None:
    async def main() -> None:
        async with Server(reply=answer()) as server:
            pool = Sessions(idle_s=0.05).get(server.url())
            await (await post(pool)).read(100)
            await asyncio.sleep(0.1)  # past idle_s: the next call must not trust this connection
            await (await post(pool)).read(100)
            assert server.connections == 2

    run(main())


# ---- TLS ------------------------------------------------------------------------------------------


def self_signed(tmp: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(server context, client context trusting only that server's certificate) for 127.0.0.1."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    (tmp / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp / "key.pem").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(tmp / "cert.pem", tmp / "key.pem")
    client = ssl.create_default_context(cafile=tmp / "cert.pem")
    return server, client


def test_https_upstream_with_a_trusted_certificate(tmp_path: Path) -> None:
    server_tls, client_tls = self_signed(tmp_path)

    async def main() -> None:
        async with Server(reply=answer(), tls=server_tls) as server:
            pool = Sessions(tls=client_tls).get(server.url("https"))
            for _ in range(2):
                assert await (await post(pool)).read(100) == OK_BODY
            assert server.connections == 1  # kept alive across calls, TLS included
            pool.close()

    run(main())


def test_https_upstream_with_an_untrusted_certificate_is_refused(tmp_path: Path) -> None:
    server_tls, _ = self_signed(tmp_path)

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()

    async def main() -> None:
        async with Server(handler, tls=server_tls) as server:
            with pytest.raises(ProviderError) as caught:
                await post(Sessions().get(server.url("https")))  # the system's trust store: not this cert
            assert caught.value.error_kind is ErrorKind.network
            assert "SSLCertVerificationError" in caught.value.message

    run(main())
