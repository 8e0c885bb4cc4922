"""Provider prompt caching: `cache_control` marks reach Anthropic from either SDK; cached tokens are priced.

OpenAI caches prompt prefixes by itself (nothing to send); its `cached_tokens` come back in usage and
are priced at the cached rate. Anthropic caches only what a request marks with `cache_control`:
the marks must survive both ingresses, and cache reads and writes are priced at their own rates.
"""

from __future__ import annotations

from typing import Any

import anthropic
import openai
import pytest

from keel.providers.prices import PriceBook
from keel.testing import FakeUpstream, Script
from keel.types import Usage
from tests.conftest import Gateway

EPHEMERAL = {"type": "ephemeral"}
LONG = "You are a meticulous assistant. " * 50
USAGE = {"prompt_tokens": 2000, "completion_tokens": 10, "cached_tokens": 1500, "cache_creation_tokens": 300}


def trace_of(gw: Gateway, trace_id: str) -> Any:
    return next(t for t in gw.traces() if t.id == trace_id)


def price(model: str, usage: Usage) -> float:
    cost = PriceBook.bundled({}).cost(model, usage)
    assert cost is not None
    return cost


def test_openai_sdk_content_parts_carry_cache_control_to_anthropic(gateway: Gateway, up: FakeUpstream) -> None:
    up.script(Script(usage=USAGE))
    tool = {
        "type": "function",
        "function": {"name": "lookup", "parameters": {"type": "object", "properties": {}}},
        "cache_control": EPHEMERAL,
    }
    messages: Any = [
        {"role": "system", "content": [{"type": "text", "text": LONG, "cache_control": EPHEMERAL}]},
        {"role": "user", "content": [{"type": "text", "text": "hi", "cache_control": EPHEMERAL}]},
    ]
    with openai.OpenAI(base_url=gateway.base_url, api_key=gateway.key, max_retries=0) as c:
        raw = c.chat.completions.with_raw_response.create(model="claude", messages=messages, tools=[tool])
    sent = up.requests[0]["json"]
    assert sent["system"] == [{"type": "text", "text": LONG, "cache_control": EPHEMERAL}]
    assert sent["messages"][0]["content"] == [{"type": "text", "text": "hi", "cache_control": EPHEMERAL}]
    assert sent["tools"][0]["cache_control"] == EPHEMERAL
    usage = raw.parse().usage
    assert usage is not None and usage.prompt_tokens_details is not None
    assert usage.prompt_tokens_details.cached_tokens == 1500
    t = trace_of(gateway, raw.headers["x-keel-trace-id"])
    assert (t.input_tokens, t.cached_input_tokens, t.cache_write_tokens) == (2000, 1500, 300)
    expected = price("claude-sonnet-4-5", Usage(2000, 10, 1500, 300))
    assert t.cost_usd == pytest.approx(expected)
    assert expected < price("claude-sonnet-4-5", Usage(2000, 10))  # reads are cheaper than fresh input


def test_anthropic_sdk_cache_control_survives_to_the_upstream(gateway: Gateway, up: FakeUpstream) -> None:
    up.script(Script(usage=USAGE))
    with anthropic.Anthropic(base_url=gateway.url, api_key=gateway.key, max_retries=0) as c:
        raw = c.messages.with_raw_response.create(
            model="claude",
            max_tokens=50,
            system=[{"type": "text", "text": LONG, "cache_control": EPHEMERAL}],
            messages=[{"role": "user", "content": [{"type": "text", "text": "hi", "cache_control": EPHEMERAL}]}],
        )
    sent = up.requests[0]["json"]
    assert sent["system"][0]["cache_control"] == EPHEMERAL
    assert sent["messages"][0]["content"][0]["cache_control"] == EPHEMERAL
    message = raw.parse()
    assert (message.usage.cache_read_input_tokens, message.usage.cache_creation_input_tokens) == (1500, 300)
    t = trace_of(gateway, raw.headers["x-keel-trace-id"])
    assert t.cost_usd == pytest.approx(price("claude-sonnet-4-5", Usage(2000, 10, 1500, 300)))


def test_openai_cached_prefix_tokens_are_priced_at_the_cached_rate(gateway: Gateway, up: FakeUpstream) -> None:
    up.script(Script(usage={"prompt_tokens": 2000, "completion_tokens": 10, "cached_tokens": 1024}))
    with openai.OpenAI(base_url=gateway.base_url, api_key=gateway.key, max_retries=0) as c:
        raw = c.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": LONG}]
        )
    t = trace_of(gateway, raw.headers["x-keel-trace-id"])
    assert (t.input_tokens, t.cached_input_tokens) == (2000, 1024)
    assert t.cost_usd == pytest.approx(price("gpt-4o-mini", Usage(2000, 10, 1024)))
    assert t.cost_usd < price("gpt-4o-mini", Usage(2000, 10))
