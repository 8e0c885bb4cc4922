"""A TCP proxy a test owns, to take a real service (PostgreSQL, Redis, an upstream) away and give it back.

Tests must never stop the shared services; they point Keel at this proxy instead and fail the
link: `refuse()` closes every open connection and refuses new ones (the service is down),
`blackhole()` accepts connections but forwards nothing, in either direction (a partition: callers
hit their timeouts), `restore()` forwards again. Like the fake upstream it runs its own event loop
in a daemon thread, so sync tests and gateways in other threads or processes can use it alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from types import TracebackType
from typing import Literal, Self
from urllib.parse import urlsplit, urlunsplit

Mode = Literal["forward", "refuse", "blackhole"]
_CHUNK = 65536


class TcpProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.mode: Mode = "forward"
        self.connections = 0  # accepted so far, in any mode
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="keel-test-proxy", daemon=True)
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._sock.getsockname()[1]
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @classmethod
    def in_front_of(cls, url: str) -> TcpProxy:
        """A proxy for the host:port of a service URL (postgresql://…, redis://…); see `url()`."""
        parts = urlsplit(url)
        assert parts.hostname is not None and parts.port is not None, url
        return cls(parts.hostname, parts.port)

    def url(self, original: str) -> str:
        """`original` with its host and port replaced by this proxy's."""
        parts = urlsplit(original)
        auth = parts.netloc.rpartition("@")[0]
        netloc = f"{auth}@127.0.0.1:{self.port}" if auth else f"127.0.0.1:{self.port}"
        return urlunsplit(parts._replace(netloc=netloc))

    def start(self) -> Self:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._listen(), self._loop).result(10)
        return self

    def stop(self) -> None:
        self._call(self._close_all(stop_listening=True))
        self._call(self._cancel_tasks())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    def refuse(self) -> None:
        """Down: open connections are reset, new ones refused (nothing listens on the port)."""
        self.mode = "refuse"
        self._call(self._close_all(stop_listening=True))

    def blackhole(self) -> None:
        """Partitioned: open connections go silent, new ones are accepted and then hang."""
        self.mode = "blackhole"

    def restore(self) -> None:
        """Back: new connections are forwarded; every connection open during a black hole is closed."""
        was, self.mode = self.mode, "forward"
        if was == "blackhole":
            self._call(self._close_all(stop_listening=False))
        self._call(self._listen())

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.stop()

    def _call(self, coro: object) -> None:
        asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)  # type: ignore[arg-type]

    async def _listen(self) -> None:
        if self._server is not None:
            return
        sock = self._sock if self._sock.fileno() != -1 else socket.create_server(("127.0.0.1", self.port))
        self._server = await asyncio.start_server(self._accept, sock=sock)

    async def _close_all(self, *, stop_listening: bool) -> None:
        if stop_listening and self._server is not None:
            self._server.close()
            self._sock.close()
            self._server = None
        for writer in list(self._writers):
            with contextlib.suppress(OSError):
                writer.transport.abort()
        self._writers.clear()

    async def _cancel_tasks(self) -> None:
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.add(writer)
        if self.mode != "forward":
            return  # held open, silent, until restore() or refuse() closes it
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._writers.add(up_writer)
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(_CHUNK):
                while self.mode == "blackhole":  # a partition: bytes stop flowing, the socket stays open
                    await asyncio.sleep(0.05)
                if writer.is_closing():
                    return
                writer.write(data)
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            with contextlib.suppress(OSError):
                writer.close()
            self._writers.discard(writer)
