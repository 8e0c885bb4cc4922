"""A lean asyncio Redis client: RESP2 over asyncio Protocols, hiredis's reply parser, commands pipelined.

Why not redis-py: its asyncio client (a connection pool, a retry object and a lock per command, one
command per connection at a time) cost more CPU per round trip than the Lua scripts it carried
(decision 0018-redis-client). Here every command is written at once to a shared connection and its
reply is matched in order (RESP answers in the order asked), so concurrent callers pipeline: the
commands of one event-loop turn go out in one write, and their replies come back in one read.

`Redis(url)` keeps up to `connections` connections (opened on first use; another is opened only while
every open one has commands in flight). Each command gets `timeout_s` from its write: a reply that is
late closes its connection and fails every command in flight on it with `RedisTimeout` (as redis-py
did: a connection whose replies are overdue is in an unknown state). A connection that breaks fails its
commands with `RedisUnreachable`; `execute` and `evalsha` retry such a command once, at once, on a
fresh connection (this heals connections dropped by a Redis restart; a command whose connection broke
after Redis ran it runs twice). Opening a connection (TCP or TLS, then AUTH and SELECT) is bounded by
`connect_timeout_s`. An error reply raises `ReplyError`; all three are `RedisError`. A command sent
`later=True` (a settlement, a breaker report) waits up to `later_s` (5 ms) and goes out in the same
write as the next command, ahead of it, while Redis is busy; when no reply has come for `wake_s`
(1 ms) it is written at once, so that Redis is awake for the command that follows. `Redis(url,
shared=True)` handles with the same settings share one pool per event loop, so the stores on one
Redis share those writes.

URLs as redis-py reads them: `redis://[[user]:password@]host[:port][/db]`, `rediss://…` (TLS with the
system's trust store; `?ssl_cert_reqs=none|optional|required`, `?ssl_ca_certs=/path`), and
`unix://[[user]:password@]/path/to.sock[?db=N]`; `?db=` and `?password=` work on every scheme. Not
supported: RESP3 and client-side caching, Sentinel and Cluster, pub/sub and blocking commands (a
blocked reply would hold up every command pipelined behind it), MULTI/EXEC across callers.
"""

from __future__ import annotations

import asyncio
import hashlib
import ssl
from collections import deque
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, cast
from urllib.parse import parse_qs, unquote, urlsplit

try:
    import hiredis as _hiredis
except ImportError:  # pragma: no cover - then PyReader and pack_py
    _hiredis = None  # type: ignore[assignment]

Arg = str | bytes | int | float


class RedisError(Exception):
    """Anything that went wrong talking to Redis."""


class ReplyError(RedisError):
    """Redis answered an error (a script's error, WRONGTYPE, NOSCRIPT...)."""


class RedisUnreachable(RedisError):
    """No connection could be opened, or it broke before the reply."""


class RedisTimeout(RedisUnreachable):
    """No reply in time: the connection was closed."""


class ProtocolError(RedisError):
    """Redis sent bytes that are not RESP2."""


def pack_py(args: tuple[Arg, ...]) -> bytes:
    """One command in RESP2: an array of bulk strings (`pack` is hiredis's, when installed)."""
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        if isinstance(a, str):
            b = a.encode()
        elif isinstance(a, bytes):
            b = a
        elif isinstance(a, int):
            b = b"%d" % a
        else:
            b = repr(a).encode()
        out.append(b"$%d\r\n%b\r\n" % (len(b), b))
    return b"".join(out)


