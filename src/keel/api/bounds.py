"""Bounds on what a request may carry into the app: body size (413) and JSON nesting depth (400).

`read_body` refuses a declared Content-Length over the cap before reading a byte, and stops reading
a chunked body the moment it passes the cap, so a body is never held whole beyond `max_body_bytes`.
`check_depth` refuses JSON nested deeper than `max_json_depth` (a 300-level `metadata` would later
break the trace record's serialisation); it costs two byte counts on a typical body and walks the
parsed value only when the body holds more brackets than the limit. Connection-level bounds (header
size and count, read timeouts, the connection cap) live in `keel.api.connections`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from starlette.requests import ClientDisconnect, Request

from keel.config import ServerConfig
from keel.errors import InvalidRequest, RequestError


class TooLarge(RequestError):
    status = 413
    code = "request_too_large"


class ClientGone(RequestError):
    """The client stopped sending its body (it disconnected, or was cut at `server.body_timeout_s`)."""

    status = 408
    code = "request_timeout"


@dataclass(frozen=True, slots=True)
class Bounds:
    max_body_bytes: int
    max_json_depth: int

    @classmethod
    def of(cls, server: ServerConfig) -> Bounds:
        return cls(server.max_body_bytes, server.max_json_depth)


def too_large(limit: int) -> TooLarge:
    return TooLarge(f"The request body is larger than {limit} bytes (server.max_body_bytes); send a smaller request.")


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, or TooLarge as soon as it is known to pass `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_large(limit)
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise too_large(limit)
            chunks.append(chunk)
    except ClientDisconnect:
        raise ClientGone("The client stopped sending the request body.") from None
    body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    request._body = body  # Starlette's own cache: a later `request.body()` returns it
    return body


def check_depth(raw: bytes, value: Any, limit: int) -> None:
    """Raise InvalidRequest when `value` (parsed from `raw`) nests arrays and objects deeper than `limit`."""
    if raw.count(b"{") + raw.count(b"[") <= limit:  # fewer openers than the limit: nothing can nest deeper
        return
    if type(value) is dict:
        for name, item in value.items():
            if _deeper(item, limit - 1):
                raise InvalidRequest(deep_message(limit, f"in '{name}'"), str(name))
    elif _deeper(value, limit):
        raise InvalidRequest(deep_message(limit, "in the body"), None)


def deep_message(limit: int, where: str) -> str:
    return f"The request body nests arrays and objects deeper than {limit} levels ({where}; server.max_json_depth)."


def _deeper(value: Any, limit: int) -> bool:
    """Does `value` hold arrays/objects nested more than `limit` levels (itself counting as one)?"""
    t = type(value)
    if t is not dict and t is not list:
        return False
    stack = [(value, 1)]
    pop, push = stack.pop, stack.append
    while stack:
        node, depth = pop()
        if depth > limit:
            return True
        for item in node.values() if type(node) is dict else node:
            t = type(item)
            if t is dict or t is list:
                push((item, depth + 1))
    return False
