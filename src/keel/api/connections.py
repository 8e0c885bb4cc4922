"""Connection-level bounds: header size and count (431), read timeouts (408), and a connection cap.

uvicorn's httptools protocol bounds none of these: a connection that never sends a byte, or drips
its headers or body a byte a second, is held forever, and headers grow without limit. `Protocol`
adds, per connection:
- a head clock: a request line and headers must arrive within `header_timeout_s` (from the connect,
  or from the first byte of a keep-alive request; an idle keep-alive connection is uvicorn's own
  `keepalive_timeout_s`); a body clock: the body within `body_timeout_s` after the headers;
- head size (`max_header_bytes`, request line included) and count (`max_headers`), checked exactly
  when the head ends, and never buffered past the size plus one read while it is still arriving;
- a cap on open connections (`max_connections`): past it a new connection gets a canned 503 and is
  closed at once, so established clients keep being served and descriptors are never exhausted.
A request that arrives in one read (the usual case) starts no timer. `uvicorn_options` is the one
entry point serve.py uses.
"""

from __future__ import annotations

import asyncio
import logging
import resource
from itertools import chain
from typing import Any, ClassVar

import orjson
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol, RequestResponseCycle

from keel.api.bounds import too_large
from keel.config import ServerConfig
from keel.errors import KeelError, RequestError, Unavailable
from keel.wire.anthropic_response import error_json

log = logging.getLogger("keel.api")

_HEAD, _BODY, _DONE = 1, 2, 3  # where the current request is: its head, its body, or all received
_LINGER_S = 2.0  # after refusing, input is read and discarded this long at most (see Protocol._refuse)


_base = HttpToolsProtocol


class HeadersTooLarge(RequestError):
    status = 431
    code = "request_header_fields_too_large"


class TimedOut(RequestError):
    status = 408
    code = "request_timeout"


def response_bytes(err: KeelError, anthropic: bool) -> bytes:
    """A complete `connection: close` HTTP response for `err`, in the caller's error format."""
    body = orjson.dumps(
        error_json(err)
        if anthropic
        else {"error": {"message": err.message, "type": err.type, "param": err.param, "code": err.code}}
    )
    head = [STATUS_LINE[err.status], b"content-type: application/json\r\n"]
    head += [f"{k}: {v}\r\n".encode() for k, v in err.headers().items()]
    head += [b"content-length: %d\r\nconnection: close\r\n\r\n" % len(body)]
    return b"".join(head) + body


_OVER_CAPACITY = response_bytes(
    Unavailable("The gateway has too many open connections (server.max_connections); retry shortly.", 1), False
)