class PyReader:
    """A RESP2 reply parser in Python, with hiredis.Reader's interface: used when hiredis is not installed."""

    def __init__(self, encoding: str | None = None) -> None:
        self._buf = bytearray()
        self._pos = 0
        self._encoding = encoding

    def feed(self, data: bytes) -> None:
        self._buf += data

    def gets(self) -> Any:
        """The next complete reply, or False while it has not all arrived."""
        parsed = self._parse(self._pos)
        if parsed is None:
            return False
        value, self._pos = parsed
        if self._pos > 65536 or self._pos == len(self._buf):
            del self._buf[: self._pos]
            self._pos = 0
        return value

    def _parse(self, pos: int) -> tuple[Any, int] | None:
        buf = self._buf
        end = buf.find(b"\r\n", pos)
        if end < 0:
            return None
        kind, line, pos = buf[pos], bytes(buf[pos + 1 : end]), end + 2
        if kind == 0x24:  # $ bulk string
            n = int(line)
            if n < 0:
                return None, pos
            if len(buf) < pos + n + 2:
                return None
            data = bytes(buf[pos : pos + n])
            return (data.decode(self._encoding) if self._encoding else data), pos + n + 2
        if kind == 0x2A:  # * array
            n = int(line)
            if n < 0:
                return None, pos
            items = []
            for _ in range(n):
                parsed = self._parse(pos)
                if parsed is None:
                    return None
                item, pos = parsed
                items.append(item)
            return items, pos
        if kind == 0x3A:  # : integer
            return int(line), pos
        if kind == 0x2B:  # + simple string
            return (line.decode(self._encoding) if self._encoding else line), pos
        if kind == 0x2D:  # - error
            return ReplyError(line.decode(errors="replace")), pos
        raise ProtocolError(f"unexpected RESP type byte {kind!r}")


pack = cast(Callable[[tuple[Arg, ...]], bytes], _hiredis.pack_command) if _hiredis is not None else pack_py


def _reader(encoding: str | None) -> Any:
    if _hiredis is not None:
        return _hiredis.Reader(replyError=ReplyError, protocolError=ProtocolError, encoding=encoding)
    return PyReader(encoding)


