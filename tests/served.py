"""One real gateway for a whole test module: uvicorn on 127.0.0.1 in a thread, as conftest's
`make_gateway` builds it, for suites that send hundreds of requests to one server (malformed input,
the fuzz suite). A fresh PostgreSQL schema per server when asked for PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import uvicorn
import yaml

from keel import config as keel_config
from keel.api.app import create_app
from keel.keys.auth import issue_key
from keel.runtime.components import Runtime

from .conftest import Gateway, _Server, postgres_url_or_skip


@contextlib.contextmanager
def pg_schema() -> Iterator[str]:
    import psycopg

    base = postgres_url_or_skip()
    schema = "keel_test_" + secrets.token_hex(4)
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in base else "?"
    try:
        yield f"{base}{sep}options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


@contextlib.contextmanager
def storage(kind: str, tmp: Path) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite:///{tmp}/keel.db"
    else:
        with pg_schema() as url:
            yield url


@contextlib.contextmanager
def serve(raw: dict[str, Any], tmp: Path) -> Iterator[Gateway]:
    (tmp / "keel.yaml").write_text(yaml.safe_dump(raw))
    runtime = Runtime.build(keel_config.load(tmp / "keel.yaml", env={}))
    runtime.store.create_tenant("t1")
    key = issue_key(runtime.store, "t1", name="test").key
    # proto IPPROTO_TCP: asyncio sets TCP_NODELAY only on sockets that say so, and without it every
    # keep-alive answer written in two parts waits ~40 ms for the client's delayed ACK
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = _Server(uvicorn.Config(create_app(runtime), log_level="warning", access_log=False, loop="asyncio"))
    thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[sock])), daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("gateway failed to start")
        threading.Event().wait(0.01)
    try:
        yield Gateway(f"http://127.0.0.1:{port}", key, runtime)
    finally:
        server.should_exit = True
        thread.join(15)
