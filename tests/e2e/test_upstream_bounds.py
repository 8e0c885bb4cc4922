"""Upstream bounds: an endless, gigantic or runaway answer is cut with a clear error, not held in memory.

Driven over real HTTP with the official SDK against the fake upstream, with Keel's default bounds
(16 MiB per stream, 32 MiB per body, 1,024 tokens past max_tokens, 1 MiB of response text per trace).
"""

from __future__ import annotations

import threading
import tracemalloc
from pathlib import Path
from typing import Any

import openai
import pytest

from keel.testing import FakeUpstream, Script
from keel.traces.writer import read_trace
from tests.conftest import Gateway, base_config

MiB = 2**20
ASK = [{"role": "user", "content": "tell me everything"}]


@pytest.fixture
def gw(make_gateway: Any, up: FakeUpstream, tmp_path: Path) -> Gateway:
    raw = base_config(up, f"sqlite:///{tmp_path / 'keel.db'}", tmp_path)
    raw["providers"]["twin"] = {"type": "openai", "base_url": up.url + "/v1", "api_key": "sk-twin"}
    raw["models"]["main"] = {
        "targets": [{"provider": "oai", "model": "gpt-4o-mini"}, {"provider": "twin", "model": "gpt-4o"}]
    }
    return make_gateway(raw)  # type: ignore[no-any-return]


def client(gw: Gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.base_url, api_key=gw.key, max_retries=0, timeout=30)


def stream_until_error(gw: Gateway, max_tokens: int | None = None) -> tuple[int, openai.APIError]:
    """Read a stream to its end; returns the characters received and the error it must end with."""
    received = 0
    extra = {} if max_tokens is None else {"max_tokens": max_tokens}
    with client(gw) as c, pytest.raises(openai.APIError) as caught:
        for chunk in c.chat.completions.create(model="main", messages=ASK, stream=True, **extra):  # type: ignore[call-overload]
            received += len(chunk.choices[0].delta.content or "") if chunk.choices else 0
            assert not (chunk.choices and chunk.choices[0].finish_reason), "a cut stream must not finish cleanly"
    return received, caught.value


def last_trace(gw: Gateway) -> Any:
    rows = gw.traces()
    assert len(rows) == 1, rows
    return rows[0]


def test_an_endless_stream_is_cut_at_the_stream_bound_with_memory_bounded(gw: Gateway, up: FakeUpstream) -> None:
    up.script(Script(text="x" * 16_000, endless=True))  # 16 kB chunks, forever
    tracemalloc.start()
    try:
        received, err = stream_until_error(gw)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert isinstance(err.body, dict) and err.body["code"] == "protocol"
    assert "exceeds 16777216 bytes" in err.message
    assert 15 * MiB < received < 16 * MiB  # everything up to the bound was forwarded, nothing past it
    assert up.requests[-1]["streamed"] < 32 * MiB  # Keel stopped reading (the rest sat in socket buffers)
    assert peak < 96 * MiB  # the test process (gateway, fake upstream, SDK) never held the endless stream
    t = last_trace(gw)
    assert (t.status, t.error_kind, t.attempts) == ("partial", "protocol", 1)
    full = read_trace(gw.runtime.store, gw.runtime.blobs, t.id)  # its payload went to the blob store
    assert full is not None and full.response is not None
    content = full.response["content"]
    assert len(content) < 2**20 + 100 and content.endswith("more characters]")  # the trace keeps 1 MiB of it


def test_other_calls_are_served_while_an_endless_stream_runs(gw: Gateway, up: FakeUpstream) -> None:
    up.script(Script(text="y" * 16_000, endless=True, chunk_delay=0.001))
    outcome: list[Any] = []
    reader = threading.Thread(target=lambda: outcome.append(stream_until_error(gw)))
    reader.start()
    try:
        while not up.requests or up.requests[-1]["streamed"] < MiB:  # the stream is well under way
            threading.Event().wait(0.01)
            assert reader.is_alive()
        with client(gw) as c:
            answers = [c.chat.completions.create(model="gpt-4o-mini", messages=ASK) for _ in range(5)]
        assert [a.choices[0].message.content for a in answers] == ["echo: tell me everything"] * 5
    finally:
        reader.join(30)
    assert outcome and outcome[0][1].body["code"] == "protocol"


def test_a_body_over_the_bound_fails_over_before_anything_is_sent(gw: Gateway, up: FakeUpstream) -> None:
    up.script(Script(text="z" * (33 * MiB)))  # a non-streamed answer past the 32 MiB default
    with client(gw) as c:
        answer = c.chat.completions.create(model="main", messages=ASK)
    assert answer.choices[0].message.content == "echo: tell me everything"  # the second target's answer
    t = last_trace(gw)
    assert (t.status, t.attempts, t.fallback) == ("ok", 2, "target")
    assert [(e["outcome"], e.get("kind")) for e in t.attempt_log] == [("error", "protocol"), ("ok", None)]


def test_a_stream_far_past_max_tokens_is_cut(gw: Gateway, up: FakeUpstream) -> None:
    up.script(Script(text="tok " * 5000))  # 5,000 chunks against max_tokens=16 (+ 1,024 allowed)
    received, err = stream_until_error(gw, max_tokens=16)
    assert isinstance(err.body, dict) and err.body["code"] == "protocol"
    assert "went past 1040 tokens" in err.message
    assert 1040 * 4 <= received <= 1041 * 4  # cut at the first chunk past the bound
    t = last_trace(gw)
    assert (t.status, t.error_kind) == ("partial", "protocol")


def test_a_stream_within_its_max_tokens_allowance_is_whole(gw: Gateway, up: FakeUpstream) -> None:
    up.script(Script(text="tok " * 1000))  # past max_tokens=16, but within the allowance: not cut
    with client(gw) as c:
        chunks = list(c.chat.completions.create(model="main", messages=ASK, stream=True, max_tokens=16))
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices) == "tok " * 1000
