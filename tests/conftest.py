"""Shared fixtures: loopback-only network, the fake upstream, real stores, a real gateway over HTTP."""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# numpy is imported here, once, before any test starts a gateway: its background workers import it lazily
# in their threads, and Hypothesis reads `numpy.ndarray` whenever numpy is in sys.modules, so a worker
# mid-import made a fuzz example fail with "partially initialized module 'numpy'"
import numpy  # noqa: F401
import pytest
import uvicorn
import yaml

from keel import config as keel_config
from keel.api.app import create_app
from keel.api.connections import uvicorn_options
from keel.keys.auth import issue_key
from keel.runtime.components import Runtime
from keel.testing import FakeUpstream

from .postgres import Databases

PG_URL = os.environ.get("KEEL_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
LOOPBACK = ("127.", "::1", "localhost")


# ---- order: the long tests first ------------------------------------------------------------

LONG_S = 120.0  # a test that declares a timeout above this is one of the suite's few minute-long tests


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that declare a long timeout run first, the rest in collection order: under `-n 2 --dist worksteal`
    one of them started near the end left the other worker idle for its minute or two."""

    def declared(item: pytest.Item) -> float:
        marker = item.get_closest_marker("timeout")
        return float(marker.args[0]) if marker is not None and marker.args else 0.0

    items.sort(key=lambda item: declared(item) <= LONG_S)  # stable: modules stay together within each group


# ---- the network: loopback only ------------------------------------------------------------


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Refuse any connection to a non-loopback address (no real provider is ever reached)."""
    real_connect = socket.socket.connect
    real_getaddrinfo = socket.getaddrinfo

    def check(host: Any) -> None:
        if isinstance(host, str) and not host.startswith(LOOPBACK) and "/" not in host:
            raise ConnectionRefusedError(f"tests may only connect to loopback, not {host!r}")

    def connect(self: socket.socket, address: Any) -> None:
        if isinstance(address, tuple):
            check(address[0])
        real_connect(self, address)

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        check(host.decode() if isinstance(host, bytes) else host)
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


@pytest.fixture(scope="session", autouse=True)
def shared_tls() -> Iterator[None]:
    """One TLS context per verify setting for every httpx client tests make (the SDKs' clients too).

    httpx builds a context per client, loading the CA bundle: 70–150 ms each on the CI machine, and the
    suite makes thousands of clients. A context is safe to share (no test speaks HTTP/2, the one thing
    that sets ALPN on it per connection); a client given its own context or certificate keeps it.
    """
    import ssl

    import httpx._transports.default as transports
    from httpx._config import create_ssl_context

    made: dict[tuple[bool, str | None, str | None], ssl.SSLContext] = {}

    def shared(verify: Any = True, cert: Any = None, trust_env: bool = True) -> ssl.SSLContext:
        if cert is not None or not isinstance(verify, bool):
            return create_ssl_context(verify=verify, cert=cert, trust_env=trust_env)
        env = (os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR")) if trust_env else (None, None)
        key = (verify, *env)
        if key not in made:
            made[key] = create_ssl_context(verify=verify, trust_env=trust_env)
        return made[key]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(transports, "create_ssl_context", shared)
        yield


# ---- outside world ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def upstream() -> Iterator[FakeUpstream]:
    up = FakeUpstream()
    up.start()
    yield up
    up.stop()


@pytest.fixture
def up(upstream: FakeUpstream) -> FakeUpstream:
    upstream.reset()
    return upstream


@pytest.fixture(scope="session")
def upstream_b() -> Iterator[FakeUpstream]:
    """A second upstream, for fallbacks that must answer from elsewhere."""
    with FakeUpstream() as fake:
        yield fake


@pytest.fixture
def b(upstream_b: FakeUpstream) -> FakeUpstream:
    upstream_b.reset()
    return upstream_b


def postgres_url_or_skip() -> str:
    import psycopg

    try:
        psycopg.connect(PG_URL, connect_timeout=3).close()
    except psycopg.OperationalError as exc:
        message = f"PostgreSQL is not reachable at {PG_URL} ({exc}); start it: pg_ctlcluster 15 main start"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return PG_URL


@pytest.fixture(scope="session")
def pg_databases() -> Iterator[Databases]:
    """This process's database for tests in the real PostgreSQL (tests/postgres.py), dropped at the end."""
    databases = Databases(postgres_url_or_skip())
    yield databases
    databases.close()


@pytest.fixture(autouse=True)
def pg_handback() -> Iterator[list[Callable[[], None]]]:
    """Gives this test's PostgreSQL schemas back after every other fixture's teardown (an autouse fixture is
    set up first, so torn down last): a gateway a test started is stopped before its store is recycled."""
    pending: list[Callable[[], None]] = []
    yield pending
    for release in reversed(pending):
        release()


@pytest.fixture
def pg_schema_url(pg_databases: Databases, pg_handback: list[Callable[[], None]]) -> str:
    """A schema of this test's own in the real PostgreSQL, every migration applied; recycled afterwards."""
    url = pg_databases.migrated()
    pg_handback.append(lambda: pg_databases.release(url))
    return url


@pytest.fixture
def pg_empty_url(pg_databases: Databases, pg_handback: list[Callable[[], None]]) -> str:
    """An empty schema of this test's own (no migration applied), for tests of the migrations."""
    url = pg_databases.empty()
    pg_handback.append(lambda: pg_databases.release(url))
    return url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def storage_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/keel.db"
    return str(request.getfixturevalue("pg_schema_url"))


@pytest.fixture
def store(storage_url: str) -> Iterator[Any]:
    """One opened store over the backend `storage_url` names (SQLite, PostgreSQL), closed after the test."""
    from keel.store.open import open_store

    opened = open_store(storage_url)
    try:
        yield opened
    finally:
        opened.close()


# ---- Redis (shared counters and breakers) ------------------------------------------------------

REDIS_URL = os.environ.get("KEEL_TEST_REDIS", "redis://127.0.0.1:6379/0")
REDIS_HOWTO = "start it: redis-server --daemonize yes --bind 127.0.0.1 --port 6379"


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The real Redis; missing → a loud failure in CI, a skip elsewhere."""
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3)
    try:
        client.ping()
    except redis.RedisError as exc:
        reason = f"Redis is unreachable at {REDIS_URL}: {exc}".strip()
        if os.environ.get("CI"):
            pytest.fail(f"{reason}\nThese tests must run on Redis in CI: {REDIS_HOWTO}")
        pytest.skip(f"{reason} ({REDIS_HOWTO})")
    finally:
        client.close()
    return REDIS_URL


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    """A key prefix of this test's own; its keys are deleted afterwards."""
    import redis

    prefix = f"keel:test:{secrets.token_hex(6)}:"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*"))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


# ---- a real gateway over HTTP ----------------------------------------------------------------

ADMIN = "admin-" + secrets.token_hex(8)


@dataclass
class Gateway:
    url: str  # http://127.0.0.1:PORT
    key: str  # a virtual key of tenant "t1"
    runtime: Runtime
    admin: str = ADMIN
    extra_keys: dict[str, str] = field(default_factory=dict)

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    def traces(self) -> list[Any]:
        """Every trace row, after the writer has flushed what is queued."""
        import time

        from keel.store.protocols import TraceQuery

        writer, deadline = self.runtime.writer, time.monotonic() + 5
        put = writer.accepted  # the records of every call answered so far (a trace is put before its answer ends)
        while writer.settled < put and time.monotonic() < deadline:
            time.sleep(0.005)
        return self.runtime.store.list_traces(TraceQuery(since=0, until=time.time() + 10, limit=1000))


def base_config(up: FakeUpstream, storage: str, tmp: Path) -> dict[str, Any]:
    return {
        "admin_token": ADMIN,
        "storage": {"url": storage},
        "traces": {"spill_dir": str(tmp / "spill"), "flush_interval_ms": 10},
        "providers": {
            "oai": {
                "type": "openai",
                "base_url": up.url + "/v1",
                "api_key": "sk-upstream-SECRET-openai",
                "region": "us",
            },
            "ant": {"type": "anthropic", "base_url": up.url + "/v1", "api_key": "sk-ant-SECRET-anthropic"},
            "sim": {"type": "simulated"},
        },
        "models": {
            "gpt-4o-mini": {"targets": [{"provider": "oai", "model": "gpt-4o-mini"}]},
            "claude": {"targets": [{"provider": "ant", "model": "claude-sonnet-4-5"}]},
            "sim": {"targets": [{"provider": "sim", "model": "simulated-1"}]},
            "embed": {"targets": [{"provider": "oai", "model": "text-embedding-3-small"}]},
        },
    }


class _Server(uvicorn.Server):
    """uvicorn in a thread, stopped promptly: uvicorn looks at `should_exit` every 100 ms, then sleeps 100 ms
    before it drains, ~0.2 s idle per gateway torn down (thousands a suite). This one looks every 5 ms and
    drains as uvicorn does: stop accepting, tell connections to shut down, wait for them and their tasks
    (within `timeout_graceful_shutdown`), then the lifespan's shutdown."""

    def install_signal_handlers(self) -> None:  # runs in a thread
        pass

    async def main_loop(self) -> None:
        tick = 0
        while not await self.on_tick(tick):  # the date header, max_requests: as often as uvicorn's loop
            tick = (tick + 1) % 864000
            for _ in range(20):
                if self.should_exit:
                    break
                await asyncio.sleep(0.005)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in self.servers:
            server.close()
        for sock in sockets or []:
            sock.close()
        for connection in list(self.server_state.connections):
            connection.shutdown()
        state = self.server_state
        try:
            async with asyncio.timeout(self.config.timeout_graceful_shutdown):
                while (state.connections or state.tasks) and not self.force_exit:
                    await asyncio.sleep(0.005)
        except TimeoutError:
            for task in state.tasks:
                task.cancel(msg="Task cancelled, timeout graceful shutdown exceeded")
        for server in self.servers:
            await server.wait_closed()
        if not self.force_exit:
            await self.lifespan.shutdown()


@pytest.fixture
def make_gateway(tmp_path: Path) -> Iterator[Any]:
    started: list[tuple[_Server, threading.Thread]] = []

    def make(raw: dict[str, Any], bounded: bool = False, extra: Sequence[Any] = ()) -> Gateway:
        """`bounded`: uvicorn runs with the connection bounds `keel serve` uses (keel.api.connections);
        `extra`: capability builders added after the runtime's own (`Runtime.build(extra=...)`)."""
        (tmp_path / "keel.yaml").write_text(yaml.safe_dump(raw))
        cfg = keel_config.load(tmp_path / "keel.yaml", env={})
        runtime = Runtime.build(cfg, extra=extra)
        runtime.store.create_tenant("t1")
        key = issue_key(runtime.store, "t1", name="test").key
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)  # TCP_NODELAY: see tests/served.py
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        options = uvicorn_options(cfg.server) if bounded else {}
        config = uvicorn.Config(create_app(runtime), log_level="warning", access_log=False, loop="asyncio", **options)
        server = _Server(config)
        thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[sock])), daemon=True)
        thread.start()
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError("gateway failed to start")
            threading.Event().wait(0.01)
        started.append((server, thread))
        return Gateway(f"http://127.0.0.1:{port}", key, runtime)

    yield make
    for server, thread in started:
        server.should_exit = True
        thread.join(15)


