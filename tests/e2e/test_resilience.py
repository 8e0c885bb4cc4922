"""Fault injection over real HTTP: the official SDKs → Keel → two independent fake upstreams.

Every case ends in a complete, correct answer or a clean error the SDK raises — never a truncated
answer presented as success. Providers: `primary` (openai → upstream A, the session `up`),
`backup` (openai → upstream B) and `ant` (anthropic → upstream B). Deadlines and breaker cooldowns
are short so the file runs in seconds. Timing is asserted only where it is the feature: the total
deadline (elapsed < deadline + 1 s) and Retry-After (honoured when under the cap, not sat out above it).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest

from keel.providers.prices import PriceBook
from keel.testing import FakeUpstream, Script
from keel.types import Usage
from tests.conftest import Gateway

PROMPT = "tell me something true"
ANSWER = "echo: " + PROMPT  # the fake's deterministic reply, one stream chunk per word
ASK: Any = [{"role": "user", "content": PROMPT}]
STATIC = "Keel is degraded right now; please try again shortly."
DOWN = Script(status=503)
RESILIENCE = {
    # 1.5 s, not less: on a loaded 2-core CI machine a healthy fake upstream's first token can take
    # longer than 0.5 s, which failed the backup of a fallback test once
    "ttft_timeout_s": 1.5,
    "idle_timeout_s": 1.5,
    "total_timeout_s": 6,
    "backoff_ms": 10,
    "retry_after_cap_s": 1,
    "breaker": {"failures": 3, "cooldown_s": 0.5},
}


def target(provider: str, model: str, window: int | None = None) -> dict[str, Any]:
    row: dict[str, Any] = {"provider": provider, "model": model}
    if window is not None:
        row["context_window"] = window
    return row


def config(a: FakeUpstream, b: FakeUpstream, tmp: Path, **resilience: Any) -> dict[str, Any]:
    return {
        "storage": {"url": f"sqlite:///{tmp}/keel.db"},
        "traces": {"spill_dir": str(tmp / "spill"), "flush_interval_ms": 10},
        "resilience": {**RESILIENCE, **resilience},
        "providers": {
            "primary": {"type": "openai", "base_url": a.url + "/v1", "api_key": "sk-a"},
            "backup": {"type": "openai", "base_url": b.url + "/v1", "api_key": "sk-b"},
            "ant": {"type": "anthropic", "base_url": b.url + "/v1", "api_key": "sk-ant"},
        },
        "models": {
            # resume: off keeps the answer to a stream broken after content an error event (tests/e2e/test_resume.py)
            "main": {"targets": [target("primary", "gpt-4o-mini"), target("backup", "gpt-4o-mini")], "resume": "off"},
            "solo": {"targets": [target("primary", "gpt-4o")], "fallbacks": ["small"]},
            "small": {"targets": [target("backup", "gpt-4o-mini")]},
            "static": {"targets": [target("primary", "gpt-4o-mini")], "static_answer": STATIC},
            "claude": {"targets": [target("ant", "claude-sonnet-4-5")]},
            "shape": {"targets": [target("primary", "gpt-4o-mini")], "fallbacks": ["claude"]},
            "claude_first": {"targets": [target("ant", "claude-sonnet-4-5"), target("backup", "gpt-4o-mini")]},
            "ctx": {
                "targets": [
                    target("primary", "gpt-4o-mini", 1000),
                    target("backup", "gpt-4o-mini", 1000),
                    target("backup", "gpt-4o", 100_000),
                ]
            },
            "ctx_small": {"targets": [target("primary", "gpt-4o-mini", 1000), target("backup", "gpt-4o-mini", 1000)]},
        },
    }


@pytest.fixture
def gw(make_gateway: Any, up: FakeUpstream, b: FakeUpstream, tmp_path: Path) -> Gateway:
    return make_gateway(config(up, b, tmp_path))  # type: ignore[no-any-return]


# ---- helpers -------------------------------------------------------------------------------


@dataclass
class Answer:
    text: str
    finish: list[str]
    headers: httpx.Headers


def client(gw: Gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.base_url, api_key=gw.key, max_retries=0, timeout=10)


def ask(gw: Gateway, model: str = "main", *, stream: bool = False, **extra: Any) -> Answer:
    """One chat call through the openai SDK; the SDK raises on any error, mid-stream included."""
    with client(gw) as c:
        raw = c.chat.completions.with_raw_response.create(model=model, messages=ASK, stream=stream, **extra)
        if not stream:
            choice = raw.parse().choices[0]
            return Answer(choice.message.content or "", [choice.finish_reason], raw.headers)
        chunks = [ch for ch in raw.parse() if ch.choices]
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks)
    finish = [ch.choices[0].finish_reason for ch in chunks if ch.choices[0].finish_reason]
    return Answer(text, finish, raw.headers)


def broken_stream(gw: Gateway, *, finished: bool = False) -> tuple[str, openai.APIError]:
    """A stream that must fail after its first content: what arrived, and the error the SDK raised."""
    received: list[str] = []
    with client(gw) as c, pytest.raises(openai.APIError) as info:
        for ch in c.chat.completions.create(model="main", messages=ASK, stream=True):
            received += [ch.choices[0].delta.content or ""] if ch.choices else []
            assert finished or not (ch.choices and ch.choices[0].finish_reason), "a cut stream cannot finish"
    return "".join(received), info.value


def served(answer: Answer, fallback: str, provider: str) -> None:
    assert answer.text == ANSWER
    assert answer.finish == ["stop"]
    assert (answer.headers["x-keel-fallback"], answer.headers["x-keel-provider"]) == (fallback, provider)


def trace(gw: Gateway, trace_id: str | None = None) -> Any:
    rows = gw.traces()
    if trace_id is None:
        assert len(rows) == 1, rows
        return rows[0]
    return next(t for t in rows if t.id == trace_id)


def steps(t: Any) -> list[tuple[str, str, str | None]]:
    """The attempt log as (level, outcome, error kind or skip reason)."""
    return [(e["level"], e["outcome"], e.get("kind") or e.get("why")) for e in t.attempt_log]


def models_asked(fake: FakeUpstream) -> list[str]:
    return [r["json"]["model"] for r in fake.requests]


# ---- retried on the same target ------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
def test_429_with_retry_after_under_the_cap_is_retried_on_the_same_target(
    gw: Gateway, up: FakeUpstream, b: FakeUpstream, stream: bool
) -> None:
    up.script(Script(status=429, retry_after=0.3))
    t0 = time.monotonic()
    answer = ask(gw, stream=stream)
    assert time.monotonic() - t0 >= 0.3  # Retry-After was honoured, not guessed
    served(answer, "primary", "primary")
    assert len(up.requests) == 2 and not b.requests
    t = trace(gw)
    assert (t.status, t.attempts, t.fallback) == ("ok", 2, "primary")
    assert steps(t) == [("primary", "error", "rate_limited"), ("primary", "ok", None)]


@pytest.mark.parametrize("stream", [False, True])
def test_one_500_is_retried_on_the_same_target(gw: Gateway, up: FakeUpstream, b: FakeUpstream, stream: bool) -> None:
    up.script(Script(status=500))
    served(ask(gw, stream=stream), "primary", "primary")
    assert len(up.requests) == 2 and not b.requests
    t = trace(gw)
    assert (t.status, t.attempts) == ("ok", 2)
    assert steps(t) == [("primary", "error", "server"), ("primary", "ok", None)]


# ---- moved to the next target --------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
def test_persistent_429_beyond_the_cap_moves_to_the_next_target(
    gw: Gateway, up: FakeUpstream, b: FakeUpstream, stream: bool
) -> None:
    up.script(Script(status=429, retry_after=30), Script(status=429, retry_after=30))
    t0 = time.monotonic()
    served(ask(gw, stream=stream), "target", "backup")
    assert time.monotonic() - t0 < 1  # did not sit out a 30 s Retry-After
    assert len(up.requests) == 1 and len(b.requests) == 1
    t = trace(gw)
    assert (t.status, t.attempts, t.provider) == ("ok", 2, "backup")
    assert steps(t) == [("primary", "error", "rate_limited"), ("target", "ok", None)]


@pytest.mark.parametrize("stream", [False, True])
def test_persistent_503_on_primary_is_served_by_backup(
    gw: Gateway, up: FakeUpstream, b: FakeUpstream, stream: bool
) -> None:
    up.script(DOWN, DOWN)
    served(ask(gw, stream=stream), "target", "backup")
    t = trace(gw)
    assert (t.status, t.attempts, t.provider) == ("ok", 3, "backup")
    assert steps(t) == [("primary", "error", "overloaded")] * 2 + [("target", "ok", None)]


@pytest.mark.parametrize("stream", [False, True])
def test_connection_reset_is_served_by_backup(gw: Gateway, up: FakeUpstream, b: FakeUpstream, stream: bool) -> None:
    up.script(Script(reset=True))
    served(ask(gw, stream=stream), "target", "backup")
    t = trace(gw)
    assert (t.status, t.attempts) == ("ok", 2)
    assert steps(t) == [("primary", "error", "network"), ("target", "ok", None)]


def test_slow_first_token_falls_back_invisibly(gw: Gateway, up: FakeUpstream, b: FakeUpstream) -> None:
    # Streams only: a one-body answer has no first token, so only the total deadline applies to it.
    up.script(Script(ttft=4))  # the TTFT deadline is 1.5 s
    served(ask(gw, stream=True), "target", "backup")
    t = trace(gw)
    assert (t.status, t.attempts) == ("ok", 2)
    assert steps(t) == [("primary", "error", "timeout"), ("target", "ok", None)]


def test_malformed_chunks_before_first_content_fall_back(gw: Gateway, up: FakeUpstream, b: FakeUpstream) -> None:
    up.script(Script(malformed_at=(0, 1)))  # one is skipped; the second fails the stream
    served(ask(gw, stream=True), "target", "backup")
    assert steps(trace(gw)) == [("primary", "error", "protocol"), ("target", "ok", None)]


# ---- the total deadline --------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
def test_an_upstream_that_never_answers_ends_cleanly_within_the_total_deadline(
    make_gateway: Any, up: FakeUpstream, b: FakeUpstream, tmp_path: Path, stream: bool
) -> None:
    # Total deadline 2 s, TTFT 1.2 s (streams only); `solo` has one target and its fallback hangs too.
    gw = make_gateway(config(up, b, tmp_path, total_timeout_s=2, ttft_timeout_s=1.2))
    up.script(*[Script(hang=True)] * 2)
    b.script(*[Script(hang=True)] * 2)
    for budget, header in ((2.0, {}), (1.0, {"x-keel-timeout": "1"})):
        t0 = time.monotonic()
        with client(gw) as c, pytest.raises(openai.APIStatusError) as info:
            c.chat.completions.create(model="solo", messages=ASK, stream=stream, extra_headers=header)
        assert time.monotonic() - t0 < budget + 1
        assert (info.value.status_code, info.value.code) == (504, "timeout")
        t = trace(gw, info.value.response.headers["x-keel-trace-id"])
        assert (t.status, t.http_status, t.error_kind) == ("error", 504, "timeout")
        if stream and budget == 2.0:  # TTFT ended the primary at 1.2 s; the total deadline, the fallback at 2 s
            assert steps(t) == [("primary", "error", "timeout"), ("alias:small", "error", "timeout")]
        else:  # the total deadline (or x-keel-timeout) ended the primary, leaving no time for the fallback
            assert steps(t) == [("primary", "error", "timeout")]


# ---- after the first content: an explicit error, never a truncated success --------------------


def test_stream_cut_mid_answer_raises_in_the_sdk(gw: Gateway, up: FakeUpstream, b: FakeUpstream) -> None:
    up.script(Script(cut_after=2))
    text, err = broken_stream(gw)
    assert text == "echo: tell " and ANSWER.startswith(text)
    assert isinstance(err.body, dict) and err.body["code"] == "network"
    t = trace(gw)
    assert (t.status, t.error_kind, t.attempts) == ("partial", "network", 1)
    assert steps(t) == [("primary", "failed mid-stream", "network")]
    assert not b.requests  # with resume off, a half-written answer is never continued by another model


def test_stream_stall_raises_in_the_sdk(gw: Gateway, up: FakeUpstream, b: FakeUpstream) -> None:
    up.script(Script(chunk_delay=4))  # the idle deadline is 1.5 s
    text, err = broken_stream(gw)
    assert text == "echo: "
    assert isinstance(err.body, dict) and err.body["code"] == "timeout"
    t = trace(gw)
    assert (t.status, t.error_kind) == ("partial", "timeout")
    assert "stalled" in t.error_message


def test_malformed_chunks_after_first_content_raise_in_the_sdk(gw: Gateway, up: FakeUpstream, b: FakeUpstream) -> None:
    up.script(Script(malformed_at=(2, 3)))
    text, err = broken_stream(gw)
    assert text == "echo: tell "
    assert isinstance(err.body, dict) and err.body["code"] == "protocol"
    assert (trace(gw).status, trace(gw).error_kind) == ("partial", "protocol")


def test_a_stream_that_ends_before_its_finish_ends_in_an_error_event(
    gw: Gateway, up: FakeUpstream, b: FakeUpstream
) -> None:
    # The body ended cleanly, but the upstream never said the answer was whole: the client must not be told it was.
    up.script(Script(end_after=2))
    text, err = broken_stream(gw)
    assert text == "echo: tell "
    assert isinstance(err.body, dict) and err.body["code"] == "protocol"
    t = trace(gw)
    assert (t.status, t.error_kind) == ("partial", "protocol")


def test_anthropic_sdk_sees_a_cut_stream_as_an_error(gw: Gateway, up: FakeUpstream, b: FakeUpstream) -> None:
    up.script(Script(cut_after=1))
    received: list[str] = []
    with anthropic_client(gw) as c, pytest.raises(anthropic.APIError):
        for event in c.messages.create(model="main", max_tokens=50, messages=ASK, stream=True):
            if event.type == "content_block_delta" and event.delta.type == "text_delta":
                received.append(event.delta.text)
            assert event.type != "message_stop", "a broken stream must not stop cleanly"
    assert "".join(received) == "echo: "
    assert trace(gw).status == "partial"


# ---- the request is the problem: passed on, not retried --------------------------------------


def test_context_length_exceeded_goes_only_to_a_larger_window(gw: Gateway, up: FakeUpstream, b: FakeUpstream) -> None:
    up.script(Script(status=400, error_code="context_length_exceeded"))
    answer = ask(gw, "ctx")
    assert answer.text == ANSWER and answer.headers["x-keel-model"] == "gpt-4o"
    assert models_asked(up) == ["gpt-4o-mini"]  # not retried on the same model...
    assert models_asked(b) == ["gpt-4o"]  # ...nor on its twin with the same window elsewhere
    t = trace(gw)
    assert (t.status, t.attempts, t.fallback) == ("ok", 2, "target")
    assert steps(t) == [
        ("primary", "error", "context_length"),
        ("target", "skipped", "context window not larger than the one exceeded"),
        ("target", "ok", None),
    ]


def test_context_length_exceeded_without_a_larger_window_is_a_400(
    gw: Gateway, up: FakeUpstream, b: FakeUpstream
) -> None:
    up.script(Script(status=400, error_code="context_length_exceeded"))
    with client(gw) as c, pytest.raises(openai.BadRequestError) as info:
        c.chat.completions.create(model="ctx_small", messages=ASK)
    assert info.value.code == "context_length_exceeded"
    assert len(up.requests) == 1 and not b.requests
    assert trace(gw).attempts == 1


@pytest.mark.parametrize("stream", [False, True])
def test_content_filter_400_is_passed_on_not_retried(
    gw: Gateway, up: FakeUpstream, b: FakeUpstream, stream: bool
) -> None:
    up.script(Script(status=400, error_code="content_filter"))
    with client(gw) as c, pytest.raises(openai.BadRequestError) as info:
        c.chat.completions.create(model="main", messages=ASK, stream=stream)
    assert info.value.code == "content_filter"
    assert len(up.requests) == 1 and not b.requests
    t = trace(gw)
    assert (t.status, t.http_status, t.attempts) == ("error", 400, 1)


# ---- a fallback that cannot take the request's shape ---------------------------------------

# A field Anthropic targets refuse (a 400 naming it: their answer has no logprobs), which OpenAI targets take.
SHAPE: Any = {"logprobs": True}


def test_a_fallback_that_rejects_the_shape_ends_in_a_clean_503(gw: Gateway, up: FakeUpstream, b: FakeUpstream) -> None:
    # Primary down; the fallback is an Anthropic target, whose codec refuses logprobs.
    up.script(DOWN, DOWN)
    with client(gw) as c, pytest.raises(openai.APIStatusError) as info:
        c.chat.completions.create(model="shape", messages=ASK, **SHAPE)
    # Not a 400: the request is fine, and would be served once the primary is back.
    assert (info.value.status_code, info.value.code) == (503, "all_targets_failed")
    assert info.value.response.headers["retry-after"]
    assert not b.requests  # refused before anything was sent
    t = trace(gw)
    assert (t.status, t.http_status) == ("error", 503)
    assert steps(t) == [("primary", "error", "overloaded")] * 2 + [("alias:claude", "error", "bad_request")]


def test_a_target_that_rejects_the_shape_does_not_block_the_next(
    gw: Gateway, up: FakeUpstream, b: FakeUpstream
) -> None:
    answer = ask(gw, "claude_first", **SHAPE)
    assert answer.text == ANSWER and answer.headers["x-keel-provider"] == "backup"
    assert steps(trace(gw)) == [("primary", "error", "bad_request"), ("target", "ok", None)]
    assert b.requests[0]["json"]["logprobs"] is True


def test_a_shape_no_target_can_take_is_the_honest_400(gw: Gateway, up: FakeUpstream, b: FakeUpstream) -> None:
    with client(gw) as c, pytest.raises(openai.BadRequestError) as info:
        c.chat.completions.create(model="claude", messages=ASK, **SHAPE)
    assert info.value.param == "logprobs"
    assert not b.requests


# ---- the last levels: static answer, then a clean error ---------------------------------------


@pytest.mark.parametrize("stream", [False, True])
def test_every_target_down_gives_the_static_answer(
    gw: Gateway, up: FakeUpstream, b: FakeUpstream, stream: bool
) -> None:
    up.script(DOWN, DOWN)
    answer = ask(gw, "static", stream=stream)
    assert answer.text == STATIC and answer.finish == ["stop"]
    assert (answer.headers["x-keel-fallback"], answer.headers["x-keel-provider"]) == ("static", "static")
    t = trace(gw)
    assert (t.status, t.fallback, t.cost_usd) == ("ok", "static", 0.0)
    assert steps(t) == [("primary", "error", "overloaded")] * 2 + [("static", "ok", None)]


@pytest.mark.parametrize(
    ("a_fails", "b_fails", "status", "code", "retry_after"),
    [
        ([DOWN, DOWN], [DOWN, DOWN], 503, "overloaded", "1"),
        ([DOWN, DOWN], [Script(status=500)] * 2, 503, "all_targets_failed", "1"),
        ([Script(status=429, retry_after=7)], [Script(status=429, retry_after=9)], 429, "rate_limited", "9"),
    ],
    ids=["503-everywhere", "mixed-failures", "429-everywhere"],
)
def test_all_down_and_no_static_answer_is_a_clean_error_with_retry_after(
    gw: Gateway,
    up: FakeUpstream,
    b: FakeUpstream,
    a_fails: list[Script],
    b_fails: list[Script],
    status: int,
    code: str,
    retry_after: str,
) -> None:
    up.script(*a_fails)
    b.script(*b_fails)
    with client(gw) as c, pytest.raises(openai.APIStatusError) as info:
        c.chat.completions.create(model="main", messages=ASK)
    assert (info.value.status_code, info.value.code) == (status, code)
    assert info.value.response.headers["retry-after"] == retry_after
    t = trace(gw)
    assert (t.status, t.http_status, t.attempts) == ("error", status, len(a_fails) + len(b_fails))
    assert t.input_tokens is None and not t.cost_usd


# ---- accounting: the response names the model that served; only it is billed ------------------

SERVED_MODEL = "gpt-4o-mini-2024-07-18"
SERVED_USAGE = {"prompt_tokens": 1000, "completion_tokens": 500}


@pytest.mark.parametrize("stream", [False, True])
def test_fallback_accounting(gw: Gateway, up: FakeUpstream, b: FakeUpstream, stream: bool) -> None:
    up.script(DOWN, DOWN)  # `solo` is gpt-4o on primary; its fallback alias `small` is gpt-4o-mini on backup
    b.script(Script(model=SERVED_MODEL, usage=SERVED_USAGE))
    extra: Any = {"stream_options": {"include_usage": True}} if stream else {}
    with client(gw) as c:
        raw = c.chat.completions.with_raw_response.create(model="solo", messages=ASK, stream=stream, **extra)
        if stream:
            chunks = list(raw.parse())
            text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
            usage = chunks[-1].usage
        else:
            reply = raw.parse()
            text, usage = reply.choices[0].message.content, reply.usage
    assert text == ANSWER
    assert usage is not None and (usage.prompt_tokens, usage.completion_tokens) == (1000, 500)
    h = raw.headers
    assert (h["x-keel-fallback"], h["x-keel-provider"], h["x-keel-model"]) == ("alias:small", "backup", SERVED_MODEL)
    t = trace(gw)
    prices = PriceBook.bundled()
    billed = Usage(input_tokens=1000, output_tokens=500)
    assert (t.model, t.provider, t.input_tokens, t.output_tokens) == (SERVED_MODEL, "backup", 1000, 500)
    assert t.cost_usd == prices.cost("gpt-4o-mini", billed)
    assert t.cost_usd != prices.cost("gpt-4o", billed)  # not priced as the model that failed
    assert steps(t) == [("primary", "error", "overloaded")] * 2 + [("alias:small", "ok", None)]


def test_a_failed_attempt_that_reported_usage_is_not_billed(gw: Gateway, up: FakeUpstream, b: FakeUpstream) -> None:
    # `claude_first`: the Anthropic target sends message_start (with its input usage), then breaks.
    b.script(Script(malformed_at=(0, 1), usage={"prompt_tokens": 9999}), Script(model=SERVED_MODEL, usage=SERVED_USAGE))
    answer = ask(gw, "claude_first", stream=True)
    assert answer.text == ANSWER and answer.headers["x-keel-model"] == SERVED_MODEL
    t = trace(gw)
    assert (t.input_tokens, t.output_tokens, t.attempts) == (1000, 500, 2)
    assert t.cost_usd == PriceBook.bundled().cost("gpt-4o-mini", Usage(input_tokens=1000, output_tokens=500))


# ---- the Anthropic SDK through /v1/messages ----------------------------------------------------


def anthropic_client(gw: Gateway) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gw.url, api_key=gw.key, max_retries=0, timeout=10)


@pytest.mark.parametrize("stream", [False, True])
def test_anthropic_sdk_primary_down_backup_serves(gw: Gateway, up: FakeUpstream, b: FakeUpstream, stream: bool) -> None:
    up.script(DOWN, DOWN)
    with anthropic_client(gw) as c:
        raw = c.messages.with_raw_response.create(model="main", max_tokens=50, messages=ASK, stream=stream)
        if stream:
            events = list(raw.parse())
            text = "".join(
                e.delta.text for e in events if e.type == "content_block_delta" and e.delta.type == "text_delta"
            )
            assert events[-1].type == "message_stop"
        else:
            message = raw.parse()
            text = "".join(block.text for block in message.content if block.type == "text")
            assert message.stop_reason == "end_turn"
    assert text == ANSWER
    assert (raw.headers["x-keel-fallback"], raw.headers["x-keel-provider"]) == ("target", "backup")
    t = trace(gw)
    assert (t.endpoint, t.status, t.attempts) == ("messages", "ok", 3)


# ---- breakers: a flapping primary, a hard-down one ---------------------------------------------


def test_a_flapping_primary_opens_its_breaker_then_probes_and_closes(
    gw: Gateway, up: FakeUpstream, b: FakeUpstream
) -> None:
    # "Down for a minute", compressed: primary answers 503 for 2 s (the breaker cools down in 0.5 s).
    up.script(*[DOWN] * 500)
    seen: list[str] = []
    with client(gw) as c:

        def call() -> str:
            raw = c.chat.completions.with_raw_response.create(model="main", messages=ASK)
            assert raw.parse().choices[0].message.content == ANSWER  # every call succeeds
            seen.append(raw.headers["x-keel-fallback"])
            return raw.headers["x-keel-fallback"]

        down_until = time.monotonic() + 2
        while time.monotonic() < down_until:
            assert call() == "target"
            time.sleep(0.02)
        calls_while_down, hits_while_down = len(seen), len(up.requests)
        up.reset()  # primary recovers
        recovered = time.monotonic()
        while call() != "primary":  # the next half-open probe finds it healthy
            assert time.monotonic() - recovered < 2, "the breaker never let a probe through"
            time.sleep(0.02)
        after = [call() for _ in range(10)]
    assert after == ["primary"] * 10  # closed again: primary serves every call
    logs = [steps(t) for t in gw.traces()]
    assert all(t.status == "ok" for t in gw.traces())
    # While open, calls skipped primary at no cost; it saw the calls that opened the breaker (3 failures,
    # each call retrying once) and one failed probe per 0.5 s cooldown: well under one hit per call.
    assert sum(("primary", "skipped", "circuit breaker open") in log for log in logs) >= calls_while_down // 2
    failing = sum(log[0][:2] == ("primary", "error") for log in logs)
    assert failing >= 3  # the two calls that opened it, then at least one failed half-open probe
    assert hits_while_down < calls_while_down


def test_with_primary_hard_down_every_call_succeeds(gw: Gateway, up: FakeUpstream, b: FakeUpstream) -> None:
    up.script(*[Script(reset=True)] * 500)
    t0 = time.monotonic()
    with client(gw) as c:
        for i in range(200):
            if i % 2:
                chunks = [ch for ch in c.chat.completions.create(model="main", messages=ASK, stream=True) if ch.choices]
                text = "".join(ch.choices[0].delta.content or "" for ch in chunks)
            else:
                text = c.chat.completions.create(model="main", messages=ASK).choices[0].message.content or ""
            assert text == ANSWER, i
    rows = gw.traces()
    assert len(rows) == 200 and all(t.status == "ok" and t.provider == "backup" for t in rows)
    # The open breaker kept calls off the dead provider: 3 to open it, then one probe per 0.5 s cooldown.
    assert len(up.requests) <= 3 + (time.monotonic() - t0) / 0.5 + 2
