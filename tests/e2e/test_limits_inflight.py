"""Overrides set while calls are in flight: every call's spend lands on the counters the override adds.

A PUT of a limit reaches each gateway process on its next limit refresh (every 2 s). Spend counts from
the PUT on, even before the new limit is enforced: calls in flight at the PUT, calls that end between
the PUT and the refresh, and calls admitted after it all charge the new counters, so the spend read
back from /api/limits/usage equals the sum of the calls' costs. Over real HTTP, with the counters in
memory and in the real Redis.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import redis

from keel.config import LimitsConfig
from keel.gateway.call import Call, Outcome, Reply
from keel.keys.auth import issue_key
from keel.limits.book import book_from
from keel.limits.stage import LimitsStage
from keel.providers.prices import PriceBook
from keel.store.memory.counters import MemoryLimits
from keel.store.protocols import LimitOverride
from keel.testing import FakeUpstream, Script
from keel.types import ChatEvent, ChatRequest, Message, Principal, RoutePlan, Target, TraceRecord, Usage
from tests.conftest import ADMIN, REDIS_URL, Gateway, base_config, until

PER_TOKEN = {"gpt-4o-mini": {"input": 1000, "output": 1000}}  # USD per million: $0.001 a token
COUNTERS = "keel:limit:"  # RedisLimits' key prefix


@pytest.fixture
def tenant() -> Iterator[str]:
    """A tenant of this test's own; its Redis counters (if any) are deleted afterwards."""
    name = "t-" + secrets.token_hex(6)
    yield name
    with redis.Redis.from_url(REDIS_URL) as r:
        try:
            keys = list(r.scan_iter(match=f"{COUNTERS}tenant={name}|*", count=1000))
        except redis.ConnectionError:
            return  # the memory variant on a machine without Redis
        if keys:
            r.delete(*keys)


def _admin(gw: Gateway, method: str, path: str, body: Any = None, **params: str) -> httpx.Response:
    headers = {"authorization": f"Bearer {ADMIN}"}
    return httpx.request(method, gw.url + path, json=body, params=params, headers=headers, timeout=10)


def _usage(gw: Gateway, tenant: str) -> dict[str, float]:
    r = _admin(gw, "GET", "/api/limits/usage", tenant=tenant)
    assert r.status_code == 200, r.text
    return {row["kind"]: row["used"] for row in r.json()["data"]}


@pytest.mark.parametrize("counters", ["memory", "redis"])
def test_spend_of_calls_in_flight_during_a_put_counts_on_the_new_limits(
    counters: str, make_gateway: Any, up: FakeUpstream, tmp_path: Path, tenant: str, request: pytest.FixtureRequest
) -> None:
    raw = {**base_config(up, f"sqlite:///{tmp_path}/keel.db", tmp_path), "prices": PER_TOKEN}
    if counters == "redis":
        raw["redis"] = {"url": request.getfixturevalue("redis_url")}
    gw = make_gateway(raw)
    gw.runtime.store.create_tenant(tenant)
    key = issue_key(gw.runtime.store, tenant, name="inflight").key
    # 30 calls held 3 to 5 s upstream (they end over more than a refresh interval), then 10 quick ones
    slow = [Script(delay=3 + 0.07 * i, usage={"prompt_tokens": 7, "completion_tokens": i}) for i in range(30)]
    fast = [Script(usage={"prompt_tokens": 5, "completion_tokens": 3}) for _ in range(10)]
    up.script(*slow, *fast)

    def call(_: int) -> None:
        with openai.OpenAI(base_url=gw.base_url, api_key=key, max_retries=0, timeout=30) as c:
            c.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])

    with ThreadPoolExecutor(30) as pool:
        in_flight = list(pool.map(lambda i: pool.submit(call, i), range(30)))
        assert until(lambda: len(up.requests) == 30, timeout=15), "the slow calls never reached the upstream"
        limits = {"usd_day": 1000, "tokens_day": 10**9, "rpm": 10_000}
        put = _admin(gw, "PUT", f"/api/limits/tenant/{tenant}", {"limits": limits})
        assert put.status_code == 200, put.text
        for i in range(10):
            call(i)  # admitted, most likely, before this process has read the new override
        for f in in_flight:
            f.result()

    traces = [t for t in gw.traces() if t.tenant == tenant]
    assert len(traces) == 40 and all(t.status == "ok" for t in traces)
    # spend counts from the moment the override was set: the calls that ended after it (on a busy
    # machine a slow call may have ended before the PUT went out; normally all 40 count)
    after = [t for t in traces if t.started_at + (t.latency_ms or 0) / 1000 >= put.json()["updated_at"]]
    assert len(after) >= 30  # the 10 quick calls, and most of the 30 in flight
    spent = sum(t.cost_usd or 0.0 for t in after)
    tokens = sum((t.input_tokens or 0) + (t.output_tokens or 0) for t in after)
    assert spent > 0
    expected = {"usd_day": pytest.approx(spent), "tokens_day": tokens, "rpm": len(after)}
    assert until(lambda: _usage(gw, tenant) == expected, timeout=15), (_usage(gw, tenant), expected)


