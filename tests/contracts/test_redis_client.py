"""Keel's own Redis client (keel.store.redis_client) against the real Redis at 127.0.0.1:6379.

Outages go through a `TcpProxy` the test owns (refused, black-holed, restored); the shared Redis is
never stopped. Keys live under a per-test prefix (the `redis_prefix` fixture deletes them).
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Awaitable, Callable

import pytest
import redis

from keel.store.protocols import BreakerPolicy, Charge, LimitStoreUnavailable, Permit
from keel.store.redis import client as redis_client
from keel.store.redis.breakers import RedisBreakers
from keel.store.redis.client import (
    PyReader,
    Redis,
    RedisTimeout,
    RedisUnreachable,
    ReplyError,
    Script,
    pack,
    pack_py,
)
from keel.store.redis.limits import RedisLimits
from keel.testing.proxy import TcpProxy

T0 = 1_700_000_000.25


def run(body: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(body())  # type: ignore[arg-type]


def test_concurrent_commands_share_a_few_connections_and_get_their_own_replies(
    redis_url: str, redis_prefix: str
) -> None:
    async def body() -> None:
        client = Redis(redis_url, connections=2)
        try:
            n = 500
            await asyncio.gather(*(client.execute("SET", f"{redis_prefix}{i}", f"v{i}") for i in range(n)))
            got = await asyncio.gather(*(client.execute("GET", f"{redis_prefix}{i}") for i in range(n)))
            assert got == [f"v{i}" for i in range(n)]
            assert len(client._bind()._conns) <= 2
            assert await client.pipeline([("INCR", f"{redis_prefix}c"), ("INCRBY", f"{redis_prefix}c", 41)]) == [1, 42]
        finally:
            await client.aclose()

    run(body)


def test_an_error_reply_raises_and_the_connection_goes_on(redis_url: str, redis_prefix: str) -> None:
    async def body() -> None:
        client = Redis(redis_url)
        try:
            await client.execute("SET", f"{redis_prefix}s", "text")
            calls = [client.execute("INCR", f"{redis_prefix}s"), client.execute("GET", f"{redis_prefix}s")]
            wrong, fine = await asyncio.gather(*calls, return_exceptions=True)
            assert isinstance(wrong, ReplyError) and "not an integer" in str(wrong)
            assert fine == "text"
            with pytest.raises(ReplyError):
                await client.pipeline([("GET", f"{redis_prefix}s"), ("INCR", f"{redis_prefix}s")])
            assert await client.execute("EXISTS", f"{redis_prefix}s") == 1
        finally:
            await client.aclose()

    run(body)


def test_a_script_redis_does_not_know_is_sent_whole_once(redis_url: str, redis_prefix: str) -> None:
    script = Script(f"-- {secrets.token_hex(8)}\nreturn {{KEYS[1], ARGV[1], redis.call('INCR', KEYS[1])}}")
    sync = redis.Redis.from_url(redis_url)

    async def body() -> None:
        client = Redis(redis_url)
        try:
            assert sync.script_exists(script.sha) == [False]
            assert await client.evalsha(script, [f"{redis_prefix}k"], ["a"]) == [f"{redis_prefix}k", "a", 1]
            assert sync.script_exists(script.sha) == [True]  # EVAL loaded it: EVALSHA from now on
            assert await client.evalsha(script, [f"{redis_prefix}k"], [2.5]) == [f"{redis_prefix}k", "2.5", 2]
        finally:
            await client.aclose()

    try:
        run(body)
    finally:
        sync.close()


def test_bytes_stay_bytes_without_decoding(redis_url: str, redis_prefix: str) -> None:
    async def body() -> None:
        client = Redis(redis_url, decode=False)
        try:
            value = bytes(range(256)) * 1000  # 256 KB, arriving in several reads
            await client.execute("SET", f"{redis_prefix}b", value)
            assert await client.execute("GET", f"{redis_prefix}b") == value
            assert await client.execute("GET", f"{redis_prefix}missing") is None
        finally:
            await client.aclose()

    run(body)


def test_database_user_and_password_come_from_the_url(redis_url: str, redis_prefix: str) -> None:
    user, password = f"keel-test-{secrets.token_hex(4)}", "p@ss:w/rd"
    sync = redis.Redis.from_url(redis_url, decode_responses=True)
    sync.acl_setuser(user, enabled=True, passwords=[f"+{password}"], keys=["*"], commands=["+@all"])
    on_db_3 = redis.Redis.from_url(redis_url.rsplit("/", 1)[0] + "/3", decode_responses=True)
    host = redis_url.split("//", 1)[1].split("/", 1)[0]

    async def body() -> None:
        client = Redis(f"redis://{user}:p%40ss%3Aw%2Frd@{host}/3")
        wrong = Redis(f"redis://{user}:nope@{host}/0")
        try:
            assert await client.execute("SET", f"{redis_prefix}db", "three") == "OK"
            assert await client.execute("ACL", "WHOAMI") == user
            with pytest.raises(ReplyError):
                await wrong.execute("PING")
        finally:
            await client.aclose()
            await wrong.aclose()

    try:
        run(body)
        assert on_db_3.get(f"{redis_prefix}db") == "three"
    finally:
        on_db_3.delete(f"{redis_prefix}db")
        sync.acl_deluser(user)
        sync.close()
        on_db_3.close()


def test_a_refused_link_fails_at_once_and_heals_when_it_returns(redis_url: str) -> None:
    async def body(proxy: TcpProxy) -> None:
        client = Redis(proxy.url(redis_url), timeout_s=0.3, connect_timeout_s=0.3)
        try:
            assert await client.execute("PING") == "PONG"
            proxy.refuse()
            started = time.monotonic()
            with pytest.raises(RedisUnreachable):
                await client.execute("PING")
            with pytest.raises(RedisUnreachable):
                await client.execute("PING")
            assert time.monotonic() - started < 0.3
            proxy.restore()
            assert await client.execute("PING") == "PONG"
        finally:
            await client.aclose()

    with TcpProxy.in_front_of(redis_url) as proxy:
        asyncio.run(body(proxy))


def test_a_black_hole_times_out_every_command_in_flight_and_heals(redis_url: str) -> None:
    async def body(proxy: TcpProxy) -> None:
        client = Redis(proxy.url(redis_url), timeout_s=0.3, connect_timeout_s=0.3)
        try:
            assert await client.execute("PING") == "PONG"
            proxy.blackhole()
            started = time.monotonic()
            outcomes = await asyncio.gather(*(client.execute("PING") for _ in range(20)), return_exceptions=True)
            assert all(isinstance(o, RedisTimeout) for o in outcomes), outcomes
            assert 0.3 <= time.monotonic() - started < 0.6
            with pytest.raises(RedisTimeout):  # a new connection is accepted, then nothing: its AUTH-less PING hangs
                await client.execute("PING")
            proxy.restore()
            assert await client.execute("PING") == "PONG"
        finally:
            await client.aclose()

    with TcpProxy.in_front_of(redis_url) as proxy:
        asyncio.run(body(proxy))


def test_a_reply_waiting_while_the_loop_was_busy_is_not_a_timeout(redis_url: str) -> None:
    async def body() -> None:
        client = Redis(redis_url, timeout_s=0.1)
        try:
            await client.execute("PING")
            call = asyncio.ensure_future(client.execute("PING"))
            await asyncio.sleep(0)  # the call runs and queues its write for the next loop turn...
            await asyncio.sleep(0)  # ...where it is written, just before this
            time.sleep(0.3)  # ...then the event loop is blocked past the deadline while the reply arrives
            assert await call == "PONG"
        finally:
            await client.aclose()

    run(body)


def test_a_connection_redis_closed_is_replaced_without_an_error(redis_url: str) -> None:
    async def body() -> None:
        client = Redis(redis_url)
        admin = Redis(redis_url)
        try:
            name = f"keel-test-{secrets.token_hex(4)}"
            assert await client.execute("CLIENT", "SETNAME", name) == "OK"
            await admin.execute(
                "CLIENT",
                "KILL",
                "SKIPME",
                "yes",
                "TYPE",
                "normal",
                "USER",
                "default",
                "ID",
                str(await client.execute("CLIENT", "ID")),
            )
            assert await client.execute("PING") == "PONG"  # as after a Redis restart
        finally:
            await client.aclose()
            await admin.aclose()

    run(body)


def test_a_command_sent_later_rides_ahead_of_the_next_one_or_goes_alone(redis_url: str, redis_prefix: str) -> None:
    sync = redis.Redis.from_url(redis_url, decode_responses=True)

    async def body() -> None:
        client = Redis(redis_url, later_s=30.0, wake_s=60.0)  # Redis counts as awake: a later command waits
        alone = Redis(redis_url, later_s=0.05, wake_s=60.0)
        try:
            await client.execute("PING")
            await alone.execute("PING")
            waiting = asyncio.ensure_future(client.execute("SET", f"{redis_prefix}a", "1", later=True))
            await asyncio.sleep(0.1)
            assert sync.get(f"{redis_prefix}a") is None and not waiting.done()  # not sent yet
            assert await client.execute("GET", f"{redis_prefix}a") == "1"  # written just before this GET
            assert await waiting == "OK"
            started = time.monotonic()
            assert await alone.execute("SET", f"{redis_prefix}b", "2", later=True) == "OK"  # nothing to ride with
            assert 0.05 <= time.monotonic() - started < 0.5
            owed = asyncio.ensure_future(client.execute("SET", f"{redis_prefix}c", "3", later=True))
            await asyncio.sleep(0)
            await client.aclose()  # sends what is owed before closing
            assert await owed == "OK" and sync.get(f"{redis_prefix}c") == "3"
        finally:
            await client.aclose()
            await alone.aclose()

    try:
        run(body)
    finally:
        sync.close()


def test_a_command_sent_later_goes_at_once_when_redis_has_been_quiet(redis_url: str, redis_prefix: str) -> None:
    """No reply for `wake_s`: Redis is likely asleep, so a later command wakes it now, not with the next one."""
    sync = redis.Redis.from_url(redis_url, decode_responses=True)

    async def body() -> None:
        client = Redis(redis_url, later_s=30.0, wake_s=0.01)
        try:
            await client.execute("PING")
            await asyncio.sleep(0.02)  # quieter than wake_s
            assert await client.execute("SET", f"{redis_prefix}a", "1", later=True) == "OK"  # not after 30 s
            assert sync.get(f"{redis_prefix}a") == "1"
        finally:
            await client.aclose()

    try:
        run(body)
    finally:
        sync.close()


def test_shared_handles_made_before_the_loop_share_connections_until_the_last_closes(redis_url: str) -> None:
    one, two = Redis(redis_url, shared=True), Redis(redis_url, shared=True)  # as the runtime makes them
    other, alone = Redis(redis_url, shared=True, decode=False), Redis(redis_url)

    async def body() -> None:
        for client in (one, two, other, alone):
            assert await client.execute("PING") in ("PONG", b"PONG")
        pool = one._bind()
        assert two._bind() is pool and other._bind() is not pool and alone._bind() is not pool
        await one.aclose()
        assert await two.execute("PING") == "PONG"  # still open for its other holder
        with pytest.raises(RedisUnreachable):
            await one.execute("PING")
        await two.aclose()
        assert not pool._conns
        three = Redis(redis_url, shared=True)
        assert await three.execute("PING") == "PONG" and three._bind() is not pool
        await three.aclose()
        await other.aclose()
        await alone.aclose()

    run(body)


REPLIES = [
    b"+OK\r\n",
    b"-ERR wrong\r\n",
    b":-42\r\n",
    b"$-1\r\n",
    b"$0\r\n\r\n",
    b"$5\r\nh\xc3\xa9lo\r\n",
    b"*-1\r\n",
    b"*0\r\n",
    b"*4\r\n:1\r\n$2\r\nab\r\n*2\r\n$-1\r\n-NOSCRIPT x\r\n+s\r\n",
]


@pytest.mark.parametrize("encoding", [None, "utf-8"])
def test_the_python_parser_reads_what_hiredis_reads(encoding: str | None) -> None:
    hiredis = pytest.importorskip("hiredis")
    stream = b"".join(REPLIES)
    ours, theirs = PyReader(encoding), hiredis.Reader(replyError=ReplyError, encoding=encoding)
    got: list[object] = []
    for i in range(len(stream)):  # one byte at a time: every reply split everywhere
        ours.feed(stream[i : i + 1])
        while (reply := ours.gets()) is not False:
            got.append(reply)
    theirs.feed(stream)
    want: list[object] = []
    while (reply := theirs.gets()) is not False:
        want.append(reply)
    assert [repr(x) for x in got] == [repr(x) for x in want]
    assert len(got) == len(REPLIES)


def test_without_hiredis_the_python_parser_serves(
    redis_url: str, redis_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(redis_client, "_hiredis", None)

    async def body() -> None:
        client = Redis(redis_url, decode=False)
        try:
            await client.execute("SET", f"{redis_prefix}k", b"\x00\r\n" * 50_000)
            got = await asyncio.gather(*(client.execute("GET", f"{redis_prefix}k") for _ in range(20)))
            assert got == [b"\x00\r\n" * 50_000] * 20
            assert isinstance(client._bind()._conns[0]._reader, PyReader)
        finally:
            await client.aclose()

    run(body)


def test_pack_writes_resp_arrays_of_bulk_strings() -> None:
    command = ("SET", b"k\r\n", 7, 0.5, 1_700_000_000.25, "h\u00e9")
    want = b"*6\r\n$3\r\nSET\r\n$3\r\nk\r\n\r\n$1\r\n7\r\n$3\r\n0.5\r\n$13\r\n1700000000.25\r\n$3\r\nh\xc3\xa9\r\n"
    assert pack_py(command) == want
    assert pack(command) == want


def test_urls_are_checked() -> None:
    with pytest.raises(ValueError, match="socket_timeout"):
        Redis("redis://127.0.0.1:6379/0?socket_timeout=3")
    with pytest.raises(ValueError, match="scheme"):
        Redis("http://127.0.0.1:6379/0")
    with pytest.raises(ValueError, match="database"):
        Redis("redis://127.0.0.1:6379/zero")


# ---- the stores over the client, through outages ------------------------------------------------------

CHARGES = [Charge("tenant=t|rpm", "minute", 1000.0, 1.0), Charge("key=k|concurrency", "concurrent", 10.0, 1.0)]


def test_limits_raise_quickly_in_a_partition_and_count_again_after_it(redis_url: str, redis_prefix: str) -> None:
    async def body(proxy: TcpProxy) -> None:
        limits = RedisLimits(proxy.url(redis_url), prefix=redis_prefix)
        try:
            first = await limits.reserve(CHARGES, time.time())
            assert first.reservation is not None
            proxy.blackhole()
            started = time.monotonic()
            calls = [limits.reserve(CHARGES, time.time()) for _ in range(10)]
            outcomes = await asyncio.gather(*calls, return_exceptions=True)
            assert all(isinstance(o, LimitStoreUnavailable) for o in outcomes), outcomes
            assert time.monotonic() - started < 0.8  # 0.5 s timeout, not a wait on the partition
            await limits.settle(first.reservation, [1.0, 1.0], time.time())  # never raises
            proxy.restore()
            await asyncio.sleep(1.0)  # the hold-off after a failure
            again = await limits.reserve(CHARGES, time.time())
            assert again.reservation is not None and again.used[0] == 2.0  # first + again; failed ones uncounted
        finally:
            await limits.aclose()

    with TcpProxy.in_front_of(redis_url) as proxy:
        asyncio.run(body(proxy))


def test_breakers_let_calls_through_in_a_partition_and_share_state_after_it(redis_url: str, redis_prefix: str) -> None:
    policy = BreakerPolicy(failures=2, error_rate=0.5, window=10, min_calls=6, cooldown_s=30.0)

    async def body(proxy: TcpProxy) -> None:
        breakers = RedisBreakers(proxy.url(redis_url), policy, prefix=redis_prefix)
        try:
            proxy.blackhole()
            started = time.monotonic()
            assert await breakers.allow("a", T0) is Permit.closed
            assert await breakers.record("a", False, T0) == "unknown"
            assert time.monotonic() - started < 0.8
            proxy.restore()
            await asyncio.sleep(1.0)
            for _ in range(2):
                await breakers.record("a", False, T0 + 1)
            assert await breakers.allow("a", T0 + 2) is Permit.refused
        finally:
            await breakers.aclose()

    with TcpProxy.in_front_of(redis_url) as proxy:
        asyncio.run(body(proxy))
