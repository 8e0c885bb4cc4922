"""The sandbox's way out, when a tool asks for one: an allow-list proxy on a Unix socket.

The sandbox has no network (its own namespace, and a seccomp filter refusing every socket family but
AF_UNIX). A code tool whose spec lists `network: ["api.example.com:443", ...]` gets this proxy's socket
bind-mounted read-only at /run/keel/net.sock and a `connect(host, port)` helper: it sends
`CONNECT host:port`, the proxy checks the pair against the allow-list (exact host, or `*.domain`; exact
port), resolves the name itself and refuses an address that is not public (loopback, private, link-local:
the gateway's own Redis and PostgreSQL among them) unless the allow-list names that address literally,
then connects to the address it resolved (no second lookup to rebind) and relays bytes both ways.
One proxy per sandboxed process, gone with it; every decision is kept in `decisions`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import shutil
import socket
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass

MOUNT = "/run/keel"
SOCKET = f"{MOUNT}/net.sock"
HEAD_LIMIT = 8192


def parse_entry(text: str) -> tuple[str, int]:
    """'host:port' (a name, `*.domain`, an IPv4 address or `[IPv6]`) → (host, port); ValueError says why."""
    host, sep, port = text.rpartition(":")
    host = host.strip("[]").lower()
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"network entry {text!r}: write host:port, e.g. api.example.com:443")
    return host, int(port)


def _literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


@dataclass(frozen=True, slots=True)
class Decision:
    host: str
    port: int
    allowed: bool
    reason: str


class NetProxy:
    def __init__(self, allow: Sequence[str]) -> None:
        self._allow = [parse_entry(x) for x in allow]
        self._dir = ""
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.decisions: list[Decision] = []

    @property
    def directory(self) -> str:
        """The host directory holding the socket (bind-mounted at MOUNT in the sandbox)."""
        return self._dir

    async def start(self) -> None:
        self._dir = tempfile.mkdtemp(prefix="keel-net-")
        os.chmod(self._dir, 0o711)  # the sandbox's own uid may reach the socket, not list or write the dir
        path = os.path.join(self._dir, "net.sock")
        self._server = await asyncio.start_unix_server(self._serve, path, limit=HEAD_LIMIT)
        os.chmod(path, 0o666)

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.close()
            for t in list(self._tasks):
                t.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await self._server.wait_closed()
        if self._dir:
            shutil.rmtree(self._dir, ignore_errors=True)

    def _listed(self, host: str, port: int) -> bool:
        return any(p == port and (h == host or (h.startswith("*.") and host.endswith(h[1:]))) for h, p in self._allow)

    async def _decide(self, host: str, port: int) -> tuple[str | None, str]:
        """(the address to connect to, or None; the reason)."""
        if not self._listed(host, port):
            return None, f"{host}:{port} is not in the tool's network allow-list"
        loop = asyncio.get_running_loop()
        try:
            infos = await asyncio.wait_for(loop.getaddrinfo(host, port, type=socket.SOCK_STREAM), 5.0)
        except (OSError, TimeoutError) as exc:
            return None, f"{host} does not resolve ({type(exc).__name__})"
        address = str(infos[0][4][0])
        if not _literal(host) and not ipaddress.ip_address(address).is_global:
            return None, f"{host} resolves to {address}, not a public address (name the address itself to allow it)"
        return address, "allowed"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._tunnel(reader, writer)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ValueError):
            pass
        finally:
            self._tasks.discard(task)
            writer.close()

    async def _tunnel(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10.0)
        parts = head.split(b"\r\n", 1)[0].decode("latin-1").split()
        if len(parts) != 3 or parts[0] != "CONNECT":
            writer.write(b"HTTP/1.1 405 Method Not Allowed\r\n\r\nonly CONNECT host:port")
            return
        try:
            host, port = parse_entry(parts[1])
        except ValueError as exc:
            writer.write(f"HTTP/1.1 400 Bad Request\r\n\r\n{exc}".encode())
            return
        address, reason = await self._decide(host, port)
        self.decisions.append(Decision(host, port, address is not None, reason))
        if address is None:
            writer.write(f"HTTP/1.1 403 Forbidden\r\n\r\n{reason}".encode())
            return
        try:
            up_reader, up_writer = await asyncio.wait_for(asyncio.open_connection(address, port), 10.0)
        except (OSError, TimeoutError) as exc:
            writer.write(f"HTTP/1.1 502 Bad Gateway\r\n\r\n{host}:{port}: {type(exc).__name__}".encode())
            return
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        try:
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            up_writer.close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError):
        while chunk := await reader.read(65536):
            writer.write(chunk)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()


# Defined in a code tool's globals when its spec lists `network`: the only way out of the sandbox.
HELPER = '''
def connect(host, port, timeout=10):
    """A socket to host:port through Keel's allow-list proxy (ConnectionRefusedError when refused)."""
    import socket
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect("/run/keel/net.sock")
    s.sendall(("CONNECT %s:%d HTTP/1.1\\r\\nHost: %s:%d\\r\\n\\r\\n" % (host, port, host, port)).encode())
    head = b""
    while b"\\r\\n\\r\\n" not in head:
        c = s.recv(1)
        if not c:
            break
        head += c
    status = head.split(b"\\r\\n", 1)[0].decode("latin-1")
    if " 200 " not in status + " ":
        why = s.recv(4096).decode("utf-8", "replace")
        s.close()
        raise ConnectionRefusedError("keel network proxy: %s: %s" % (status, why))
    return s


def fetch(url, method="GET", body=None, headers=None, timeout=10):
    """(status, bytes) of an http:// or https:// request made through connect()."""
    import http.client, ssl, urllib.parse
    u = urllib.parse.urlsplit(url)
    tls = u.scheme == "https"
    port = u.port or (443 if tls else 80)
    conn = http.client.HTTPConnection(u.hostname, port, timeout=timeout)
    sock = connect(u.hostname, port, timeout)
    conn.sock = ssl.create_default_context().wrap_socket(sock, server_hostname=u.hostname) if tls else sock
    conn.request(method, (u.path or "/") + ("?" + u.query if u.query else ""), body=body, headers=headers or {})
    r = conn.getresponse()
    return r.status, r.read()
'''
