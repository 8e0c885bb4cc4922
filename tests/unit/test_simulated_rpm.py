"""The simulated provider's rate limit (`rpm`): the stand-in `keel loadtest` gives a real provider's 429s."""

from __future__ import annotations

import asyncio

import pytest

from keel.errors import ErrorKind, ProviderError
from keel.providers.simulated import SimulatedProvider
from keel.types import ChatRequest, Message, Target

REQUEST = ChatRequest(model="m", messages=(Message("user", "hello"),))
TARGET = Target("sim", "simulated-1")


async def answer(p: SimulatedProvider) -> None:
    async for _ in p.chat(REQUEST, TARGET):
        pass


def test_calls_beyond_the_minutes_allowance_are_rate_limited_with_a_retry_after() -> None:
    async def go() -> None:
        p = SimulatedProvider("sim", rpm=3)
        for _ in range(3):
            await answer(p)
        with pytest.raises(ProviderError) as caught:
            await answer(p)
        assert caught.value.error_kind is ErrorKind.rate_limited
        assert caught.value.upstream_status == 429
        assert caught.value.retry_after is not None and 0 < caught.value.retry_after <= 60

    asyncio.run(go())


def test_without_rpm_there_is_no_limit() -> None:
    async def go() -> None:
        p = SimulatedProvider("sim")
        for _ in range(50):
            await answer(p)

    asyncio.run(go())
