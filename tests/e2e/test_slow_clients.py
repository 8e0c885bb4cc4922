"""Slow and idle clients cannot hold the gateway: read timeouts (408), keep-alive timeout, connection cap.

The first tests drive an in-process gateway with `keel serve`'s connection bounds; the flood test runs
`keel serve` itself as a process, so its descriptors can be counted, and opens 2,000 idle and 200
dripping sockets against it.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import resource
import select
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from keel.testing import FakeUpstream
from tests.conftest import Gateway, base_config
from tests.e2e.test_request_bounds import anthropic_error, connect, head, openai_error, response
from tests.e2e.test_serve_process import serving

CHAT = json.dumps({"model": "sim", "messages": [{"role": "user", "content": "hi"}]}).encode()


@pytest.fixture
def gateway(make_gateway: Any, up: FakeUpstream, tmp_path: Path) -> Gateway:
    raw = base_config(up, f"sqlite:///{tmp_path}/keel.db", tmp_path)
    raw["server"] = {"header_timeout_s": 1.0, "body_timeout_s": 1.0, "keepalive_timeout_s": 1.0}
    return make_gateway(raw, bounded=True)  # type: ignore[no-any-return]


def closed_within(sock: socket.socket, seconds: float) -> bytes:
    """Everything the server sends until it closes the connection, which it must do within `seconds`."""
    sock.settimeout(seconds)
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def drip(sock: socket.socket, data: bytes, every: float) -> None:
    """Send `data` a byte at a time until the server answers (it must, before the end)."""
    for byte in data:
        if select.select([sock], [], [], every)[0]:
            return
        sock.sendall(bytes([byte]))
    raise AssertionError("the server waited for every byte")


def test_a_connection_that_sends_nothing_is_closed_after_the_header_timeout(gateway: Gateway) -> None:
    with connect(gateway) as sock:
        t0 = time.monotonic()
        assert closed_within(sock, 5) == b""  # nothing asked, nothing answered
        assert time.monotonic() - t0 >= 0.9


def test_dripping_headers_are_cut_with_408(gateway: Gateway) -> None:
    with connect(gateway) as sock:
        request = head("/v1/chat/completions", {"authorization": f"Bearer {gateway.key}", "x-pad": "p" * 200})
        t0 = time.monotonic()
        drip(sock, request, 0.02)  # one byte every 20 ms: ~5 s for the head, the timeout is 1 s
        status, headers, body = response(sock)
    assert status == 408 and headers["connection"] == "close"
    error = openai_error(body)
    assert error["code"] == "request_timeout" and "server.header_timeout_s" in error["message"]
    assert time.monotonic() - t0 < 4


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/messages"])
def test_a_dripping_body_is_cut_with_408_in_the_callers_format(gateway: Gateway, path: str) -> None:
    with connect(gateway) as sock:
        headers = {"x-api-key": gateway.key, "content-type": "application/json", "content-length": str(len(CHAT))}
        sock.sendall(head(path, headers))
        drip(sock, CHAT, 0.05)
        status, _, body = response(sock)
    assert status == 408
    error = anthropic_error(body) if path == "/v1/messages" else openai_error(body)
    assert "server.body_timeout_s" in error["message"]


def test_slow_but_timely_requests_are_served_and_idle_keepalive_is_closed(gateway: Gateway) -> None:
    body = json.dumps({"model": "sim", "messages": [{"role": "user", "content": "x" * 14}]}).encode()
    request = head("/v1/chat/completions", {"authorization": f"Bearer {gateway.key}", "content-length": str(len(body))})
    with connect(gateway) as sock:
        for i, piece in enumerate((request[:40], request[40:], body[:35], body[35:])):  # four reads, in time
            time.sleep(0.3 * (i > 0))
            sock.sendall(piece)
        status, _, answer = response(sock)
        assert status == 200, answer
        t0 = time.monotonic()
        assert closed_within(sock, 5) == b""  # idle after its answer: closed after server.keepalive_timeout_s
        assert time.monotonic() - t0 >= 0.9


# ---- a flood against `keel serve` -------------------------------------------------------------------------

CAP, HEADER_TIMEOUT_S = 300, 3.0


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], str, str]]:
    limits = {"max_connections": CAP, "header_timeout_s": HEADER_TIMEOUT_S, "keepalive_timeout_s": 60}
    with serving(tmp_path, limits, alias="sim") as (proc, url, key, _):
        yield proc, url, key


def open_files(pid: int) -> int:
    """The process's open sockets: what a slow client can pin (files such as the store's pooled SQLite
    readers, opened by background workers as they need them, are not the subject here)."""
    fds = f"/proc/{pid}/fd"
    count = 0
    for fd in os.listdir(fds):
        with contextlib.suppress(OSError):  # closed meanwhile
            count += os.readlink(f"{fds}/{fd}").startswith("socket:")
    return count


def ask(conn: http.client.HTTPConnection, key: str) -> float:
    """One chat call on an established connection; its duration in seconds."""
    t0 = time.monotonic()
    conn.request("POST", "/v1/chat/completions", CHAT, {"authorization": f"Bearer {key}"})
    r = conn.getresponse()
    assert r.status == 200, r.read()
    r.read()
    return time.monotonic() - t0


def test_idle_and_dripping_sockets_cannot_starve_the_gateway(
    served: tuple[subprocess.Popen[bytes], str, str],
) -> None:
    proc, url, key = served
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 4096:  # this test process holds 2,200+ sockets
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(4096, hard), hard))
    port = int(url.rsplit(":", 1)[1])
    established = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    ask(established, key)
    baseline = open_files(proc.pid)

    drippers = [socket.create_connection(("127.0.0.1", port)) for _ in range(200)]
    stop = threading.Event()

    def drip() -> None:  # one byte of a never-ending head per socket, every 100 ms
        line = b"POST /v1/chat/completions HTTP/1.1\r\nx-slow: " + b"s" * 10_000
        for i in range(len(line)):
            for s in drippers:
                with contextlib.suppress(OSError):
                    s.send(line[i : i + 1])
            if stop.wait(0.1):
                return

    dripping = threading.Thread(target=drip, daemon=True)
    dripping.start()
    idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(2000)]
    try:
        # the cap holds: the gateway holds at most CAP client connections (and a few being refused), not 2,200
        assert open_files(proc.pid) <= baseline + CAP + 50
        # an established client is still answered promptly
        waits = [ask(established, key) for _ in range(20)]
        assert max(waits) < 2.0, waits
        # a new connection over the cap is told so at once, and closed
        with socket.create_connection(("127.0.0.1", port), timeout=5) as extra:
            status, headers, body = response(extra)
            assert status == 503 and headers["retry-after"] == "1"
            assert "server.max_connections" in openai_error(body)["message"]
        # past the header timeout every dripping and idle socket the gateway held has been cut,
        # and the idle sockets over the cap were refused at once, not left waiting
        for s in drippers:
            data = closed_within(s, HEADER_TIMEOUT_S + 10)
            assert data == b"" or data.startswith(b"HTTP/1.1 408"), data[:100]
        outcomes = [closed_within(s, HEADER_TIMEOUT_S + 10)[:12] for s in idle]
        assert set(outcomes) == {b"", b"HTTP/1.1 503"}
        assert outcomes.count(b"HTTP/1.1 503") >= 2000 - (CAP - 200)
        # and new clients are served again
        fresh = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        assert ask(fresh, key) < 2.0
        fresh.close()
        deadline = time.monotonic() + 10
        while open_files(proc.pid) > baseline + 10 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert open_files(proc.pid) <= baseline + 10
    finally:
        stop.set()
        dripping.join(5)
        for s in drippers + idle:
            s.close()
        established.close()
