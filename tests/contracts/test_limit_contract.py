"""One contract suite for the `LimitStore` protocol, run against every backend.

The memory backend runs in process. The Redis backend runs on the real server at 127.0.0.1:6379;
each test gets its own random key prefix, deleted afterwards. Without that server the Redis cases
skip locally and fail in CI. Time is the `now` passed in (never a sleep). Each test body is one
coroutine run by `asyncio.run`, because a Redis client belongs to the event loop it first connected on.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime

import pytest
import redis

from keel.store.counters import period_end, period_id, retry_after
from keel.store.memory.counters import MemoryLimits
from keel.store.open import open_limits
from keel.store.protocols import Admission, Charge, LimitStore, LimitStoreUnavailable, Reservation, Window
from keel.store.redis.limits import RedisLimits
from tests.backends import Backend as Backends
from tests.conftest import REDIS_URL

LEASE_S = 30.0
Backend = Backends[LimitStore, float]


def at(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> float:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC).timestamp()


T0 = at(2026, 11, 23, 12, 0, 0) + 0.25  # wall-clock-like; whole second S0
S0 = int(T0)


def rpm(limit: float, amount: float = 1.0, counter: str = "tenant=acme|rpm") -> Charge:
    return Charge(counter, "minute", limit, amount)


def charge(window: Window, limit: float, amount: float = 1.0, counter: str | None = None) -> Charge:
    return Charge(counter or f"tenant=acme|{window}", window, limit, amount)


def redis_backend(url: str, prefix: str) -> Backend:
    return Backend(lambda lease_s: RedisLimits(url, prefix=prefix, lease_s=lease_s), LEASE_S)


@pytest.fixture(params=["memory", "redis"])
def backend(request: pytest.FixtureRequest) -> Backend:
    if request.param == "memory":
        return Backend(lambda lease_s: MemoryLimits(lease_s=lease_s), LEASE_S)
    return redis_backend(request.getfixturevalue("redis_url"), request.getfixturevalue("redis_prefix"))


@pytest.fixture
def shared(redis_url: str, redis_prefix: str) -> Backend:
    """Redis only: every store it opens shares one prefix, like gateway processes sharing a Redis."""
    return redis_backend(redis_url, redis_prefix)


async def admit(store: LimitStore, charges: list[Charge], now: float) -> Reservation:
    admission = await store.reserve(charges, now)
    assert admission.reservation is not None, admission
    return admission.reservation


async def usage_of(store: LimitStore, charges: list[Charge], now: float) -> list[float]:
    return await store.usage([(c.counter, c.window) for c in charges], now)


# ---- the pure arithmetic -------------------------------------------------------------------


def test_period_ids_and_ends_are_utc_calendar_periods() -> None:
    assert period_id("day", T0) == "d20261123"
    assert period_id("month", T0) == "m202611"
    assert period_id("total", T0) == "all"
    assert period_id("minute", T0) == period_id("concurrent", T0) == ""
    assert period_end("day", T0) == at(2026, 11, 24) - T0
    assert period_end("month", T0) == at(2026, 12, 1) - T0
    assert period_end("month", at(2026, 12, 31, 23, 59, 59)) == 1.0  # into the next year
    assert period_id("month", at(2027, 1, 1)) == "m202701"
    assert period_end("day", at(2026, 11, 24)) == 86_400.0  # a boundary starts the new period
    assert period_end("total", T0) is None


def test_retry_after_per_window() -> None:
    buckets = [(S0, 2.0), (S0 + 10, 1.0), (S0 + 20, 1.0)]
    assert retry_after(rpm(4, 1), T0 + 30, buckets) == S0 + 60 - (T0 + 30)  # the oldest bucket suffices
    assert retry_after(rpm(4, 3), T0 + 30, buckets) == S0 + 70 - (T0 + 30)  # two must go
    assert retry_after(rpm(4, 5), T0 + 30, buckets) is None
    assert retry_after(charge("day", 10), T0) == period_end("day", T0)
    assert retry_after(charge("month", 10), T0) == period_end("month", T0)
    assert retry_after(charge("total", 10), T0) is None
    assert retry_after(charge("concurrent", 2), T0) == 1.0


# ---- admission -----------------------------------------------------------------------------


def test_admits_under_the_limit_and_refuses_over_it(backend: Backend) -> None:
    async def body() -> None:
        s = backend.open()
        for n in (1, 2, 3):
            admission = await s.reserve([rpm(3)], T0)
            assert admission.reservation is not None
            assert (admission.refused, admission.retry_after, admission.used) == (None, None, (float(n),))
            assert admission.reservation.at == T0
            assert admission.reservation.charges == (rpm(3),)
        refused = await s.reserve([rpm(3)], T0 + 1)
        assert refused == Admission(None, 0, S0 + 60 - (T0 + 1), (3.0,))
        assert await usage_of(s, [rpm(3)], T0 + 1) == [3.0]

    backend.run(body)


def test_reservation_ids_are_unique(backend: Backend) -> None:
    async def body() -> None:
        s = backend.open()
        ids = {(await admit(s, [rpm(100)], T0)).id for _ in range(50)}
        assert len(ids) == 50

    backend.run(body)


def test_all_or_nothing(backend: Backend) -> None:
    async def body() -> None:
        s = backend.open()
        a, b, c = charge("minute", 10, 2), charge("day", 5, 2), charge("concurrent", 10)
        await admit(s, [charge("day", 5, 4)], T0)  # b's counter now holds 4
        admission = await s.reserve([a, b, c], T0)
        assert (admission.reservation, admission.refused) == (None, 1)
        assert admission.used == (0.0, 4.0, 0.0)  # before: nothing of a or c was added
        assert await usage_of(s, [a, b, c], T0) == [0.0, 4.0, 0.0]
        ok = await s.reserve([a, charge("day", 6, 2), c], T0)
        assert ok.reservation is not None
        assert ok.used == (2.0, 6.0, 1.0)
        assert await usage_of(s, [a, b, c], T0) == [2.0, 6.0, 1.0]

    backend.run(body)


def test_refusal_names_the_first_charge_that_does_not_fit(backend: Backend) -> None:
    async def body() -> None:
        s = backend.open()
        full = [charge("total", 1, counter="x|usd_total"), charge("day", 1, counter="x|tokens_day")]
        await admit(s, full, T0)
        admission = await s.reserve([charge("minute", 10, counter="x|rpm"), *full], T0)
        assert (admission.refused, admission.retry_after) == (1, None)  # the total: waiting cannot help

    backend.run(body)


# ---- the sliding minute --------------------------------------------------------------------


def test_minute_window_slides_second_by_second(backend: Backend) -> None:
    async def body() -> None:
        s = backend.open()
        await admit(s, [rpm(3, 2)], T0)
        await admit(s, [rpm(3, 1)], T0 + 10)
        assert await usage_of(s, [rpm(3)], T0 + 59.7) == [3.0]  # still within S0's last second
        assert await usage_of(s, [rpm(3)], S0 + 60) == [1.0]  # S0's bucket is gone
        assert await usage_of(s, [rpm(3)], S0 + 69.9) == [1.0]
        assert await usage_of(s, [rpm(3)], S0 + 70) == [0.0]

    backend.run(body)


def test_minute_retry_after_is_the_exact_second_it_fits(backend: Backend) -> None:
    async def body() -> None:
        s = backend.open()
        for t in (T0, T0 + 10, T0 + 20):
            await admit(s, [rpm(3)], t)
        now = T0 + 30.1  # not a binary fraction: the sum must still land on the second
        refused = await s.reserve([rpm(3, 2)], now)
        assert refused.retry_after == S0 + 70 - now  # two buckets must expire
        wait = refused.retry_after
        assert wait is not None
        assert (await s.reserve([rpm(3, 2)], now + wait - 0.001)).reservation is None
        ok = await s.reserve([rpm(3, 2)], now + wait)
        assert ok.used == (3.0,)

    backend.run(body)


def test_an_amount_larger_than_the_limit_never_fits(backend: Backend) -> None:
    async def body() -> None:
        s = backend.open()
        for c in (rpm(100, 101), charge("day", 5, 6), charge("month", 5, 6), charge("concurrent", 0)):
            admission = await s.reserve([c], T0)
            assert (admission.reservation, admission.refused, admission.retry_after) == (None, 0, None)

    backend.run(body)


# ---- calendar periods ----------------------------------------------------------------------


def test_day_window_resets_at_utc_midnight(backend: Backend) -> None:
    async def body() -> None:
        s = backend.open()
        day = charge("day", 10, 10)
        late = at(2026, 11, 23, 23, 59, 59) + 0.5
        await admit(s, [day], at(2026, 11, 23, 0, 0, 0))
        refused = await s.reserve([day], late)
        assert (refused.refused, refused.retry_after) == (0, 0.5)
        ok = await s.reserve([day], late + 0.5)
        assert ok.used == (10.0,)
        assert await usage_of(s, [day], at(2026, 11, 25)) == [0.0]

    backend.run(body)


def test_month_window_resets_at_the_utc_month_boundary(backend: Backend) -> None:
    async def body() -> None:
        s = backend.open()
        month = charge("month", 1.0, 0.75)
        await admit(s, [month], at(2026, 12, 1))
        refused = await s.reserve([month], at(2026, 12, 31, 23))
        assert (refused.refused, refused.retry_after, refused.used) == (0, 3600.0, (0.75,))
        assert await usage_of(s, [month], at(2027, 1, 1)) == [0.0]
        assert (await s.reserve([month], at(2027, 1, 1))).used == (0.75,)

    backend.run(body)


def test_total_never_resets(backend: Backend) -> None:
    async def body() -> None:
        s = backend.open()
        total = charge("total", 5.0, 3.0)
        await admit(s, [total], T0)
        for now in (T0 + 86_400, T0 + 400 * 86_400):
            refused = await s.reserve([total], now)
            assert (refused.refused, refused.retry_after, refused.used) == (0, None, (3.0,))
        assert (await s.reserve([charge("total", 5.0, 2.0)], T0 + 400 * 86_400)).used == (5.0,)

    backend.run(body)


# ---- concurrency ---------------------------------------------------------------------------


def test_leases_count_and_settle_or_release_ends_them(backend: Backend) -> None:
    async def body() -> None:
        s = backend.open()
        conc = charge("concurrent", 2)
        one = await admit(s, [conc], T0)
        two = await admit(s, [conc], T0)
        refused = await s.reserve([conc], T0 + 1)
        assert (refused.refused, refused.retry_after, refused.used) == (0, 1.0, (2.0,))
        await s.settle(one, [57.0], T0 + 2)  # whatever the actual says, the lease ends
        three = await admit(s, [conc], T0 + 2)
        assert await usage_of(s, [conc], T0 + 2) == [2.0]
        await s.release(two, T0 + 3)
        await s.release(three, T0 + 3)
        assert await usage_of(s, [conc], T0 + 3) == [0.0]

    backend.run(body)


def test_expired_leases_do_not_count(backend: Backend) -> None:
    async def body() -> None:
        s = backend.open()
        conc = charge("concurrent", 1)
        await admit(s, [conc], T0)  # never settled: its process crashed
        assert await usage_of(s, [conc], T0 + LEASE_S) == [1.0]
        assert (await s.reserve([conc], T0 + LEASE_S)).reservation is None
        assert await usage_of(s, [conc], T0 + LEASE_S + 0.001) == [0.0]
        assert (await s.reserve([conc], T0 + LEASE_S + 0.001)).used == (1.0,)

    backend.run(body)


# ---- settle and release --------------------------------------------------------------------


def test_settle_replaces_the_estimate_with_the_actual(backend: Backend) -> None:
    async def body() -> None:
        s = backend.open()
        charges = [
            charge("minute", 1e6, 1000),
            charge("day", 1e6, 1000),
            charge("month", 10.0, 0.5),
            charge("total", 10.0, 0.5),
        ]
        down = await admit(s, charges, T0)
        up = await admit(s, charges, T0 + 1)
        await s.settle(down, [40, 40, 0.125, 0.125], T0 + 5)
        await s.settle(up, [1500, 1500, 0.75, 0.75], T0 + 6)
        assert await usage_of(s, charges, T0 + 6) == [1540.0, 1540.0, 0.875, 0.875]
        assert await usage_of(s, charges, S0 + 60) == [1500.0, 1540.0, 0.875, 0.875]  # in up's bucket (S0 + 1)

    backend.run(body)


def test_settle_at_once_settles_without_io_or_says_it_cannot(backend: Backend) -> None:
    async def body() -> None:
        s = backend.open()
        charges = [charge("day", 1e6, 1000), charge("concurrent", 10)]
        r = await admit(s, charges, T0)
        if isinstance(s, MemoryLimits):
            assert s.settle_at_once(r, [40, 1], T0 + 1)  # counters in the process: done now
        else:
            assert not s.settle_at_once(r, [40, 1], T0 + 1)  # an exact admission settles in Redis
            assert await usage_of(s, charges, T0 + 1) == [1000.0, 1.0]  # ...and nothing was done
            await s.settle(r, [40, 1], T0 + 1)
        assert await usage_of(s, charges, T0 + 1) == [40.0, 0.0]

    backend.run(body)


def test_settle_adjusts_the_bucket_and_period_it_was_added_to(backend: Backend) -> None:
    async def body() -> None:
        s = backend.open()
        minute, day = charge("minute", 1e6, 100), charge("day", 1e6, 100)
        late = at(2026, 11, 23, 23, 59, 30)
        r = await admit(s, [minute, day], late)
        await admit(s, [minute, day], late + 45)  # the next day
        await s.settle(r, [300, 300], late + 50)  # a stream that ran past midnight
        assert await usage_of(s, [minute, day], late + 50) == [400.0, 100.0]
        assert await usage_of(s, [day], late - 1) == [300.0]  # the old day got the extra 200
        stale = await admit(s, [minute], late + 200)
        await s.settle(stale, [5000], late + 261)  # its bucket has left the window: nothing to adjust
        assert await usage_of(s, [minute], late + 261) == [0.0]

    backend.run(body)


def test_counters_never_go_below_zero(backend: Backend) -> None:
    async def body() -> None:
        s = backend.open()
        charges = [charge("minute", 1e6, 100), charge("day", 1e6, 100), charge("total", 1e6, 100)]
        r = await admit(s, charges, T0)
        await s.settle(r, [10, 10, 10], T0 + 1)
        await s.release(r, T0 + 2)  # a double settlement must not drive the counters negative
        assert await usage_of(s, charges, T0 + 2) == [0.0, 0.0, 0.0]
        assert (await s.reserve(charges, T0 + 2)).used == (100.0, 100.0, 100.0)

    backend.run(body)


def test_release_undoes_everything(backend: Backend) -> None:
    async def body() -> None:
        s = backend.open()
        charges = [charge(w, 100, 7) for w in ("minute", "day", "month", "total", "concurrent")]
        keep = await admit(s, charges, T0)
        gone = await admit(s, charges, T0 + 1)
        assert await usage_of(s, charges, T0 + 1) == [14.0, 14.0, 14.0, 14.0, 2.0]
        await s.release(gone, T0 + 2)
        assert await usage_of(s, charges, T0 + 2) == [7.0, 7.0, 7.0, 7.0, 1.0]
        await s.release(keep, T0 + 3)
        assert await usage_of(s, charges, T0 + 3) == [0.0] * 5

    backend.run(body)


def test_usage_of_unknown_counters_is_zero(backend: Backend) -> None:
    async def body() -> None:
        s = backend.open()
        windows: list[Window] = ["minute", "day", "month", "total", "concurrent"]
        assert await s.usage([("nobody", w) for w in windows], T0) == [0.0] * 5
        assert await s.usage([], T0) == []

    backend.run(body)


def test_float_amounts_are_exact(backend: Backend) -> None:
    async def body() -> None:
        s = backend.open()
        usd = [charge("day", 0.3, 0.1, counter="x|usd_day"), charge("minute", 0.3, 0.1, counter="x|usd_m")]
        await admit(s, usd, T0)
        assert (await s.reserve([charge("day", 0.3, 0.2, "x|usd_day")], T0)).reservation is not None  # 0.1 + 0.2
        budget = charge("month", 1.0, 0.013, counter="x|usd_month")
        admitted = [r for r in [await s.reserve([budget], T0) for _ in range(100)] if r.reservation]
        assert len(admitted) == 76
        assert abs(admitted[-1].used[0] - 76 * 0.013) < 1e-9
        r = admitted[0].reservation
        assert r is not None
        await s.settle(r, [0.0123456789], T0)
        [value] = await usage_of(s, [budget], T0)
        assert abs(value - (75 * 0.013 + 0.0123456789)) < 1e-9

    backend.run(body)


# ---- Redis only ----------------------------------------------------------------------------


def test_processes_sharing_a_redis_admit_exactly_the_limit(shared: Backend) -> None:
    async def body() -> None:
        stores = [shared.open() for _ in range(3)]
        calls = [stores[i % 3].reserve([rpm(60)], T0 + i / 1000) for i in range(200)]
        admissions = await asyncio.gather(*calls)
        assert sum(a.reservation is not None for a in admissions) == 60
        assert await usage_of(stores[0], [rpm(60)], T0 + 1) == [60.0]

    shared.run(body)


def test_concurrent_spend_never_exceeds_the_budget(shared: Backend) -> None:
    async def body() -> None:
        stores = [shared.open() for _ in range(4)]
        budget = charge("month", 1.00, 0.013, counter="tenant=acme|usd_month")
        admissions = await asyncio.gather(*(stores[i % 4].reserve([budget], T0) for i in range(200)))
        admitted = [a for a in admissions if a.reservation is not None]
        assert len(admitted) == 76
        [spent] = await usage_of(stores[1], [budget], T0)
        assert spent <= 1.00
        assert abs(spent - 76 * 0.013) < 1e-9

    shared.run(body)


def test_keys_expire_and_minute_hashes_stay_small(shared: Backend, redis_url: str, redis_prefix: str) -> None:
    client = redis.Redis.from_url(redis_url, decode_responses=True)

    async def body() -> None:
        s = shared.open()
        charges = [charge(w, 1e9, 1) for w in ("minute", "day", "month", "total", "concurrent")]
        for i in range(300):  # five minutes, one call a second
            await admit(s, charges, T0 + i)
        key = f"{redis_prefix}tenant=acme|"
        assert client.hlen(f"{key}minute:minute") <= 61
        assert client.ttl(f"{key}minute:minute") in (119, 120)
        assert client.ttl(f"{key}day:d20261123") == pytest.approx(period_end("day", T0 + 299) + 3600, abs=2)
        assert client.ttl(f"{key}month:m202611") == pytest.approx(period_end("month", T0 + 299) + 3600, abs=2)
        assert client.ttl(f"{key}total:all") == -1
        assert client.ttl(f"{key}concurrent:concurrent") == LEASE_S + 60
        assert client.zcard(f"{key}concurrent:concurrent") == 31  # leases from T0 + 269 on are live

    try:
        shared.run(body)
    finally:
        client.close()


def test_unreachable_redis_raises_quickly_and_settling_never_raises(caplog: pytest.LogCaptureFixture) -> None:
    unreachable = Backend(lambda lease_s: RedisLimits("redis://127.0.0.1:1/0", lease_s=lease_s), LEASE_S)

    async def body() -> None:
        s = unreachable.open()
        reservation = Reservation("r1", T0, (rpm(10), charge("concurrent", 2)))
        started = time.monotonic()
        with caplog.at_level(logging.WARNING, logger="keel.store.redis_limits"):
            for _ in range(3):  # the first tries Redis; the next raise at once
                with pytest.raises(LimitStoreUnavailable):
                    await s.reserve([rpm(10)], T0)
            await s.settle(reservation, [1.0, 1.0], T0)
            await s.release(reservation, T0)
            with pytest.raises(LimitStoreUnavailable):
                await s.usage([("x", "minute")], T0)
        assert time.monotonic() - started < 1.0
        assert len([r for r in caplog.records if r.name == "keel.store.redis_limits"]) == 1  # warned once

    unreachable.run(body)


def test_open_limits_picks_the_backend() -> None:
    async def body() -> None:
        assert isinstance(open_limits(None), MemoryLimits)
        store = open_limits(REDIS_URL)
        assert isinstance(store, RedisLimits)
        await store.aclose()

    asyncio.run(body())
