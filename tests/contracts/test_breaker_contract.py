"""One contract suite for the `BreakerStore` protocol, run against every backend.

The memory backend runs in process. The Redis backend runs on the real server at 127.0.0.1:6379;
each test gets its own random key prefix, deleted afterwards. Without that server the Redis cases
skip locally and fail in CI. Each test body is one coroutine run by `asyncio.run`, because a Redis
client belongs to the event loop it first connected on.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time

import pytest
import redis

from keel.store.memory.counters import MemoryBreakers
from keel.store.open import open_breakers
from keel.store.protocols import BreakerPolicy, BreakerState, BreakerStore, Permit
from keel.store.redis.breakers import RedisBreakers
from tests.backends import Backend as Backends
from tests.conftest import REDIS_URL

POLICY = BreakerPolicy(failures=3, error_rate=0.5, window=10, min_calls=6, cooldown_s=30.0)
COOL = POLICY.cooldown_s
T0 = 1_700_000_000.25  # wall-clock-like, so opened_at must survive the trip through Redis exactly
A = "openai:gpt-4o"  # targets may contain the key separator
B = "anthropic:claude"
Backend = Backends[BreakerStore, BreakerPolicy]


def redis_backend(url: str, prefix: str) -> Backend:
    return Backend(lambda policy: RedisBreakers(url, policy, prefix=prefix), POLICY)


@pytest.fixture(params=["memory", "redis"])
def backend(request: pytest.FixtureRequest) -> Backend:
    if request.param == "memory":
        return Backend(MemoryBreakers, POLICY)
    return redis_backend(request.getfixturevalue("redis_url"), request.getfixturevalue("redis_prefix"))


@pytest.fixture
def shared(redis_url: str, redis_prefix: str) -> Backend:
    """Redis only: every store it opens shares one prefix, like gateway processes sharing a Redis."""
    return redis_backend(redis_url, redis_prefix)


async def trip(store: BreakerStore, target: str = A, now: float = T0) -> None:
    """Open `target` by consecutive failures at `now`."""
    for _ in range(POLICY.failures):
        await store.record(target, False, now)


async def state_of(store: BreakerStore, target: str = A) -> BreakerState:
    return next(s for s in await store.states() if s.target == target)


# ---- closed --------------------------------------------------------------------------------


def test_starts_closed_and_allows(backend: Backend) -> None:
    async def body() -> None:
        b = backend.open()
        assert await b.allow(A, T0)
        assert await b.states() == []  # asking does not create a breaker
        assert await b.record(A, True, T0) == "closed"
        assert await b.states() == [BreakerState(A, "closed", 0, 1, 0, None)]

    backend.run(body)


def test_opens_after_consecutive_failures_and_refuses(backend: Backend) -> None:
    async def body() -> None:
        b = backend.open()
        assert await b.record(A, False, T0) == "closed"
        assert await b.record(A, False, T0) == "closed"
        assert await b.allow(A, T0)
        assert await b.record(A, False, T0 + 1) == "open"
        assert not await b.allow(A, T0 + 1)
        assert await b.states() == [BreakerState(A, "open", 3, 3, 3, T0 + 1)]

    backend.run(body)


def test_success_resets_consecutive_count(backend: Backend) -> None:
    async def body() -> None:
        b = backend.open()
        for ok in (False, False, True, False, False):
            assert await b.record(A, ok, T0) == "closed"
        assert await state_of(b) == BreakerState(A, "closed", 2, 5, 4, None)
        assert await b.record(A, False, T0) == "open"

    backend.run(body)


def test_opens_on_error_rate_once_min_calls_seen(backend: Backend) -> None:
    async def body() -> None:
        rate_only = BreakerPolicy(failures=100, error_rate=0.5, window=10, min_calls=6, cooldown_s=COOL)
        b = backend.open(rate_only)
        for ok in (False, True, False, True, False):  # 60% failures, but only 5 calls
            assert await b.record(A, ok, T0) == "closed"
        assert await b.record(A, True, T0) == "open"  # 3 of 6 = the threshold
        assert await state_of(b) == BreakerState(A, "open", 0, 6, 3, T0)

    backend.run(body)


def test_error_rate_counts_only_the_window(backend: Backend) -> None:
    async def body() -> None:
        b = backend.open(BreakerPolicy(failures=100, error_rate=0.5, window=4, min_calls=4, cooldown_s=COOL))
        for ok in (True, True, True, True, False):
            assert await b.record(A, ok, T0) == "closed"
        assert await state_of(b) == BreakerState(A, "closed", 1, 4, 1, None)
        assert await b.record(A, False, T0) == "open"  # window T,T,F,F: 2 of 4 (not 2 of 6)

    backend.run(body)


# ---- open and half-open --------------------------------------------------------------------


def test_one_probe_after_cooldown(backend: Backend) -> None:
    async def body() -> None:
        b = backend.open()
        await trip(b)
        assert not await b.allow(A, T0 + COOL - 0.001)
        assert await b.allow(A, T0 + COOL) is Permit.probe  # the one probe, told apart from a closed breaker's yes
        assert await b.allow(A, T0 + COOL) is Permit.refused
        assert not await b.allow(A, T0 + COOL + 1)
        assert (await state_of(b)).state == "half_open"

    backend.run(body)


def test_probe_success_closes_and_resets(backend: Backend) -> None:
    async def body() -> None:
        b = backend.open()
        await trip(b)
        assert await b.allow(A, T0 + COOL)
        assert await b.record(A, True, T0 + COOL + 1) == "closed"
        assert await b.states() == [BreakerState(A, "closed", 0, 0, 0, None)]
        assert await b.allow(A, T0 + COOL + 1) is Permit.closed
        assert await b.allow(A, T0 + COOL + 1)
        for _ in range(POLICY.failures - 1):  # the old failures no longer count
            assert await b.record(A, False, T0 + COOL + 2) == "closed"

    backend.run(body)


def test_probe_failure_reopens_with_fresh_cooldown(backend: Backend) -> None:
    async def body() -> None:
        b = backend.open()
        await trip(b)
        t1 = T0 + COOL + 5
        assert await b.allow(A, T0 + COOL)
        assert await b.record(A, False, t1) == "open"
        assert (await state_of(b)).opened_at == t1
        assert not await b.allow(A, t1 + COOL - 0.001)
        assert await b.allow(A, t1 + COOL)
        assert not await b.allow(A, t1 + COOL)

    backend.run(body)


def test_silent_probe_frees_its_slot_after_another_cooldown(backend: Backend) -> None:
    async def body() -> None:
        b = backend.open()
        await trip(b)
        t1 = T0 + COOL
        assert await b.allow(A, t1)  # this probe never reports
        assert not await b.allow(A, t1 + COOL - 0.001)
        assert await b.allow(A, t1 + COOL)
        assert not await b.allow(A, t1 + COOL + 1)

    backend.run(body)


def test_outcomes_while_open_change_nothing(backend: Backend) -> None:
    async def body() -> None:
        b = backend.open()
        await trip(b)
        before = await b.states()
        assert await b.record(A, True, T0 + 1) == "open"
        assert await b.record(A, False, T0 + 2) == "open"
        assert await b.states() == before
        assert await b.allow(A, T0 + COOL)  # the cooldown still runs from the opening

    backend.run(body)


def test_targets_are_independent(backend: Backend) -> None:
    async def body() -> None:
        b = backend.open()
        await trip(b, A)
        assert not await b.allow(A, T0)
        assert await b.allow(B, T0)
        assert await b.record(B, False, T0) == "closed"
        assert await b.allow(A, T0 + COOL)
        assert await b.record(A, True, T0 + COOL) == "closed"
        assert (await state_of(b, B)).consecutive_failures == 1

    backend.run(body)


def test_states_lists_every_target_with_counters(backend: Backend) -> None:
    async def body() -> None:
        b = backend.open()
        await trip(b, B, T0 + 2)
        for ok in (True, False, True, False):
            await b.record(A, ok, T0)
        assert await b.states() == [
            BreakerState(B, "open", 3, 3, 3, T0 + 2),
            BreakerState(A, "closed", 1, 4, 2, None),
        ]

    backend.run(body)


def test_a_batch_of_outcomes_is_recorded_as_one_by_one(backend: Backend) -> None:
    async def body() -> None:
        one, batched = backend.open(), backend.open()
        outcomes = [(t, i % 3 == 0, T0 + i) for i in range(70) for t in (f"one:{A}", f"one:{B}")]  # > one round trip
        outcomes += [(f"one:{A}", True, T0 + COOL + 100)]  # A opened: a straggler changes nothing
        singles = [await one.record(t, ok, now) for t, ok, now in outcomes]
        assert "open" in singles
        assert await batched.record_many([(t.replace("one:", "two:"), ok, now) for t, ok, now in outcomes]) == singles
        mine = {s.target: s for s in await one.states()}
        theirs = {s.target: s for s in await batched.states() if s.target.startswith("two:")}
        for target, state in mine.items():
            if target.startswith("one:"):
                twin = target.replace("one:", "two:")
                assert theirs[twin] == dataclasses.replace(state, target=twin)
        assert await batched.record_many([]) == []

    backend.run(body)


# ---- Redis only ----------------------------------------------------------------------------


def test_processes_sharing_a_redis_share_state(shared: Backend) -> None:
    async def body() -> None:
        one, two = shared.open(), shared.open()
        await trip(one)
        assert not await two.allow(A, T0 + 1)
        assert await two.states() == await one.states()
        assert await two.allow(A, T0 + COOL)  # two takes the probe...
        assert not await one.allow(A, T0 + COOL)  # ...so one is refused
        assert await one.record(A, True, T0 + COOL) == "closed"
        assert await two.allow(A, T0 + COOL)

    shared.run(body)


def test_a_closed_answer_is_reused_for_a_quarter_second_then_asked_again(shared: Backend) -> None:
    async def body() -> None:
        one, two = shared.open(), shared.open()
        assert await one.allow(A, T0)  # closed: read from Redis, reused until T0 + 0.25
        await trip(two, now=T0 + 0.1)
        assert await one.allow(A, T0 + 0.2)  # not asked again yet
        assert not await one.allow(A, T0 + 0.3)  # asked: open
        assert await one.allow(B, T0 + 0.3)
        await trip(one, B, T0 + 0.31)  # its own record saw B open: the reused answer is dropped at once
        assert not await one.allow(B, T0 + 0.32)

    shared.run(body)


def test_a_closed_answer_half_its_age_is_read_again_in_the_background(shared: Backend) -> None:
    async def body() -> None:
        one, two = shared.open(), shared.open()
        assert isinstance(one, RedisBreakers)
        assert await one.allow(A, T0)  # read: closed until T0 + 0.25
        assert await one.allow(A, T0 + 0.2)  # answered from the read, which is read again meanwhile
        await asyncio.gather(*one._rereads.values())
        await trip(two, now=T0 + 0.3)
        assert await one.allow(A, T0 + 0.4)  # the second read (at T0 + 0.2) holds until T0 + 0.45
        assert not await one.allow(A, T0 + 0.5)  # asked: open
        assert await one.allow(B, T0)
        await trip(two, B, T0 + 0.1)
        assert await one.allow(B, T0 + 0.2)  # its background read finds B open...
        await asyncio.gather(*one._rereads.values())
        assert not await one.allow(B, T0 + 0.21)  # ...so this call asks, before the first read ran out

    shared.run(body)


def test_concurrent_callers_get_exactly_one_probe(shared: Backend) -> None:
    async def body() -> None:
        one, two = shared.open(), shared.open()
        await trip(one)
        for now in (T0 + COOL, T0 + 2 * COOL):  # open → half-open, then a silent probe's slot freed
            calls = [store.allow(A, now) for _ in range(25) for store in (one, two)]
            assert sum(await asyncio.gather(*calls)) == 1

    shared.run(body)


def test_keys_expire_and_states_forgets_expired_targets(shared: Backend, redis_url: str, redis_prefix: str) -> None:
    client = redis.Redis.from_url(redis_url, decode_responses=True)

    async def body() -> None:
        b = shared.open()
        await trip(b, A)
        await b.record(B, True, T0)
        keys = list(client.scan_iter(match=f"{redis_prefix}*"))
        assert len(keys) == 3
        assert all(86_400_000 - 60_000 < client.pttl(k) <= 86_400_000 for k in keys)
        client.delete(f"{redis_prefix}t:{A}")  # as if its TTL ran out
        assert [s.target for s in await b.states()] == [B]
        assert client.smembers(f"{redis_prefix}targets") == {B}

    try:
        shared.run(body)
    finally:
        client.close()


def test_unreachable_redis_lets_calls_through_quickly(caplog: pytest.LogCaptureFixture) -> None:
    unreachable = Backend(lambda policy: RedisBreakers("redis://127.0.0.1:1/0", policy), POLICY)

    async def body() -> None:
        b = unreachable.open()
        started = time.monotonic()
        with caplog.at_level(logging.WARNING, logger="keel.store.redis"):
            assert await b.allow(A, T0)
            assert await b.record(A, False, T0) == "unknown"
            assert await b.allow(A, T0)
        assert time.monotonic() - started < 0.5
        assert len([r for r in caplog.records if r.name == "keel.store.redis"]) == 1  # warned once

    unreachable.run(body)


def test_open_breakers_picks_the_backend() -> None:
    async def body() -> None:
        assert isinstance(open_breakers(None, POLICY), MemoryBreakers)
        store = open_breakers(REDIS_URL, POLICY)
        assert isinstance(store, RedisBreakers)
        await store.aclose()

    asyncio.run(body())