@pytest.fixture
def gateway(make_gateway: Any, up: FakeUpstream, storage_url: str, tmp_path: Path) -> Gateway:
    return make_gateway(base_config(up, storage_url, tmp_path))  # type: ignore[no-any-return]


# ---- PostgreSQL with pgvector (the semantic cache's shared index) -------------------------------

PGSERVER_HOWTO = "install it: pip install pgserver (a PostgreSQL 16 with pgvector, started in a temp dir)"


@pytest.fixture(scope="session")
def pgvector_url() -> Iterator[str]:
    """A real PostgreSQL with pgvector from `pgserver`; it failing → a loud failure in CI, a skip elsewhere.

    Its data directory is straight under the temp dir: run as root, pgserver starts PostgreSQL as its
    own user, who cannot enter pytest's private tmp_path. The extension lives in `public`, so each
    test's own schema (`pgvector_schema_url`) can use it.
    """
    import shutil
    import tempfile
    import warnings

    import psycopg

    pgdata = tempfile.mkdtemp(prefix="keel-pgserver-")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # platformdirs warns when XDG_RUNTIME_DIR is unset
            import pgserver

            server = pgserver.get_server(pgdata, cleanup_mode="stop")
            uri = server.get_uri()
        with psycopg.connect(uri, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector SCHEMA public")
    except Exception as exc:
        shutil.rmtree(pgdata, ignore_errors=True)
        reason = f"PostgreSQL with pgvector (pgserver) did not start: {exc!r}"
        if os.environ.get("CI"):
            pytest.fail(f"{reason}\nThese tests must run on pgvector in CI: {PGSERVER_HOWTO}")
        pytest.skip(f"{reason} ({PGSERVER_HOWTO})")
    yield uri
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        server.cleanup()
    shutil.rmtree(pgdata, ignore_errors=True)


@pytest.fixture
def pgvector_schema_url(pgvector_url: str) -> Iterator[str]:
    """A fresh schema in the pgvector server (then `public`, for the extension), dropped afterwards."""
    import psycopg

    schema = "keel_test_" + secrets.token_hex(4)
    with psycopg.connect(pgvector_url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in pgvector_url else "?"
    yield f"{pgvector_url}{sep}options=-csearch_path%3D{schema}%2Cpublic"
    with psycopg.connect(pgvector_url, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA {schema} CASCADE")


def until(check: Callable[[], bool], timeout: float = 30.0) -> bool:
    """Poll `check` every 50 ms until it holds (True) or `timeout` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True
