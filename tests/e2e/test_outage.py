"""A PostgreSQL outage under traffic: every request is answered, every trace is written once it ends.

The gateway's storage runs through a `TcpProxy` this test owns, in front of the real PostgreSQL (never
stopped): `refuse()` is a database that is down, `blackhole()` a partition, where connections and
queries hang (the nastier one). Keys expire from the cache within a second here, so through the outage
they are served from their last known state; the traces wait in the writer (or its spill files) and
reach the database when it returns. Revocations seen before the outage still apply, an unknown key is
told 503 with Retry-After (never a hang, never a false 401), a state older than `server.key_stale_s`
is refused, and the background pollers catch up with changes made during the outage. A cache whose
file is locked by another process is a miss, not a wait.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from keel.keys.auth import issue_key
from keel.limits.book import Subject
from keel.testing import FakeUpstream
from keel.testing.proxy import TcpProxy
from tests.conftest import ADMIN, Gateway, base_config, until
from tests.e2e.test_cache_e2e import ask, cache_config, settle

BODY = {"model": "sim", "messages": [{"role": "user", "content": "hi"}]}
Make = Callable[[dict[str, Any]], Gateway]


@pytest.fixture
def db(pg_schema_url: str) -> Iterator[tuple[str, TcpProxy]]:
    """The real database's URL, and a proxy in front of it (set up before, torn down after, the gateway)."""
    with TcpProxy.in_front_of(pg_schema_url) as proxy:
        yield pg_schema_url, proxy
        proxy.restore()  # the gateway drains its traces on the way out


def gateway_behind(
    db: tuple[str, TcpProxy], make_gateway: Make, up: FakeUpstream, tmp: Path, **server: float
) -> Gateway:
    url, proxy = db
    raw = base_config(up, proxy.url(url), tmp)
    raw["server"] = {"key_cache_ttl_s": 1.0, "revocation_poll_s": 0.5, **server}
    return make_gateway(raw)


WAIT_S = 5.0  # a call not answered within this is a hang: the request path's own waits are milliseconds


def chat(gw: Gateway, key: str, timeout: float = WAIT_S) -> httpx.Response:
    return httpx.post(gw.base_url + "/chat/completions", json=BODY, headers=_auth(key), timeout=timeout)


def _auth(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def rows(url: str) -> int:
    """Trace rows, read from the database directly (not through the proxy)."""
    with psycopg.connect(url, connect_timeout=5) as conn:
        row = conn.execute("SELECT count(*) FROM traces").fetchone()
    return int(row[0]) if row else 0


class Load:
    """`rate` chat calls per second for `seconds`, each on its own schedule, from a thread; statuses kept."""

    def __init__(self, gw: Gateway, key: str, rate: float, seconds: float) -> None:
        self.statuses: list[int | str] = []
        self._args = (gw, key, rate, seconds)
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._thread.join(60)

    async def _run(self) -> None:
        gw, key, rate, seconds = self._args
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=50)
        async with httpx.AsyncClient(base_url=gw.base_url, headers=_auth(key), timeout=WAIT_S, limits=limits) as c:

            async def one() -> int | str:
                try:
                    return (await c.post("/chat/completions", json=BODY)).status_code
                except httpx.HTTPError as exc:
                    return type(exc).__name__

            loop = asyncio.get_running_loop()
            start, tasks = loop.time(), []
            for i in range(int(rate * seconds)):
                await asyncio.sleep(max(0.0, start + i / rate - loop.time()))
                tasks.append(asyncio.ensure_future(one()))
            self.statuses = list(await asyncio.gather(*tasks))


def outage(db: tuple[str, TcpProxy], gw: Gateway, mode: str, seconds: float, rate: float) -> list[int | str]:
    """`rate` calls a second through `seconds` of outage (with 2 s of traffic either side); their statuses."""
    _, proxy = db
    assert chat(gw, gw.key).status_code == 200  # the key is known before the outage
    with Load(gw, gw.key, rate, seconds + 4) as load:
        time.sleep(2)
        proxy.refuse() if mode == "refuse" else proxy.blackhole()
        time.sleep(seconds)  # the outage itself: traffic flows meanwhile
        proxy.restore()
    return load.statuses


def assert_every_call_answered_and_traced(db: tuple[str, TcpProxy], gw: Gateway, statuses: list[int | str]) -> None:
    url, _ = db
    failed = {s: statuses.count(s) for s in set(statuses) if s != 200}
    assert not failed, f"{len(statuses)} calls, not answered 200: {failed}"
    auth = gw.runtime.authenticator.stats
    assert auth.stale > 0 and auth.unavailable == 0, auth  # keys expired during the outage and served from memory
    expected = len(statuses) + 1  # and the warm-up call
    assert until(lambda: rows(url) == expected, timeout=60), f"{rows(url)} trace rows of {expected} calls"


@pytest.mark.timeout(240)
def test_a_90_second_partition_at_100_calls_a_second_answers_every_call_and_writes_every_trace(
    db: tuple[str, TcpProxy], make_gateway: Make, up: FakeUpstream, tmp_path: Path
) -> None:
    gw = gateway_behind(db, make_gateway, up, tmp_path)
    statuses = outage(db, gw, "blackhole", seconds=90, rate=100)
    assert len(statuses) == 9400
    assert_every_call_answered_and_traced(db, gw, statuses)


@pytest.mark.parametrize("mode", ["refuse", "blackhole"])
def test_a_short_outage_answers_every_call_and_writes_every_trace(
    mode: str, db: tuple[str, TcpProxy], make_gateway: Make, up: FakeUpstream, tmp_path: Path
) -> None:
    gw = gateway_behind(db, make_gateway, up, tmp_path)
    statuses = outage(db, gw, mode, seconds=8, rate=50)
    assert_every_call_answered_and_traced(db, gw, statuses)
    assert gw.runtime.authenticator.stats.failed_lookups + gw.runtime.authenticator.stats.failed_polls > 0 or (
        mode == "blackhole"  # a partition fails nothing: reads hang until the link comes back
    )


