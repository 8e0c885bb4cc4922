"""A real HTTP service for tools to call (stdlib, on 127.0.0.1): `/echo` answers with the query and the
headers it got (as a careless API does, secrets included); `/pay` counts side effects per Idempotency-Key
and in total; `/count` reports them; `POST /hang` sets `entered` and answers only once `release` is set."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse


class ToolService:
    def __init__(self) -> None:
        self.payments: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.url = ""
        self.entered = threading.Event()
        self.release = threading.Event()


@contextmanager
def tool_service() -> Iterator[ToolService]:
    svc = ToolService()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _send(self, body: Any, status: int = 200) -> None:
            raw = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def do_GET(self) -> None:
            url = urlparse(self.path)
            if url.path == "/echo":
                self._send({"query": parse_qs(url.query), "headers": dict(self.headers.items())})
            elif url.path == "/count":
                with svc.lock:
                    self._send({"payments": len(svc.payments)})
            else:
                self._send({"error": "no such path"}, 404)

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length) or b"{}")
            if urlparse(self.path).path == "/hang":
                svc.entered.set()
                svc.release.wait(120)
                with contextlib.suppress(OSError):  # its caller may be gone (killed mid-call)
                    self._send({"released": True})
                return
            with svc.lock:
                svc.payments.append({"body": body, "key": self.headers.get("Idempotency-Key")})
                n = len(svc.payments)
            self._send({"paid": body.get("amount"), "receipt": f"r-{n}"})

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    svc.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield svc
    finally:
        svc.release.set()
        server.shutdown()
        server.server_close()
        thread.join(5)
