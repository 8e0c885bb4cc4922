"""What Keel accepts from upstreams, end to end: the official SDKs → Keel → the fake upstream.

A 200 that is an error object or has no answer is an upstream error, retried and failed over like
any other; a stream is complete when it finished, with or without its end marker; one malformed
event is skipped and noted, not fatal; and an upstream's error text reaches nobody with a key in it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest

from keel.testing import FakeUpstream, Script
from tests.conftest import Gateway, base_config

ASK: Any = [{"role": "user", "content": "tell me something true"}]
ANSWER = "echo: tell me something true"  # the fake's reply, one stream chunk per word
PROVIDER_KEYS = ["sk-upstream-SECRET-openai", "sk-ant-SECRET-anthropic"]  # conftest.base_config's


def config(up: FakeUpstream, tmp: Path) -> dict[str, Any]:
    raw = base_config(up, f"sqlite:///{tmp}/keel.db", tmp)
    raw["resilience"] = {"backoff_ms": 10, "ttft_timeout_s": 5, "idle_timeout_s": 5}
    raw["models"]["pair"] = {
        "targets": [{"provider": "oai", "model": "gpt-4o-mini"}, {"provider": "oai", "model": "gpt-4o"}]
    }
    raw["models"]["claude_pair"] = {
        "targets": [{"provider": "ant", "model": "claude-sonnet-4-5"}, {"provider": "ant", "model": "claude-haiku-4-5"}]
    }
    return raw


@pytest.fixture
def gw(make_gateway: Any, up: FakeUpstream, tmp_path: Path) -> Gateway:
    return make_gateway(config(up, tmp_path))  # type: ignore[no-any-return]


def oai(gw: Gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.base_url, api_key=gw.key, max_retries=0, timeout=10)


def ant(gw: Gateway) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gw.url, api_key=gw.key, max_retries=0, timeout=10)


def only(gw: Gateway) -> Any:
    rows = gw.traces()
    assert len(rows) == 1, rows
    return rows[0]


def steps(t: Any) -> list[tuple[str, str, str | None]]:
    return [(e["level"], e["outcome"], e.get("kind")) for e in t.attempt_log]


def stream_text(gw: Gateway, model: str, **extra: Any) -> tuple[str, list[str], Any]:
    """(text, finish reasons, last chunk) of a streamed chat call through the openai SDK."""
    with oai(gw) as c:
        chunks = list(c.chat.completions.create(model=model, messages=ASK, stream=True, **extra))
    with_choices = [ch for ch in chunks if ch.choices]
    text = "".join(ch.choices[0].delta.content or "" for ch in with_choices)
    return text, [ch.choices[0].finish_reason for ch in with_choices if ch.choices[0].finish_reason], chunks[-1]


# ---- item 9: a 200 that is no answer is an upstream error ---------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
def test_an_error_object_under_200_is_retried_then_failed_over(gw: Gateway, up: FakeUpstream, stream: bool) -> None:
    up.script(Script(error_in_200=529), Script(error_in_200=529))  # overloaded: one retry, then the next target
    with oai(gw) as c:
        r = c.chat.completions.with_raw_response.create(model="pair", messages=ASK, stream=stream)
        text = (
            r.parse().choices[0].message.content
            if not stream
            else "".join(ch.choices[0].delta.content or "" for ch in r.parse() if ch.choices)
        )
    assert text == ANSWER and r.headers["x-keel-fallback"] == "target"
    assert [q["json"]["model"] for q in up.requests] == ["gpt-4o-mini", "gpt-4o-mini", "gpt-4o"]
    t = only(gw)
    assert t.status == "ok"
    assert steps(t) == [("primary", "error", "overloaded")] * 2 + [("target", "ok", None)]


@pytest.mark.parametrize(
    "body",
    [{"id": "chatcmpl-x", "object": "chat.completion", "choices": []}, {"id": "chatcmpl-x", "choices": None}, {}, [1]],
)
def test_a_200_without_choices_fails_over_as_a_protocol_error(gw: Gateway, up: FakeUpstream, body: Any) -> None:
    up.script(Script(body_override=body))
    with oai(gw) as c:
        r = c.chat.completions.with_raw_response.create(model="pair", messages=ASK)
    assert r.parse().choices[0].message.content == ANSWER
    assert steps(only(gw)) == [("primary", "error", "protocol"), ("target", "ok", None)]


@pytest.mark.parametrize("stream", [False, True])
def test_an_error_in_200_from_the_only_target_reaches_the_client_as_its_error(
    gw: Gateway, up: FakeUpstream, stream: bool
) -> None:
    up.script(Script(error_in_200=429), Script(error_in_200=429))
    with oai(gw) as c, pytest.raises(openai.RateLimitError) as info:
        list(c.chat.completions.create(model="gpt-4o-mini", messages=ASK, stream=True)) if stream else (
            c.chat.completions.create(model="gpt-4o-mini", messages=ASK)
        )
    assert info.value.status_code == 429 and info.value.code == "rate_limited"
    t = only(gw)
    assert (t.status, t.error_kind, t.output_tokens) == ("error", "rate_limited", None)


@pytest.mark.parametrize("stream", [False, True])
def test_anthropic_errors_and_non_messages_under_200_fail_over(gw: Gateway, up: FakeUpstream, stream: bool) -> None:
    first = Script(error_in_200=529) if stream else Script(body_override={"id": "msg_x", "type": "message"})
    up.script(first, Script(error_in_200=529))
    with ant(gw) as c:
        if stream:
            events = list(c.messages.create(model="claude_pair", max_tokens=50, messages=ASK, stream=True))
            assert events[-1].type == "message_stop"
            text = "".join(
                e.delta.text for e in events if e.type == "content_block_delta" and e.delta.type == "text_delta"
            )
        else:
            block = c.messages.create(model="claude_pair", max_tokens=50, messages=ASK).content[0]
            text = block.text if block.type == "text" else ""
    assert text == ANSWER
    kinds = [k for _, outcome, k in steps(only(gw)) if outcome == "error"]
    assert kinds == (["overloaded", "overloaded"] if stream else ["protocol", "overloaded"])


# ---- item 14: finished without [DONE] is complete ------------------------------------------------


def test_openai_stream_without_done_is_a_complete_answer_with_its_usage(gw: Gateway, up: FakeUpstream) -> None:
    up.script(Script(no_done=True, usage={"prompt_tokens": 11, "completion_tokens": 5}))
    text, finishes, last = stream_text(gw, "gpt-4o-mini", stream_options={"include_usage": True})
    assert (text, finishes) == (ANSWER, ["stop"])
    assert last.usage is not None and (last.usage.prompt_tokens, last.usage.completion_tokens) == (11, 5)
    t = only(gw)
    assert (t.status, t.input_tokens, t.output_tokens) == ("ok", 11, 5)


def test_anthropic_stream_without_message_stop_is_a_complete_answer_with_its_usage(
    gw: Gateway, up: FakeUpstream
) -> None:
    up.script(Script(no_done=True, usage={"prompt_tokens": 11, "completion_tokens": 5}))
    with ant(gw) as c:
        events = list(c.messages.create(model="claude", max_tokens=50, messages=ASK, stream=True))
    assert events[-1].type == "message_stop"
    delta = next(e for e in events if e.type == "message_delta")
    assert (delta.delta.stop_reason, delta.usage.output_tokens) == ("end_turn", 5)
    t = only(gw)
    assert (t.status, t.input_tokens, t.output_tokens) == ("ok", 11, 5)


def test_openai_sdk_over_an_anthropic_stream_without_message_stop(gw: Gateway, up: FakeUpstream) -> None:
    up.script(Script(no_done=True, usage={"prompt_tokens": 11, "completion_tokens": 5}))
    text, finishes, last = stream_text(gw, "claude", stream_options={"include_usage": True})
    assert (text, finishes, last.usage.completion_tokens) == (ANSWER, ["stop"], 5)


@pytest.mark.parametrize("model", ["gpt-4o-mini", "claude"])
def test_a_body_that_ends_before_the_finish_is_still_an_error(gw: Gateway, up: FakeUpstream, model: str) -> None:
    up.script(Script(end_after=2))
    with oai(gw) as c, pytest.raises(openai.APIError) as info:
        list(c.chat.completions.create(model=model, messages=ASK, stream=True))
    assert isinstance(info.value.body, dict) and info.value.body["code"] == "protocol"
    assert (only(gw).status, only(gw).error_kind) == ("partial", "protocol")


# ---- item 15: one malformed event is skipped and counted, two fail ----------------------------------


@pytest.mark.parametrize("model", ["gpt-4o-mini", "claude"])
def test_one_malformed_event_is_skipped_and_noted_on_the_trace(gw: Gateway, up: FakeUpstream, model: str) -> None:
    up.script(Script(malformed_at=1))  # the word "tell " is lost with its chunk
    text, finishes, _ = stream_text(gw, model)
    assert (text, finishes) == ("echo: me something true", ["stop"])
    t = only(gw)
    assert (t.status, t.tags["keel.malformed_events"]) == ("ok", "1")


def test_one_malformed_event_through_the_anthropic_sdk(gw: Gateway, up: FakeUpstream) -> None:
    up.script(Script(malformed_at=0))
    with ant(gw) as c:
        events = list(c.messages.create(model="claude", max_tokens=50, messages=ASK, stream=True))
    assert events[-1].type == "message_stop"
    assert only(gw).tags["keel.malformed_events"] == "1"


@pytest.mark.parametrize("model", ["gpt-4o-mini", "claude"])
def test_two_malformed_events_after_content_end_in_an_error_event(gw: Gateway, up: FakeUpstream, model: str) -> None:
    up.script(Script(malformed_at=(1, 3)))
    received: list[str] = []
    with oai(gw) as c, pytest.raises(openai.APIError) as info:
        for ch in c.chat.completions.create(model=model, messages=ASK, stream=True):
            received += [ch.choices[0].delta.content or ""] if ch.choices else []
    assert "".join(received) == "echo: me "
    assert isinstance(info.value.body, dict) and info.value.body["code"] == "protocol"
    assert only(gw).status == "partial"


# ---- item 11: upstream words reach no one with a credential in them ------------------------------------


def leaky(gw: Gateway, *extra: str) -> Script:
    """A 400 whose message holds the provider keys, the caller's virtual key, and echoes the request headers."""
    message = "bad request near " + " ".join([*PROVIDER_KEYS, gw.key, *extra])
    return Script(status=400, error_body={"error": {"message": message, "param": gw.key}}, echo_headers=True)