class Script:
    """A Lua script run by EVALSHA, sent whole (EVAL) once when Redis does not know it yet."""

    __slots__ = ("sha", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self.sha = hashlib.sha1(text.encode()).hexdigest()


class _Connection(asyncio.Protocol):
    """One connection; replies are matched to the commands in flight, first in, first out."""

    def __init__(self, client: _Pool) -> None:
        self._client = client
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._reader = _reader(client.encoding)
        self._waiters: deque[asyncio.Future[Any]] = deque()
        self._deadlines: deque[float] = deque()  # of the commands written, oldest first
        self._out: list[bytes] = []  # commands of this loop turn, written together
        self._timer: asyncio.TimerHandle | None = None
        self.closed = False

    @property
    def busy(self) -> int:
        return len(self._waiters)

    # -- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass it

    def data_received(self, data: bytes) -> None:
        self._client.heard_at = self._loop.time()
        self._reader.feed(data)
        waiters = self._waiters
        while True:
            try:
                reply = self._reader.gets()
            except ProtocolError as exc:  # hiredis raises it
                self._end(exc)
                return
            if reply is False:
                return
            if not waiters:  # a reply nobody asked for: the connection's state is unknown
                self._end(ProtocolError("Redis sent a reply nobody asked for"))
                return
            waiter = waiters.popleft()
            self._deadlines.popleft()
            if not waiter.done():
                if isinstance(reply, ReplyError):
                    waiter.set_exception(reply)
                else:
                    waiter.set_result(reply)

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._end(RedisUnreachable("Redis closed the connection"))

    # -- used by Redis
    def send(self, payload: bytes, future: asyncio.Future[Any] | None = None) -> asyncio.Future[Any]:
        if future is None:
            future = self._loop.create_future()
        if self.closed:
            future.set_exception(RedisUnreachable("Redis closed the connection"))
            return future
        if not self._out:
            self._loop.call_soon(self._flush)
        self._out.append(payload)
        self._waiters.append(future)
        return future

    def close(self) -> None:
        self._end(RedisUnreachable("the client was closed"), graceful=True)

    def _flush(self) -> None:
        """Write the commands of this loop turn; each one's deadline runs from here."""
        out, self._out = self._out, []
        if not out or self._transport is None or self.closed:
            return  # (nothing: written already, by a command sent at once)
        self._transport.write(out[0] if len(out) == 1 else b"".join(out))
        deadline = self._loop.time() + self._client.timeout_s
        self._deadlines.extend([deadline] * len(out))
        if self._timer is None:
            self._timer = self._loop.call_at(deadline, self._check)

    def _check(self, turns: int = 0) -> None:
        """The oldest command's deadline passed: give a reply already received two loop turns to be read."""
        self._timer = None
        if not self._deadlines or self.closed:
            return
        head = self._deadlines[0]
        if head > self._loop.time():
            self._timer = self._loop.call_at(head, self._check)
        elif turns < 2:
            self._loop.call_soon(self._check, turns + 1)
        else:
            self._end(RedisTimeout(f"no reply from Redis within {self._client.timeout_s} s"))

    def _end(self, error: RedisError, graceful: bool = False) -> None:
        if not self.closed:
            self.closed = True
            self._client._forget(self)
            if self._transport is not None:
                self._transport.close() if graceful else self._transport.abort()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        waiters, self._waiters = self._waiters, deque()
        self._deadlines.clear()
        for waiter in waiters:
            if not waiter.done():
                waiter.set_exception(error)


class _Pool:
    """Commands and scripts over a few pipelined connections to one Redis, in one event loop."""

    def __init__(
        self,
        url: str,
        *,
        decode: bool = True,
        connections: int = 2,
        timeout_s: float = 0.5,
        connect_timeout_s: float = 1.0,
        later_s: float = 0.005,
        wake_s: float = 0.001,
    ) -> None:
        self._target = _parse_url(url)
        self.encoding: str | None = "utf-8" if decode else None
        self.timeout_s = timeout_s
        self._connect_timeout_s = connect_timeout_s
        self._later_s = later_s
        self._wake_s = wake_s
        self.heard_at = float("-inf")  # loop time of the last reply read, on any connection
        self._size = max(1, connections)
        self._conns: list[_Connection] = []
        self._opening: asyncio.Future[_Connection] | None = None
        self._later: list[tuple[bytes, asyncio.Future[Any]]] = []  # commands waiting for a ride
        self._later_timer: asyncio.Handle | None = None
        self._later_opener: asyncio.Task[None] | None = None
        self._refs = 1  # handles sharing this pool (`Redis(shared=True)`); the last aclose closes it
        self._release: Callable[[], object] | None = None
        self._closed = False

    async def execute(self, *args: Arg, later: bool = False) -> Any:
        """One command's reply; a broken connection is retried once on a fresh one.

        `later`: the command is in no hurry (a settlement, a report): while Redis is busy (a reply
        read within `wake_s`, or commands in flight) it waits up to `later_s` and goes out ahead of
        the next command that is, in the same write, sharing its round trip. After a quieter spell it
        is written at once instead: Redis has gone to sleep, and waking it costs the next command
        ~0.15 ms on a VM (bench/README.md, "An idle-then-busy call"), so this command pays that for the
        admission that usually follows.
        """
        payload = pack(args)
        if later:
            loop = asyncio.get_running_loop()
            future = loop.create_future()
            self._later.append((payload, future))
            if self._later_timer is None:
                if loop.time() - self.heard_at < self._wake_s or any(c.busy for c in self._conns):
                    self._later_timer = loop.call_later(self._later_s, self._send_later)
                else:
                    self._send_now()
            try:
                return await future
            except RedisTimeout:
                raise
            except RedisUnreachable:
                if self._closed:
                    raise
            return await (await self._connection()).send(payload)
        conn = await self._connection()  # failing to connect is not retried
        try:
            return await conn.send(payload)
        except RedisTimeout:
            raise
        except RedisUnreachable:
            if self._closed:
                raise
        return await (await self._connection()).send(payload)

    async def evalsha(self, script: Script, keys: Sequence[Arg], args: Sequence[Arg], *, later: bool = False) -> Any:
        """EVALSHA, or EVAL when Redis does not have the script (a restart, SCRIPT FLUSH): it keeps it."""
        try:
            return await self.execute("EVALSHA", script.sha, len(keys), *keys, *args, later=later)
        except ReplyError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise
        return await self.execute("EVAL", script.text, len(keys), *keys, *args)

    async def pipeline(self, commands: Sequence[Sequence[Arg]]) -> list[Any]:
        """Several commands in one write; their replies in order. An error reply raises (the first one)."""
        if not commands:
            return []
        conn = await self._connection()
        futures = [conn.send(pack(tuple(c))) for c in commands]
        done = await asyncio.gather(*futures, return_exceptions=True)
        for reply in done:
            if isinstance(reply, BaseException):
                raise reply
        return done

    async def aclose(self) -> None:
        self._refs -= 1
        if self._refs > 0:
            return
        if self._release is not None:
            self._release()
        if self._later_timer is not None:
            self._later_timer.cancel()
        if self._later:  # settlements and reports still owed go out first
            waiting = [f for _, f in self._later]
            self._send_later()
            await asyncio.gather(*waiting, return_exceptions=True)
        self._closed = True
        if self._opening is not None:
            self._opening.cancel()
        for conn in list(self._conns):
            conn.close()

    # -- commands sent later
    def _ride(self, conn: _Connection) -> None:
        """Put the commands waiting for a ride on `conn`, ahead of the one about to be sent."""
        if self._later_timer is not None:
            self._later_timer.cancel()
            self._later_timer = None
        waiting, self._later = self._later, []
        for payload, future in waiting:
            if not future.done():  # (a caller cancelled meanwhile: not sent)
                conn.send(payload, future)

    def _send_now(self) -> None:
        """Redis has been quiet: write what waits for a ride now, not at the end of the loop turn (by then
        the next request may have come in, and its admission would wake Redis itself)."""
        for conn in self._conns:
            if not conn.closed:
                self._ride(conn)
                conn._flush()
                return
        self._later_timer = asyncio.get_running_loop().call_soon(self._send_later)  # (opens a connection)

    def _send_later(self) -> None:
        """No command came by to ride with: send them on their own."""
        self._later_timer = None
        if not self._later:
            return
        for conn in self._conns:
            if not conn.closed:
                self._ride(conn)
                return
        self._later_opener = asyncio.ensure_future(self._open_for_later())

    async def _open_for_later(self) -> None:
        try:
            conn = await self._connection()
        except RedisError as exc:
            waiting, self._later = self._later, []
            for _, future in waiting:
                if not future.done():
                    future.set_exception(exc)
            return
        self._ride(conn)

    # -- connections
    async def _connection(self) -> _Connection:
        if self._closed:
            raise RedisUnreachable("the client was closed")
        best: _Connection | None = None
        for conn in self._conns:
            if not conn.busy:
                best = conn
                break
            if best is None or conn.busy < best.busy:
                best = conn
        else:
            if len(self._conns) < self._size and self._opening is None:
                self._opening = asyncio.ensure_future(self._open())
                self._opening.add_done_callback(self._opened)
        if best is None:  # a busy connection now beats waiting for a new one
            assert self._opening is not None
            best = await asyncio.shield(self._opening)
        if self._later:
            self._ride(best)
        return best

    def _opened(self, future: asyncio.Future[_Connection]) -> None:
        self._opening = None
        if not future.cancelled():
            future.exception()  # retrieved here; callers waiting on it get it too

    async def _open(self) -> _Connection:
        loop = asyncio.get_running_loop()
        t = self._target
        try:
            async with asyncio.timeout(self._connect_timeout_s):
                if t.path is not None:
                    _, conn = await loop.create_unix_connection(lambda: _Connection(self), t.path)
                else:
                    _, conn = await loop.create_connection(
                        lambda: _Connection(self),
                        t.host,
                        t.port,
                        ssl=t.tls,
                        server_hostname=t.host if t.tls is not None else None,
                    )
                try:
                    if t.password is not None:
                        auth = ("AUTH", t.username, t.password) if t.username else ("AUTH", t.password)
                        await conn.send(pack(auth))
                    if t.db:
                        await conn.send(pack(("SELECT", t.db)))
                except BaseException:
                    conn.close()
                    raise
        except TimeoutError:
            raise RedisTimeout(f"cannot connect to Redis within {self._connect_timeout_s} s") from None
        except (OSError, ssl.SSLError) as exc:
            raise RedisUnreachable(f"cannot connect to Redis: {exc}") from None
        if self._closed:
            conn.close()
            raise RedisUnreachable("the client was closed")
        self._conns.append(conn)
        return conn

    def _forget(self, conn: _Connection) -> None:
        if conn in self._conns:
            self._conns.remove(conn)


Settings = tuple[str, bool, int, float, float, float, float]  # url, decode, connections, timeouts, later_s, wake_s
_SHARED: dict[tuple[asyncio.AbstractEventLoop, Settings], _Pool] = {}


class Redis:
    """Keel's Redis client (see the module's docstring): a handle on a pool of pipelined connections,
    bound to the event loop it is first used in. `shared=True`: the handles with the same settings used
    in one event loop share one pool (the stores on one Redis: what one sends later rides with what
    another sends now); the last of them to close closes it. Handles may be made before the loop runs."""

    def __init__(
        self,
        url: str,
        *,
        decode: bool = True,
        connections: int = 2,
        timeout_s: float = 0.5,
        connect_timeout_s: float = 1.0,
        later_s: float = 0.005,
        wake_s: float = 0.001,
        shared: bool = False,
    ) -> None:
        _parse_url(url)  # a bad URL fails here, not at the first command
        self._settings: Settings = (url, decode, connections, timeout_s, connect_timeout_s, later_s, wake_s)
        self._shared = shared
        self._pool: _Pool | None = None
        self._closed = False

    def execute(self, *args: Arg, later: bool = False) -> Coroutine[Any, Any, Any]:
        """One command's reply (see `_Pool.execute`; `later`: in no hurry, rides with the next command)."""
        return (self._pool or self._bind()).execute(*args, later=later)

    def evalsha(
        self, script: Script, keys: Sequence[Arg], args: Sequence[Arg], *, later: bool = False
    ) -> Coroutine[Any, Any, Any]:
        """EVALSHA, or EVAL when Redis does not have the script (a restart, SCRIPT FLUSH): it keeps it."""
        return (self._pool or self._bind()).evalsha(script, keys, args, later=later)

    def pipeline(self, commands: Sequence[Sequence[Arg]]) -> Coroutine[Any, Any, list[Any]]:
        """Several commands in one write; their replies in order. An error reply raises (the first one)."""
        return (self._pool or self._bind()).pipeline(commands)

    async def aclose(self) -> None:
        self._closed = True
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.aclose()

    def _bind(self) -> _Pool:
        if self._pool is not None:
            return self._pool
        if self._closed:
            raise RedisUnreachable("the client was closed")
        url, decode, connections, timeout_s, connect_timeout_s, later_s, wake_s = self._settings
        key = (asyncio.get_running_loop(), self._settings)
        pool = _SHARED.get(key) if self._shared else None
        if pool is None:
            pool = _Pool(
                url,
                decode=decode,
                connections=connections,
                timeout_s=timeout_s,
                connect_timeout_s=connect_timeout_s,
                later_s=later_s,
                wake_s=wake_s,
            )
            if self._shared:
                _SHARED[key] = pool
                pool._release = lambda: _SHARED.pop(key, None)
        else:
            pool._refs += 1
        self._pool = pool
        return pool


class _Target:
    __slots__ = ("db", "host", "password", "path", "port", "tls", "username")

    def __init__(self) -> None:
        self.host = "127.0.0.1"
        self.port = 6379
        self.path: str | None = None
        self.tls: ssl.SSLContext | None = None
        self.username: str | None = None
        self.password: str | None = None
        self.db = 0


_QUERY = {"db", "password", "username", "ssl_cert_reqs", "ssl_ca_certs"}


def _parse_url(url: str) -> _Target:
    parts = urlsplit(url)
    t = _Target()
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    unknown = sorted(set(query) - _QUERY)
    if unknown:
        raise ValueError(
            f"unsupported Redis URL parameter(s) {', '.join(unknown)}: Keel reads {', '.join(sorted(_QUERY))}"
        )
    if parts.username:
        t.username = unquote(parts.username)
    if parts.password is not None:
        t.password = unquote(parts.password)
    t.username = query.get("username", t.username)
    t.password = query.get("password", t.password)
    if parts.scheme == "unix":
        t.path = unquote(parts.path)
    elif parts.scheme in ("redis", "rediss"):
        t.host = parts.hostname or "127.0.0.1"
        t.port = parts.port or 6379
        db = parts.path.lstrip("/")
        if db:
            t.db = _db(db)
    else:
        raise ValueError(f"unsupported Redis URL scheme {parts.scheme!r}: use redis://, rediss:// or unix://")
    if "db" in query:
        t.db = _db(query["db"])
    if parts.scheme == "rediss":
        t.tls = ssl.create_default_context(cafile=query.get("ssl_ca_certs"))
        reqs = query.get("ssl_cert_reqs", "required")
        if reqs not in ("none", "optional", "required"):
            raise ValueError("ssl_cert_reqs must be none, optional or required")
        if reqs != "required":
            t.tls.check_hostname = False
            t.tls.verify_mode = ssl.CERT_NONE if reqs == "none" else ssl.CERT_OPTIONAL
    return t


def _db(text: str) -> int:
    if not text.isdigit():
        raise ValueError(f"the Redis database must be a number, not {text!r}")
    return int(text)
