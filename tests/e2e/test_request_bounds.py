"""Request bounds at the edge, over real sockets to a real uvicorn (with `keel serve`'s connection bounds).

Body size (413, from Content-Length before a byte of body, and while a chunked body arrives), JSON
nesting depth (400 naming the field), header size and count (431), and authentication before the
body is read (401 for a stranger's 15 MB upload that was never sent). Errors come in the caller's
format: OpenAI's on /v1/* and /api/*, Anthropic's on /v1/messages.
"""

from __future__ import annotations

import json
import select
import socket
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from keel.testing import FakeUpstream
from tests.conftest import Gateway, base_config

MB = 2**20
CHAT = {"model": "sim", "messages": [{"role": "user", "content": "hi"}]}
MESSAGES = {"model": "sim", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
def gateway(make_gateway: Any, up: FakeUpstream, tmp_path: Path) -> Gateway:
    raw = base_config(up, f"sqlite:///{tmp_path}/keel.db", tmp_path)
    raw["server"] = {"max_body_bytes": 1 * MB, "max_json_depth": 64, "max_headers": 50, "max_header_bytes": 16384}
    return make_gateway(raw, bounded=True)  # type: ignore[no-any-return]


# ---- a raw HTTP/1.1 client: what a hostile or careless client sends, byte for byte -----------------


def connect(gw: Gateway) -> socket.socket:
    host, port = gw.url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    return sock


def head(path: str, headers: dict[str, str], method: str = "POST") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "host: 127.0.0.1", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def response(sock: socket.socket) -> tuple[int, dict[str, str], Any]:
    """Read one response (the socket's timeout is the deadline: no answer is a failure)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before a response: {data!r}"
        data += chunk
    top, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = top.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "connection closed mid-response"
        body += chunk
    return int(status_line.split()[1]), headers, json.loads(body) if body else None


def openai_error(body: Any) -> dict[str, Any]:
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, body
    return body["error"]  # type: ignore[no-any-return]


def anthropic_error(body: Any) -> dict[str, Any]:
    assert body["type"] == "error" and set(body["error"]) == {"type", "message"}, body
    return body["error"]  # type: ignore[no-any-return]


def nested(depth: int) -> Any:
    value: Any = "deep"
    for _ in range(depth):
        value = {"a": value}
    return value


# ---- body size -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "auth", "anthropic"),
    [
        ("/v1/chat/completions", "authorization: Bearer {key}", False),
        ("/v1/embeddings", "authorization: Bearer {key}", False),
        ("/v1/messages", "x-api-key: {key}", True),
        ("/api/limits/tenant/t1", "authorization: Bearer {admin}", False),
    ],
)
def test_a_declared_body_over_the_cap_is_refused_before_it_is_sent(
    gateway: Gateway, path: str, auth: str, anthropic: bool
) -> None:
    name, _, value = auth.format(key=gateway.key, admin=gateway.admin).partition(": ")
    method = "PUT" if path.startswith("/api") else "POST"
    with connect(gateway) as sock:
        headers = {name: value, "content-type": "application/json", "content-length": str(30 * MB)}
        sock.sendall(head(path, headers, method))  # and not one byte of the 30 MB
        status, _, body = response(sock)
    assert status == 413
    if anthropic:
        assert anthropic_error(body)["type"] == "request_too_large"
    else:
        error = openai_error(body)
        assert error["code"] == "request_too_large" and "server.max_body_bytes" in error["message"]


def test_a_chunked_body_is_cut_once_it_passes_the_cap(gateway: Gateway) -> None:
    chunk = b"x" * 65536
    frame = b"%x\r\n" % len(chunk) + chunk + b"\r\n"
    with connect(gateway) as sock:
        headers = {"authorization": f"Bearer {gateway.key}", "transfer-encoding": "chunked"}
        sock.sendall(head("/v1/chat/completions", headers))
        for _ in range(MB // len(chunk) + 2):  # just past the cap, and never the last chunk
            sock.sendall(frame)
        status, _, body = response(sock)
    assert status == 413 and openai_error(body)["code"] == "request_too_large"


def test_a_route_that_reads_its_body_raw_is_bounded_too(gateway: Gateway) -> None:
    """The dashboard's login form is read by Starlette itself: the protocol cuts its body at the cap."""
    chunk = b"x" * 65536
    frame = b"%x\r\n" % len(chunk) + chunk + b"\r\n"
    with connect(gateway) as sock:
        sock.sendall(
            head("/ui/login", {"content-type": "application/x-www-form-urlencoded", "transfer-encoding": "chunked"})
        )
        for _ in range(MB // len(chunk) + 2):
            sock.sendall(frame)
        status, _, body = response(sock)
    assert status == 413 and openai_error(body)["code"] == "request_too_large"


def test_a_body_within_the_cap_is_served(gateway: Gateway) -> None:
    big = {**CHAT, "messages": [{"role": "user", "content": "x" * (MB - 4096)}]}
    r = httpx.post(gateway.base_url + "/chat/completions", json=big, headers={"authorization": f"Bearer {gateway.key}"})
    assert r.status_code == 200, r.text


# ---- JSON nesting depth --------------------------------------------------------------------------------


def deep_json(depth: int) -> str:
    return '{"a": ' * depth + '"deep"' + "}" * depth


@pytest.mark.parametrize(
    ("field", "param"),
    [
        ('"metadata": ' + deep_json(300), "metadata"),  # the body that once stopped trace writing for good
        ('"some_new_field": ' + deep_json(300), "some_new_field"),  # passed through to upstreams untouched
        (
            '"messages": [{"role": "user", "content": [{"type": "text", "text": "hi", "x": ' + deep_json(300) + "}]}]",
            "messages",
        ),
        ('"metadata": ' + deep_json(2000), None),  # past orjson's own limit too
    ],
)
def test_json_nested_too_deep_is_a_400_naming_the_field(gateway: Gateway, field: str, param: str | None) -> None:
    body = '{"model": "sim", "messages": [{"role": "user", "content": "hi"}], ' + field + "}"
    if param == "messages":
        body = '{"model": "sim", ' + field + "}"
    r = httpx.post(
        gateway.base_url + "/chat/completions",
        content=body,
        headers={"authorization": f"Bearer {gateway.key}", "content-type": "application/json"},
    )
    assert r.status_code == 400, r.text
    error = openai_error(r.json())
    assert error["type"] == "invalid_request_error" and error["param"] == param
    assert "deeper than 64 levels" in error["message"] and "server.max_json_depth" in error["message"]
    ready = httpx.get(gateway.url + "/readyz").json()
    assert ready["trace_writer"] == "ok" and ready["trace_writer_restarts"] == 0


def test_json_depth_on_every_json_route(gateway: Gateway) -> None:
    deep = nested(100)
    key = {"authorization": f"Bearer {gateway.key}"}
    r = httpx.post(gateway.base_url + "/embeddings", json={"model": "embed", "input": "hi", "extra": deep}, headers=key)
    assert r.status_code == 400 and openai_error(r.json())["param"] == "extra"
    r = httpx.post(
        gateway.base_url + "/messages", json={**MESSAGES, "metadata": deep}, headers={"x-api-key": gateway.key}
    )
    assert r.status_code == 400, r.text
    error = anthropic_error(r.json())
    assert error["type"] == "invalid_request_error" and "deeper than 64" in error["message"]
    admin = {"authorization": f"Bearer {gateway.admin}"}
    r = httpx.put(gateway.url + "/api/limits/tenant/t1", json={"limits": deep}, headers=admin)
    assert r.status_code == 400 and openai_error(r.json())["param"] == "limits"
    r = httpx.post(gateway.url + "/api/tenants", json={"name": "t2", "regions": deep}, headers=admin)
    assert r.status_code == 400 and openai_error(r.json())["param"] == "regions"


def test_nesting_within_the_limit_is_served(gateway: Gateway) -> None:
    body = {**CHAT, "metadata": {"k": "v"}, "some_new_field": nested(60)}
    r = httpx.post(
        gateway.base_url + "/chat/completions", json=body, headers={"authorization": f"Bearer {gateway.key}"}
    )
    assert r.status_code == 200, r.text


# ---- headers --------------------------------------------------------------------------------------------


def test_too_many_headers_is_431(gateway: Gateway) -> None:
    headers = {"authorization": f"Bearer {gateway.key}", **{f"x-h{i}": "v" for i in range(60)}}
    with connect(gateway) as sock:
        sock.sendall(head("/v1/chat/completions", headers))
        status, _, body = response(sock)
    assert status == 431
    error = openai_error(body)
    assert error["code"] == "request_header_fields_too_large" and "server.max_headers" in error["message"]


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/messages"])
def test_headers_too_large_is_431_in_the_callers_format(gateway: Gateway, path: str) -> None:
    with connect(gateway) as sock:
        sock.sendall(head(path, {"x-api-key": gateway.key, "x-keel-tags": "a=" + "b" * 20000}))
        status, _, body = response(sock)
    assert status == 431
    message = (anthropic_error(body) if path == "/v1/messages" else openai_error(body))["message"]
    assert "server.max_header_bytes" in message


def test_an_endless_header_is_cut_before_it_ends(gateway: Gateway) -> None:
    """One header that never ends: refused once past the cap, not buffered until memory runs out."""
    with connect(gateway) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nx-keel-tags: a=")
        sent = 0
        while not select.select([sock], [], [], 0)[0]:  # until the server answers
            assert sent < 8 * MB, "the server buffered 8 MB of one header"
            sock.sendall(b"b" * 65536)
            sent += 65536
            time.sleep(0.001)
        status, _, body = response(sock)
    assert status == 431 and "server.max_header_bytes" in openai_error(body)["message"]


# ---- authentication before the body ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "auth", "anthropic"),
    [
        ("/v1/chat/completions", {"authorization": "Bearer sk-keel-wrong"}, False),
        ("/v1/chat/completions", {}, False),
        ("/v1/embeddings", {"authorization": "Bearer sk-keel-wrong"}, False),
        ("/v1/messages", {"x-api-key": "sk-keel-wrong"}, True),
    ],
)
def test_a_stranger_gets_401_before_sending_a_large_body(
    gateway: Gateway, path: str, auth: dict[str, str], anthropic: bool
) -> None:
    before = httpx.get(gateway.url + "/readyz").json()["unauthenticated"]
    with connect(gateway) as sock:
        headers = {**auth, "content-type": "application/json", "content-length": str(15 * MB)}
        sock.sendall(head(path, headers) + b'{"model": "sim", "messages": [')  # the rest never comes
        status, _, body = response(sock)
    assert status == 401
    if anthropic:
        assert anthropic_error(body)["type"] == "authentication_error"
    else:
        assert openai_error(body)["code"] == "invalid_api_key"
    assert httpx.get(gateway.url + "/readyz").json()["unauthenticated"] == before + 1
    assert gateway.traces() == []  # refused before auth: counted, not traced


def test_a_known_key_is_served_and_traced_once(gateway: Gateway) -> None:
    for headers, path, body in [
        ({"authorization": f"Bearer {gateway.key}"}, "/chat/completions", CHAT),
        ({"x-api-key": gateway.key}, "/messages", MESSAGES),
    ]:
        r = httpx.post(gateway.base_url + path, json=body, headers=headers)
        assert r.status_code == 200, r.text
    traces = gateway.traces()
    assert len(traces) == 2 and {t.tenant for t in traces} == {"t1"} and all(t.key_id for t in traces)