def secrets_of(gw: Gateway, *extra: str) -> list[str]:
    return [*PROVIDER_KEYS, gw.key, *extra]


def assert_clean(text: str, secrets: list[str]) -> None:
    leaked = [s for s in secrets if s in text]
    assert not leaked, f"{leaked} leaked into {text!r}"


def test_an_upstream_400_echoing_keys_and_headers_reaches_the_client_redacted(
    gw: Gateway, up: FakeUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    up.script(leaky(gw))
    with oai(gw) as c, pytest.raises(openai.BadRequestError) as info:
        c.chat.completions.create(model="gpt-4o-mini", messages=ASK)
    body = info.value.response.text
    assert up.requests[0]["headers"]["authorization"] == f"Bearer {PROVIDER_KEYS[0]}"  # what the upstream echoed
    assert "bad request near" in body and "[REDACTED:api_key]" in body  # the message, with holes where keys were
    assert_clean(body, secrets_of(gw))
    t = only(gw)
    assert t.error_message is not None and "bad request near" in t.error_message
    assert_clean(t.error_message, secrets_of(gw))
    assert_clean(caplog.text, secrets_of(gw))


def test_an_upstream_error_mid_stream_reaches_the_sse_error_event_redacted(
    gw: Gateway, up: FakeUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    leak = leaky(gw)
    up.script(Script(error_in_200=500, error_after=2, error_body=leak.error_body, echo_headers=True))
    received: list[str] = []
    with oai(gw) as c, pytest.raises(openai.APIError) as info:
        for ch in c.chat.completions.create(model="gpt-4o-mini", messages=ASK, stream=True):
            received += [ch.choices[0].delta.content or ""] if ch.choices else []
    assert "".join(received) == "echo: tell "  # committed: the error comes as an SSE event
    event = str(info.value.body)
    assert "bad request near" in event
    assert_clean(event, secrets_of(gw))
    assert_clean(only(gw).error_message or "", secrets_of(gw))
    assert_clean(caplog.text, secrets_of(gw))


@pytest.mark.parametrize("stream", [False, True])
def test_anthropic_shaped_errors_are_redacted_too(gw: Gateway, up: FakeUpstream, stream: bool) -> None:
    leak = leaky(gw)
    if stream:
        up.script(Script(error_in_200=500, error_after=1, error_body=leak.error_body, echo_headers=True))
    else:
        up.script(leak)
    with ant(gw) as c, pytest.raises(anthropic.APIError) as info:
        if stream:
            list(c.messages.create(model="claude", max_tokens=50, messages=ASK, stream=True))
        else:
            c.messages.create(model="claude", max_tokens=50, messages=ASK)
    seen = str(info.value.body) + str(info.value)
    assert "bad request near" in seen
    assert_clean(seen, secrets_of(gw))
    assert_clean(only(gw).error_message or "", secrets_of(gw))


def test_a_provider_key_from_the_environment_is_redacted_exactly(
    make_gateway: Any, up: FakeUpstream, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = "envkey0123456789abcdefXYZ"  # no shape a detector knows: only the exact secret finds it
    monkeypatch.setenv("OPENAI_API_KEY", key)
    raw = config(up, tmp_path)
    del raw["providers"]["oai"]["api_key"]
    gw: Gateway = make_gateway(raw)
    up.script(Script(status=400, error_body={"error": {"message": f"key {key} is not valid here"}}))
    with oai(gw) as c, pytest.raises(openai.BadRequestError) as info:
        c.chat.completions.create(model="gpt-4o-mini", messages=ASK)
    assert up.requests[0]["headers"]["authorization"] == f"Bearer {key}"
    assert "is not valid here" in info.value.response.text
    assert_clean(info.value.response.text, [key])
    assert_clean(only(gw).error_message or "", [key])
