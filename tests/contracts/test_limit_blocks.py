"""Admission blocks (keel.store.redis.blocks) against the real Redis at 127.0.0.1:6379.

Several `RedisLimits(blocks=True)` stores on one key prefix stand for gateway processes sharing a
Redis. What must hold: their combined admissions never pass a limit beyond the documented slack (none
for calendar windows, totals and concurrency; one block per store for the sliding minute); small limits
stay exact; what a block has left goes back on close; settlements come back to the shared counter;
an unreachable Redis is met as without blocks; the next block is taken in the background before the
current one runs out, charging nothing of its own. Time is the `now` passed in, as in the contract suite.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable

import pytest

from keel.store.counters import second
from keel.store.protocols import Admission, Charge, LimitStoreUnavailable, Window
from keel.store.redis.blocks import MIN_SLOTS, Blocks, grant_size
from keel.store.redis.limits import RedisLimits
from keel.testing.proxy import TcpProxy
from tests.contracts.test_limit_contract import T0

LEASE_S = 30.0


async def eventually(call: Callable[[], Awaitable[Admission]], within_s: float = 5.0) -> Admission:
    """The first admission that does not meet an unreachable store (it leaves Redis alone a second after one)."""
    deadline = time.monotonic() + within_s
    while True:
        try:
            return await call()
        except LimitStoreUnavailable:
            if time.monotonic() > deadline:
                raise
        await asyncio.sleep(0.05)


def charge(window: Window, limit: float, amount: float = 1.0) -> Charge:
    return Charge(f"tenant=acme|{window}", window, limit, amount)


def stores(url: str, prefix: str, n: int) -> list[RedisLimits]:
    return [RedisLimits(url, prefix=prefix, lease_s=LEASE_S, blocks=True) for _ in range(n)]


async def closed(*opened: RedisLimits) -> None:
    for s in opened:
        await s.aclose()


def test_block_sizes() -> None:
    assert grant_size(charge("minute", 48_000)) == 100  # a second's worth / 8 (1/64 would be 750)
    assert grant_size(charge("total", 640)) == 10  # no rate: 1/64
    assert grant_size(charge("day", 86_400 * 80, 5)) == 10  # 80 per second over a day: 1/8 of it
    assert grant_size(charge("concurrent", 100_000)) == 256  # at most 256 slots
    assert grant_size(charge("concurrent", 6_400)) == 100
    assert grant_size(charge("minute", 600)) == 0  # 1.25 per block: a small limit stays exact
    assert grant_size(charge("total", 640, amount=6)) == 0  # a block of 10 is under two calls of 6
    assert grant_size(charge("concurrent", 127)) == 0


def test_a_concurrency_block_is_sized_to_the_slots_in_use() -> None:
    async def body() -> None:
        blocks = Blocks(lambda counter, window, at: counter, lambda back, label: None)
        slots = charge("concurrent", 100_000)  # at most 256 slots

        def granted(now: float) -> float:
            [want] = blocks.wants([slots], [slots.counter], now)
            blocks.install([slots], [slots.counter], [want], [want], used=[0.0], lease="l", now=now)
            return want

        def hold(n: int, now: float) -> None:  # n calls in flight at once, then they end
            admissions = [blocks.take([slots], now) for _ in range(n)]
            for a in admissions:
                assert a is not None and a.reservation is not None
                assert blocks.settle(a.reservation, [1.0], now)

        assert granted(T0) == MIN_SLOTS  # no use seen yet
        hold(6, T0)
        assert granted(T0 + 1.5) == 12  # twice the most in use at once
        hold(12, T0 + 1.6)
        assert granted(T0 + 3) == 24
        assert granted(T0 + 4.5) == MIN_SLOTS  # the last block saw no call
        for step in range(1, 6):
            hold(int(granted(T0 + 4.5 + 1.5 * step)), T0 + 4.6 + 1.5 * step)  # every slot in use
        assert granted(T0 + 20) == 256  # capped
        assert granted(T0 + 21.5) == MIN_SLOTS
        held = [blocks.take([slots], T0 + 21.6) for _ in range(MIN_SLOTS // 2 + 1)]  # past half in use, now
        assert all(held) and granted(T0 + 21.7) == 2 * MIN_SLOTS  # twice the block: a burst grows fast

    asyncio.run(body())


def test_stores_sharing_a_redis_never_admit_past_a_total(redis_url: str, redis_prefix: str) -> None:
    async def body() -> None:
        a, b = stores(redis_url, redis_prefix, 2)
        try:
            limit = charge("total", 640)
            admitted = 0
            for _ in range(100):  # bursts of 10 concurrent calls
                burst = await asyncio.gather(*((a, b)[i % 2].reserve([limit], T0) for i in range(10)))
                admitted += sum(x.reservation is not None for x in burst)
            assert 640 - 2 * 10 <= admitted <= 640  # blocks held elsewhere refuse early, never late
            assert a.blocks is not None and b.blocks is not None
            assert a.blocks.local + b.blocks.local >= 640 / 4  # under half the limit, most were local
            [held] = await a.usage([(limit.counter, "total")], T0)
            assert held <= 640
        finally:
            await closed(a, b)
        check = RedisLimits(redis_url, prefix=redis_prefix)
        assert await check.usage([(limit.counter, "total")], T0) == [float(admitted)]  # blocks came back
        await check.aclose()

    asyncio.run(body())


def test_a_sliding_minute_overshoots_by_at_most_one_block_per_store(redis_url: str, redis_prefix: str) -> None:
    async def body() -> None:
        opened = stores(redis_url, redis_prefix, 2)
        limit = charge("minute", 4_800)  # blocks of 10
        times: list[float] = []
        try:
            for step in range(150 * 20):  # 150 s, 20 calls per 0.05 s from the two stores
                now = T0 + step * 0.05
                out = await asyncio.gather(*(opened[i % 2].reserve([limit], now) for i in range(20)))
                times += [now] * sum(x.reservation is not None for x in out)
        finally:
            await closed(*opened)
        assert len(times) > 4_800 * 2  # the limit was reached, more than once
        # the sliding minute counts whole seconds: at second S, what was admitted in seconds S-59..S
        per_second = Counter(second(t) for t in times)
        worst = max(sum(per_second[s] for s in range(top - 59, top + 1)) for top in per_second)
        assert 4_800 <= worst <= 4_800 + 2 * 10

    asyncio.run(body())


def test_small_limits_stay_exact(redis_url: str, redis_prefix: str) -> None:
    async def body() -> None:
        opened = stores(redis_url, redis_prefix, 3)
        try:
            calls = [opened[i % 3].reserve([charge("minute", 60)], T0 + i / 1000) for i in range(200)]
            admissions = await asyncio.gather(*calls)
            assert sum(a.reservation is not None for a in admissions) == 60
            assert all(s.blocks is not None and s.blocks.local == s.blocks.granted == 0 for s in opened)
            assert await opened[0].usage([("tenant=acme|minute", "minute")], T0 + 1) == [60.0]
        finally:
            await closed(*opened)

    asyncio.run(body())


def test_a_block_goes_back_on_close_and_settlements_reach_the_counter(redis_url: str, redis_prefix: str) -> None:
    async def body() -> None:
        [s] = stores(redis_url, redis_prefix, 1)
        check = RedisLimits(redis_url, prefix=redis_prefix)
        tokens, slots = charge("total", 640_000, 100), charge("concurrent", 6_400)
        counters = [(tokens.counter, tokens.window), (slots.counter, slots.window)]
        try:
            reservations = []
            for _ in range(4):  # (under half a first concurrency block: no renewal)
                admission = await s.reserve([tokens, slots], T0)
                assert admission.reservation is not None
                reservations.append(admission.reservation)
            assert s.blocks is not None and s.blocks.local == 3  # the first call took the blocks
            # each block counted as spent (a concurrency block starts small: MIN_SLOTS)
            assert await check.usage(counters, T0) == [100 + 10_000.0, 1.0 + MIN_SLOTS]
            for r in reservations[:2]:
                await s.settle(r, [7.0, 1.0], T0)
            for r in reservations[2:]:
                await s.release(r, T0)
            await s.aclose()
            assert await check.usage(counters, T0) == [14.0, 0.0]  # the real spend; every slot free
        finally:
            await closed(s, check)

    asyncio.run(body())


def test_a_call_settled_after_its_block_went_back_settles_in_redis(redis_url: str, redis_prefix: str) -> None:
    async def body() -> None:
        [s] = stores(redis_url, redis_prefix, 1)
        check = RedisLimits(redis_url, prefix=redis_prefix)
        tokens, slots = charge("day", 86_400 * 8_000, 100), charge("concurrent", 6_400)  # blocks of 1,000 and 100
        counters = [(tokens.counter, tokens.window), (slots.counter, slots.window)]
        try:
            first = await s.reserve([tokens, slots], T0)
            local = await s.reserve([tokens, slots], T0 + 0.5)
            assert first.reservation is not None and local.reservation is not None
            assert s.blocks is not None and s.blocks.local == 1
            third = await s.reserve([tokens, slots], T0 + 1.5)  # the blocks' second is over: new blocks
            assert third.reservation is not None and s.blocks.local == 1
            await s.settle(local.reservation, [40.0, 1.0], T0 + 2)  # its block went back meanwhile
            await s.aclose()
            # first and third keep their estimates (never settled), local its actual; no block left held
            assert await check.usage(counters, T0 + 2) == [240.0, 2.0]
        finally:
            await closed(s, check)

    asyncio.run(body())


async def renewed(store: RedisLimits, n: int) -> None:
    """Until `n` background renewals were answered (at most 10 s: a renewal never sent fails the test)."""

    async def wait() -> None:
        while store.renewed < n:
            await asyncio.sleep(0.01)

    await asyncio.wait_for(wait(), 10)


def test_the_next_block_is_taken_in_the_background_before_the_current_one_runs_out(
    redis_url: str, redis_prefix: str
) -> None:
    async def body() -> None:
        [s] = stores(redis_url, redis_prefix, 1)
        check = RedisLimits(redis_url, prefix=redis_prefix)
        tokens, slots = charge("day", 86_400 * 8_000, 100), charge("concurrent", 6_400)  # blocks of 1,000 and 100
        counters = [(tokens.counter, tokens.window), (slots.counter, slots.window)]
        try:
            first = await s.reserve([tokens, slots], T0)  # exact: takes the blocks
            local = await s.reserve([tokens, slots], T0 + 0.8)  # past 3/4 of the blocks' time: renews them
            assert first.reservation is not None and local.reservation is not None
            await renewed(s, 1)
            assert s.blocks is not None and s.blocks.granted == 4
            later = await s.reserve([tokens, slots], T0 + 1.2)  # the first blocks are out of time, not the new
            assert later.reservation is not None and s.blocks.local == 2
            await s.aclose()
            # three calls in flight, each counted once: the renewal charged nothing (no lease, no tokens)
            assert await check.usage(counters, T0 + 1.2) == [300.0, 3.0]
        finally:
            await closed(s, check)

    asyncio.run(body())


def test_past_half_its_limit_a_counter_gets_no_new_block_and_calls_go_exact(redis_url: str, redis_prefix: str) -> None:
    async def body() -> None:
        [s] = stores(redis_url, redis_prefix, 1)
        check = RedisLimits(redis_url, prefix=redis_prefix)
        limit = charge("total", 6_400)  # blocks of 100 while under 3,200
        try:
            assert (await check.reserve([charge("total", 6_400, 3_000)], T0)).reservation is not None
            assert (await s.reserve([limit], T0)).reservation is not None  # exact, with a block: 3,101
            assert (await check.reserve([charge("total", 6_400, 100)], T0)).reservation is not None  # 3,201
            assert (await s.reserve([limit], T0 + 0.8)).reservation is not None  # local; asks for the next block
            await renewed(s, 1)
            assert s.blocks is not None and s.blocks.local == 1 and s.blocks.granted == 1
            assert (await s.reserve([limit], T0 + 0.9)).reservation is not None  # no block left: exact
            assert s.blocks.local == 1
            await s.aclose()
            assert await check.usage([(limit.counter, "total")], T0 + 1) == [3_000.0 + 100 + 3]
        finally:
            await closed(s, check)

    asyncio.run(body())


def test_an_outage_is_met_as_without_blocks(redis_url: str, redis_prefix: str) -> None:
    async def body(proxy: TcpProxy) -> None:
        [s] = stores(proxy.url(redis_url), redis_prefix, 1)
        check = RedisLimits(redis_url, prefix=redis_prefix)
        limit = charge("total", 6_400)
        try:
            reservations = [await s.reserve([limit], T0) for _ in range(5)]  # the first took a block of 100
            proxy.refuse()
            local = await s.reserve([limit], T0 + 0.5)  # counted in Redis already, with the block
            assert local.reservation is not None
            started = time.monotonic()
            with pytest.raises(LimitStoreUnavailable):
                await s.reserve([limit], T0 + 1.5)  # the block has run out of time: Redis it is
            with pytest.raises(LimitStoreUnavailable):
                await s.reserve([limit], T0 + 1.6)  # held off: raised at once
            assert time.monotonic() - started < 1.0
            for r in reservations:
                assert r.reservation is not None
                await s.settle(r.reservation, [1.0], T0 + 2)  # never raises
            proxy.restore()
            assert (await eventually(lambda: s.reserve([limit], T0 + 3))).reservation is not None
            await s.aclose()
            # 5 + 1 + 1 calls admitted, none settled in Redis but the local one's estimate (1) stays
            [used] = await check.usage([(limit.counter, "total")], T0 + 3)
            assert 7.0 <= used <= 7.0 + 100  # the block returned during the outage was lost: counted, the safe side
        finally:
            await closed(s, check)

    with TcpProxy.in_front_of(redis_url) as proxy:
        asyncio.run(body(proxy))