# ---- the stage alone: two changes in a row charge each call once per counter -------------------


def test_each_ended_call_is_charged_once_per_counter_across_successive_changes() -> None:
    store = MemoryLimits()
    config = LimitsConfig()
    stage = LimitsStage(store, book_from(config, []), PriceBook.bundled())
    plan = RoutePlan("fast", (Target("sim", "gpt-4o-mini"),), "default")

    def tenant(at: float) -> LimitOverride:
        return LimitOverride("tenant", "acme", {"usd_day": 100}, None, at)

    def key(at: float) -> LimitOverride:
        return LimitOverride("key", "k1", {"usd_month": 100}, None, at)

    async def start(usd: float) -> tuple[Call, Reply]:
        request = ChatRequest("fast", (Message("user", "hi"),), max_tokens=4)
        call = Call(request, TraceRecord(secrets.token_hex(4), 0.0), principal=Principal("acme", "k1"), plan=plan)
        reply = await stage(call, lambda c: _reply(c, usd))
        return call, reply

    async def main() -> list[float]:
        _, before = await start(1.0)
        await before.collect()  # ends before any override: counts on none
        _, d = await start(2.0)  # in flight across both changes below
        x_at = time.time()
        _, e = await start(4.0)
        await e.collect()  # ends after X was set, before this process reads it
        stage.update(book_from(config, [tenant(x_at)]), time.time())
        await d.collect()  # ends under the book with X: charged X at once
        y_at = time.time()
        _, f = await start(8.0)
        await f.collect()  # admitted on X; ends after Y was set, before it is read
        stage.update(book_from(config, [tenant(x_at), key(y_at)]), time.time())
        while stage._pending:  # settlements are tasks: wait for them, not for a while
            await asyncio.gather(*stage._pending)
        return await store.usage([("tenant=acme|usd_day", "day"), ("key=k1|usd_month", "month")], time.time())

    usd_day, usd_month = asyncio.run(main())
    assert usd_day == pytest.approx(2.0 + 4.0 + 8.0)  # each call ended after X was set, once
    assert usd_month == pytest.approx(8.0)  # only the call that ended after Y was set


async def _reply(call: Call, usd: float) -> Reply:
    """A reply billed as the invoke slot bills one: 10 input tokens and `usd`, on its outcome."""
    reply = Reply(_no_events(), call.t0)

    def bill(outcome: Outcome) -> None:
        outcome.billed, outcome.cost_usd = Usage(input_tokens=10), usd

    reply.on_done(bill)
    return reply


async def _no_events() -> AsyncIterator[ChatEvent]:
    return
    yield  # pragma: no cover - makes this an async generator
