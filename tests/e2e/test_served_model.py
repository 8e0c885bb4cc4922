"""The `model` field names the model that answered, as OpenAI and LiteLLM do; the alias stays in a header.

Over real HTTP with the official SDKs: a fallback's answer (non-streamed, streamed, its usage chunk),
a cached answer (the model that produced it), the Anthropic-shaped `/v1/messages` edge, embeddings,
and the static answer. The fake upstream reports a dated model id, as real providers do.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest

from keel.testing import FakeUpstream, Script
from tests.conftest import Gateway

ASK: Any = [{"role": "user", "content": "which model are you"}]
DOWN = Script(status=503)
DATED = "gpt-4o-mini-2024-07-18"  # what the backup reports answering with


@pytest.fixture
def gw(make_gateway: Any, up: FakeUpstream, tmp_path: Path) -> Gateway:
    raw = {
        "storage": {"url": f"sqlite:///{tmp_path}/keel.db"},
        "traces": {"spill_dir": str(tmp_path / "spill"), "flush_interval_ms": 10},
        "resilience": {"backoff_ms": 1, "retries_per_target": 0},
        "cache": {"enabled": True, "url": "memory://", "nondeterministic": True},
        "providers": {
            "primary": {"type": "openai", "base_url": up.url + "/v1", "api_key": "sk-a"},
            "backup": {"type": "openai", "base_url": up.url + "/v1", "api_key": "sk-b"},
            "ant": {"type": "anthropic", "base_url": up.url + "/v1", "api_key": "sk-ant"},
        },
        "models": {
            "main": {"targets": [{"provider": "primary", "model": "gpt-4o"}], "fallbacks": ["small"]},
            "small": {"targets": [{"provider": "backup", "model": "gpt-4o-mini"}]},
            "claude": {"targets": [{"provider": "ant", "model": "claude-sonnet-4-5"}]},
            "degraded": {"targets": [{"provider": "primary", "model": "gpt-4o"}], "static_answer": "busy, sorry"},
            "embed": {"targets": [{"provider": "backup", "model": "text-embedding-3-small"}]},
        },
    }
    return make_gateway(raw)  # type: ignore[no-any-return]


def client(gw: Gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.base_url, api_key=gw.key, max_retries=0, timeout=10)


def test_a_fallbacks_answer_names_the_fallbacks_model(gw: Gateway, up: FakeUpstream) -> None:
    up.script(DOWN, Script(model=DATED))
    with client(gw) as c:
        raw = c.chat.completions.with_raw_response.create(model="main", messages=ASK)
    reply = raw.parse()
    assert reply.model == DATED
    assert (raw.headers["x-keel-model"], raw.headers["x-keel-alias"], raw.headers["x-keel-fallback"]) == (
        DATED,
        "main",
        "alias:small",
    )
    assert gw.traces()[0].alias == "main"


def test_every_chunk_of_a_fallbacks_stream_names_its_model(gw: Gateway, up: FakeUpstream) -> None:
    up.script(DOWN, Script(model=DATED))
    with client(gw) as c:
        chunks = list(
            c.chat.completions.create(model="main", messages=ASK, stream=True, stream_options={"include_usage": True})
        )
    assert chunks[-1].usage is not None  # the usage chunk too
    assert {ch.model for ch in chunks} == {DATED}


@pytest.mark.parametrize("stream", [False, True])
def test_a_cached_answer_names_the_model_that_produced_it(gw: Gateway, up: FakeUpstream, stream: bool) -> None:
    up.script(Script(model="claude-sonnet-4-5-20250929"))
    question: Any = [{"role": "user", "content": f"cache me {stream}"}]

    def ask() -> tuple[str, str]:
        with client(gw) as c:
            raw = c.chat.completions.with_raw_response.create(model="claude", messages=question, stream=stream)
            if stream:
                return {ch.model for ch in raw.parse()}.pop(), raw.headers["x-keel-cache"]
            return raw.parse().model, raw.headers.get("x-keel-cache", "miss")

    assert ask() == ("claude-sonnet-4-5-20250929", "miss")
    stage = gw.runtime.cache_stage
    assert stage is not None
    deadline = time.monotonic() + 5
    while stage.counts.stored < 1 and time.monotonic() < deadline:  # the answer is kept after the response
        time.sleep(0.01)
    assert ask() == ("claude-sonnet-4-5-20250929", "hit")
    assert len(up.requests) == 1


@pytest.mark.parametrize("stream", [False, True])
def test_the_messages_edge_names_the_model_that_answered(gw: Gateway, up: FakeUpstream, stream: bool) -> None:
    up.script(DOWN, Script(model=DATED))
    with anthropic.Anthropic(base_url=gw.url, api_key=gw.key, max_retries=0, timeout=10) as c:
        if stream:
            with c.messages.stream(model="main", max_tokens=50, messages=ASK) as s:
                model = s.get_final_message().model
        else:
            model = c.messages.create(model="main", max_tokens=50, messages=ASK).model
    assert model == DATED


def test_embeddings_name_the_model_that_answered(gw: Gateway, up: FakeUpstream) -> None:
    up.script(Script(model="text-embedding-3-small-v2"))
    with client(gw) as c:
        assert c.embeddings.create(model="embed", input="hello").model == "text-embedding-3-small-v2"


@pytest.mark.parametrize("stream", [False, True])
def test_the_static_answer_is_named_static(gw: Gateway, up: FakeUpstream, stream: bool) -> None:
    up.script(DOWN)
    with client(gw) as c:
        if stream:
            models = {ch.model for ch in c.chat.completions.create(model="degraded", messages=ASK, stream=True)}
        else:
            models = {c.chat.completions.create(model="degraded", messages=ASK).model}
    assert models == {"static"}  # no model answered: Keel did, and says so (as its trace and x-keel-model do)
