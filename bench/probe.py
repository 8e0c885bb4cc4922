"""A one-connection keep-alive HTTP/1.1 probe on a raw socket, for latency and time to first byte.

The same client measures the direct path and the gateway path, so its own cost cancels out in the
difference. It sends one prebuilt request at a time and reads the whole response (Content-Length or
chunked), noting when a marker (the first content chunk) first arrives.
"""

from __future__ import annotations

import math
import socket
import time
from dataclasses import dataclass, field

FIRST_CONTENT = b'"content":"Hello'  # the first content chunk of bench/upstream.py's stream


def build_request(port: int, body: bytes, key: str | None = None, headers: str = "") -> bytes:
    auth = (f"authorization: Bearer {key}\r\n" if key else "") + headers
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\n{auth}"
        f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


class BadResponse(Exception):
    pass


class Probe:
    def __init__(self, port: int) -> None:
        self._sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._buf = b""
        self._marker_at = 0.0
        self.calls = 0

    def close(self) -> None:
        self._sock.close()

    def call(self, request: bytes) -> tuple[float, float]:
        """Send one request; return (seconds to the first content chunk, seconds to the full response)."""
        self._marker_at = 0.0
        self.calls += 1
        t0 = time.perf_counter()
        self._sock.sendall(request)
        head = self._read_head()
        if not head.startswith(b"HTTP/1.1 200"):
            raise BadResponse(head.split(b"\r\n", 1)[0].decode(errors="replace"))
        if b"transfer-encoding: chunked" in head.lower():
            self._read_chunked()
        else:
            self._read_exactly(_content_length(head))
        done = time.perf_counter()
        return (self._marker_at or done) - t0, done - t0

    def _recv(self) -> None:
        data = self._sock.recv(65536)
        if not data:
            raise BadResponse("connection closed")
        if not self._marker_at and FIRST_CONTENT in data:
            self._marker_at = time.perf_counter()
        self._buf += data

    def _read_head(self) -> bytes:
        while (end := self._buf.find(b"\r\n\r\n")) < 0:
            self._recv()
        head, self._buf = self._buf[:end], self._buf[end + 4 :]
        return head

    def _read_exactly(self, n: int) -> bytes:
        while len(self._buf) < n:
            self._recv()
        out, self._buf = self._buf[:n], self._buf[n:]
        return out

    def _read_chunked(self) -> None:
        while True:
            while (eol := self._buf.find(b"\r\n")) < 0:
                self._recv()
            size = int(self._buf[:eol].split(b";", 1)[0], 16)
            self._buf = self._buf[eol + 2 :]
            self._read_exactly(size + 2)
            if size == 0:
                return


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0


@dataclass
class Samples:
    first: list[float] = field(default_factory=list)
    total: list[float] = field(default_factory=list)


def sample(probe: Probe, request: bytes, n: int, into: Samples | None = None) -> Samples:
    """n sequential calls; returns their timings in milliseconds."""
    out = into if into is not None else Samples()
    for _ in range(n):
        first, total = probe.call(request)
        out.first.append(first * 1000)
        out.total.append(total * 1000)
    return out


def alternate(paths: dict[str, tuple[Probe, bytes]], n: int, block: int = 50, warmup: int = 100) -> dict[str, Samples]:
    """Interleave blocks of `block` calls on each path so drift hits both alike; warm-up calls are not kept."""
    for probe, request in paths.values():
        sample(probe, request, warmup)
    results = {name: Samples() for name in paths}
    done = 0
    while done < n:
        step = min(block, n - done)
        for name, (probe, request) in paths.items():
            sample(probe, request, step, results[name])
        done += step
    return results


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]