class Protocol(HttpToolsProtocol):
    """uvicorn's httptools protocol within `settings` (a subclass per config sets it: see `uvicorn_options`).

    The base class's methods are called directly, not through super(): this runs per request and per read.
    """

    settings: ClassVar[ServerConfig]
    # Slots, not instance attributes: past 30 attributes an instance's dict stops sharing keys, and every
    # attribute read in uvicorn's per-request code gets slower (callgrind: ~20k instructions per request).
    __slots__ = (
        "_body_s",
        "_body_seen",
        "_chunk_at",
        "_fed",
        "_head_from",
        "_head_s",
        "_head_seen",
        "_max_body",
        "_max_head",
        "_max_headers",
        "_phase",
        "_refused",
        "_timer",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._phase = _HEAD
        self._head_seen = 0  # bytes read while a head was incomplete: a memory guard, and "has a byte come?"
        self._fed = 0  # bytes read on this connection
        self._chunk_at = 0  # ... before the current read
        self._head_from = 0  # the current head starts at or after this offset (the read that ended the last one)
        self._timer: asyncio.TimerHandle | None = None
        self._refused = False  # answered by this class and closing: the parser's further callbacks are ignored
        # Plain attributes: a pydantic model's are several times slower to read, and these are read per request.
        s = self.settings
        self._max_head, self._max_headers = s.max_header_bytes, s.max_headers
        self._head_s, self._body_s = s.header_timeout_s, s.body_timeout_s
        self._max_body, self._body_seen = s.max_body_bytes, 0  # a backstop for routes that read bodies raw

    # -- the connection cap

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        if len(self.connections) >= self.settings.max_connections:
            self.transport, self._refused = transport, True
            transport.write(_OVER_CAPACITY)
            transport.close()
            return
        _base.connection_made(self, transport)
        self._timer = self.loop.call_later(self.settings.header_timeout_s, self._expired)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        _base.connection_lost(self, exc)

    # -- reads

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        phase = self._phase
        if phase != _BODY:
            if phase == _DONE:
                self._phase = _HEAD  # a keep-alive request: its head clock starts with this read
            elif self._head_seen > self._max_head:  # all of it read, none of it parsed yet
                self._refuse(HeadersTooLarge(self._head_message()))
                return
            self._head_seen += len(data)
        self._chunk_at = self._fed
        self._fed += len(data)
        _base.data_received(self, data)
        if self._timer is None and self._phase != _DONE and not self._refused:
            self._timer = self.loop.call_later(self._head_s if self._phase == _HEAD else self._body_s, self._expired)

    def on_headers_complete(self) -> None:
        if self._refused:
            return
        if self._timer is not None:
            self._disarm()
        self._phase, self._head_seen, self._body_seen = _BODY, 0, 0
        headers, limit = self.headers, self._max_head
        if len(headers) > self._max_headers:
            self._refuse(
                HeadersTooLarge(f"The request has more than {self._max_headers} headers (server.max_headers).")
            )
            return
        # The bytes read since the read that ended the last head bound this head: exact sizes only past the cap.
        if self._fed - self._head_from > limit and (
            len(self.url) + sum(map(len, chain.from_iterable(headers))) + 4 * len(headers) > limit
        ):
            self._refuse(HeadersTooLarge(self._head_message()))
            return
        self._head_from = self._chunk_at
        _base.on_headers_complete(self)

    def on_body(self, body: bytes) -> None:
        if self._refused:
            return
        self._body_seen += len(body)
        if self._body_seen > self._max_body:
            self._refuse(too_large(self._max_body), self.cycle)
            return
        _base.on_body(self, body)

    def on_message_complete(self) -> None:
        if self._refused:
            return
        if self._timer is not None:
            self._disarm()
        self._phase = _DONE
        _base.on_message_complete(self)

    # -- refusals

    def _head_message(self) -> str:
        limit = self.settings.max_header_bytes
        return f"The request line and headers are larger than {limit} bytes (server.max_header_bytes)."

    def _anthropic(self) -> bool:
        return bool(getattr(self, "url", b"").startswith(b"/v1/messages"))

    def _refuse(self, err: KeelError, cycle: RequestResponseCycle | None = None) -> None:
        """Answer `err` in place of the app, and close. `cycle`: the request's own, once the app has it."""
        self._refused = True
        self._disarm()
        previous = self.cycle if cycle is None else None  # the connection's last request, if this one has none
        if cycle is not None and not cycle.response_complete:
            cycle.disconnected = True  # the app's pending read ends, and whatever it sends is dropped
            cycle.message_event.set()
        clear = not self.pipeline and (cycle is None or not cycle.response_started)
        transport = self.transport
        if not clear or (previous is not None and not previous.response_complete) or transport.is_closing():
            transport.close()  # a response is under way on this connection: no room for ours
            return
        transport.write(response_bytes(err, self._anthropic()))
        if not transport.can_write_eof():
            transport.close()
            return
        # A lingering close: closing with unread input would reset the connection, and the client could
        # lose the answer. So: end our side, discard what still comes, and close at its end or soon after.
        transport.write_eof()
        if self.flow is not None:
            self.flow.resume_reading()
        self.loop.call_later(_LINGER_S, transport.close)

    def _expired(self) -> None:
        self._timer = None
        if self._refused or self.transport.is_closing():
            return
        if self._phase == _HEAD and not self._head_seen:
            self._refused = True
            self.transport.close()  # a connection that never sent a request: nothing to answer
            return
        head = self._phase == _HEAD
        what, key = ("headers", "header_timeout_s") if head else ("body", "body_timeout_s")
        limit = getattr(self.settings, key)
        err = TimedOut(f"The request {what} did not arrive within {limit:g} s (server.{key}).")
        self._refuse(err, None if head else self.cycle)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


def uvicorn_options(server: ServerConfig) -> dict[str, Any]:
    """The uvicorn settings that bound connections: pass them to `uvicorn.run` or `uvicorn.Config`.

    Also lifts this process's soft open-file limit (towards its hard limit) to fit the connection cap,
    so that the cap, not EMFILE, is what refuses connections.
    """
    _fit_open_files(server.max_connections)
    protocol = type("KeelHttpProtocol", (Protocol,), {"settings": server})
    return {"http": protocol, "timeout_keep_alive": server.keepalive_timeout_s}


def _fit_open_files(connections: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = connections + 1024  # the store, upstream pools, logs, the listening socket
    if soft == resource.RLIM_INFINITY or soft >= want:
        return
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    if target < want:
        log.warning(
            "open-file limit %d is below server.max_connections + 1024 (%d): raise `ulimit -n` or lower the cap",
            target,
            want,
        )