def _key(gw: Gateway, tenant: str = "t1") -> tuple[str, str]:
    issued = issue_key(gw.runtime.store, tenant, name="outage")
    return issued.key, issued.row.id


@pytest.mark.parametrize("mode", ["refuse", "blackhole"])
def test_during_an_outage_revoked_keys_stay_refused_and_unknown_keys_get_503(
    mode: str, db: tuple[str, TcpProxy], make_gateway: Make, up: FakeUpstream, tmp_path: Path
) -> None:
    gw = gateway_behind(db, make_gateway, up, tmp_path)
    (revoked, revoked_id), (unseen, _) = _key(gw), _key(gw)
    assert chat(gw, revoked).status_code == 200 and chat(gw, gw.key).status_code == 200
    r = httpx.post(gw.url + f"/api/keys/{revoked_id}/revoke", headers=_auth(ADMIN))
    assert r.status_code == 200
    assert until(lambda: chat(gw, revoked).status_code == 401, timeout=5)  # the poller has applied it
    _, proxy = db
    proxy.refuse() if mode == "refuse" else proxy.blackhole()
    try:
        time.sleep(1.5)  # past key_cache_ttl_s: what follows is served from the last known state
        good, gone, new = chat(gw, gw.key), chat(gw, revoked), chat(gw, unseen)
        assert good.status_code == 200
        assert gone.status_code == 401 and "revoked" in gone.json()["error"]["message"]
        assert new.status_code == 503 and new.headers["retry-after"] == "1"
        assert new.json()["error"]["code"] == "service_unavailable"
        assert "key store is unreachable" in new.json()["error"]["message"]
        ready = lambda: httpx.get(gw.url + "/readyz", timeout=WAIT_S)  # noqa: E731
        assert until(lambda: ready().json().get("store") == "unreachable", timeout=15)
        assert ready().status_code == 200  # still serving: keep it in the load balancer's rotation
    finally:
        proxy.restore()
    assert until(lambda: chat(gw, unseen).status_code == 200, timeout=30)  # known once the store answers


def test_known_keys_are_refused_once_their_state_is_older_than_key_stale_s(
    db: tuple[str, TcpProxy], make_gateway: Make, up: FakeUpstream, tmp_path: Path
) -> None:
    gw = gateway_behind(db, make_gateway, up, tmp_path, key_stale_s=3.0)
    assert chat(gw, gw.key).status_code == 200
    _, proxy = db
    proxy.refuse()
    try:
        time.sleep(1.5)  # past key_cache_ttl_s
        assert chat(gw, gw.key).status_code == 200  # within the stale window
        assert until(lambda: chat(gw, gw.key).status_code == 503, timeout=15)
        ready = httpx.get(gw.url + "/readyz")
        assert ready.status_code == 503 and "key_stale_s" in ready.json()["reason"]
    finally:
        proxy.restore()
    assert until(lambda: chat(gw, gw.key).status_code == 200, timeout=30)


@pytest.mark.parametrize("mode", ["refuse", "blackhole"])
def test_the_pollers_catch_up_with_changes_made_during_the_outage(
    mode: str, db: tuple[str, TcpProxy], make_gateway: Make, up: FakeUpstream, tmp_path: Path
) -> None:
    gw = gateway_behind(db, make_gateway, up, tmp_path)
    url, proxy = db
    key, key_id = _key(gw)
    assert chat(gw, key).status_code == 200 and chat(gw, gw.key).status_code == 200
    proxy.refuse() if mode == "refuse" else proxy.blackhole()
    try:
        with psycopg.connect(url, autocommit=True) as conn:  # another process, on a link that works
            conn.execute("UPDATE api_keys SET revoked_at = %s WHERE id = %s", (time.time(), key_id))
            conn.execute(
                "INSERT INTO limit_overrides (scope, subject, limits, updated_at) VALUES ('tenant', 't1', %s, %s)",
                ('{"rpm": 1}', time.time()),
            )
        time.sleep(1.5)
        assert chat(gw, key).status_code == 200  # the gateway cannot know yet: last known state
    finally:
        proxy.restore()
    assert until(lambda: chat(gw, key).status_code == 401, timeout=30)
    t1 = Subject("t1", None, None, None, None)
    assert until(lambda: gw.runtime.limits_book().rules_for(t1) == [("tenant=t1", "rpm", 1.0)], timeout=30)


# ---- the cache on the request path ---------------------------------------------------------------


def test_a_locked_cache_file_is_a_miss_not_a_wait(make_gateway: Make, up: FakeUpstream, tmp_path: Path) -> None:
    gw = make_gateway(cache_config(up, tmp_path, f"sqlite:///{tmp_path}/cache.db"))
    ask(gw, "kept?")
    settle(gw)
    assert ask(gw, "kept?")[1]["x-keel-cache"] == "hit"
    lock = sqlite3.connect(tmp_path / "cache.db", isolation_level=None)
    lock.execute("BEGIN IMMEDIATE")  # another process holds the file's write lock
    try:
        ask(gw, "new?")  # a miss: keeping its answer now waits on the lock, in the cache's one thread
        text, headers = ask(gw, "kept?")  # its lookup queues behind that write: given up, a miss
        assert headers["x-keel-cache"] == "miss" and text == "echo: kept?"
        stage = gw.runtime.cache_stage
        assert stage is not None and stage.counts.store_errors >= 1
    finally:
        lock.execute("ROLLBACK")
        lock.close()
