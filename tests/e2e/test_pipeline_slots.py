"""Named pipeline slots: stages compose by slot, and a capability adds a stage through its builder alone.

The end-to-end test adds a `guard` stage (a slot no built-in capability fills) with a test-only
builder passed to `Runtime.build(extra=...)` and drives it over real HTTP: it runs after auth, route
and the cache (a cache hit never reaches it) and before failover (no deadline or target yet), and
what it refuses never reaches the upstream.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from keel.errors import InvalidRequest
from keel.gateway.call import Call, Reply, no_events
from keel.gateway.capability import Context, Contribution
from keel.gateway.pipeline import SLOTS, Handler, build_pipeline, in_slot_order
from keel.testing import FakeUpstream
from keel.types import ChatRequest, Message, TraceRecord
from tests.conftest import Gateway, base_config

# ---- composition (unit) ---------------------------------------------------------------------------


class Mark:
    """A stage that notes its name on the call's trace tags, in the order the stages run."""

    def __init__(self, name: str) -> None:
        self.name = name

    async def __call__(self, call: Call, next: Handler) -> Reply:
        call.trace.tags.setdefault("order", []).append(self.name)
        return await next(call)


async def _last(call: Call) -> Reply:
    call.trace.tags.setdefault("order", []).append("invoke")
    return Reply(no_events(), call.t0)


def _call() -> Call:
    return Call(ChatRequest("m", (Message("user", "hi"),)), TraceRecord("t", 0.0))


def test_the_slots_are_in_request_order() -> None:
    assert SLOTS == ("trace", "auth", "prompt", "route", "limits", "cache", "retrieve", "guard", "failover", "invoke")


def test_stages_run_in_slot_order_and_keep_the_list_order_within_a_slot() -> None:
    given = [
        ("failover", Mark("failover")),
        ("guard", Mark("guard-1")),
        ("trace", Mark("trace")),
        ("guard", Mark("guard-2")),
        ("auth", Mark("auth")),
        ("cache", Mark("cache")),
    ]
    pipeline = build_pipeline(in_slot_order(given), _last)
    call = _call()
    asyncio.run(pipeline(call))
    assert call.trace.tags["order"] == ["trace", "auth", "cache", "guard-1", "guard-2", "failover", "invoke"]


@pytest.mark.parametrize("slot", ["gaurd", "invoke"])
def test_a_stage_in_an_unknown_slot_or_in_invoke_is_refused(slot: str) -> None:
    with pytest.raises(ValueError, match=f"slot '{slot}'"):
        in_slot_order([(slot, Mark("x"))])


def test_per_call_state_is_made_on_first_use_and_found_without_making_one() -> None:
    from keel.cache.stage import CacheState
    from keel.limits.stage import LimitState

    call = _call()
    assert call.find(LimitState) is None
    call.state(LimitState).warnings.append("w")
    assert call.state(LimitState).warnings == ["w"]
    assert call.find(CacheState) is None  # one capability's state is not another's


# ---- a capability in a new slot, over HTTP ---------------------------------------------------------


class Guard:
    """The test capability's stage: what it saw of the call when it ran; refuses feature `blocked`."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []

    async def __call__(self, call: Call, next: Handler) -> Reply:
        self.seen.append(
            {
                "authenticated": call.principal is not None,
                "routed": call.plan is not None,
                "deadline": call.deadline,  # failover sets it
                "target": call.target,  # failover picks it
                "feature": call.feature,
            }
        )
        if call.feature == "blocked":
            raise InvalidRequest("The guard refuses this feature.", None)
        return await next(call)


def guard_capability(ctx: Context) -> Contribution:
    guard = Guard()
    ctx.add(guard)
    return Contribution([("guard", guard)])


@pytest.fixture
def gw(make_gateway: Any, up: FakeUpstream, tmp_path: Path) -> Gateway:
    raw = base_config(up, f"sqlite:///{tmp_path}/keel.db", tmp_path)
    raw["cache"] = {"enabled": True, "ttl_s": 60, "url": "memory://"}
    return make_gateway(raw, extra=[guard_capability])  # type: ignore[no-any-return]


def _ask(gw: Gateway, question: str, feature: str) -> httpx.Headers:
    with openai.OpenAI(base_url=gw.base_url, api_key=gw.key, max_retries=0, timeout=10) as c:
        raw = c.chat.completions.with_raw_response.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": question}],
            temperature=0,
            extra_headers={"x-keel-feature": feature},
        )
        return raw.headers


def _settle(gw: Gateway) -> None:
    stage = gw.runtime.cache_stage
    assert stage is not None
    deadline = time.monotonic() + 5
    while stage._pending and time.monotonic() < deadline:
        time.sleep(0.01)


def test_a_capability_adds_a_guard_stage_between_cache_and_failover(gw: Gateway, up: FakeUpstream) -> None:
    guard = gw.runtime.get(Guard)
    assert _ask(gw, "hello guard", "docs")["x-keel-cache"] == "miss"
    _settle(gw)
    assert _ask(gw, "hello guard", "docs")["x-keel-cache"] == "hit"  # the cache answered: the guard never ran
    assert guard.seen == [
        {"authenticated": True, "routed": True, "deadline": None, "target": None, "feature": "docs"},
    ]
    assert len(up.requests) == 1

    with pytest.raises(openai.BadRequestError, match="The guard refuses this feature"):
        _ask(gw, "something else", "blocked")
    assert len(guard.seen) == 2 and len(up.requests) == 1  # refused before failover: no upstream call
    refused = [t for t in gw.traces() if t.feature == "blocked"]
    assert [(t.status, t.http_status, t.tenant) for t in refused] == [("error", 400, "t1")]
