"""OpenAIChatCodec on what upstreams actually send: errors under HTTP 200, answers without choices,
broken usage, streams that end without `[DONE]` or carry a malformed chunk. Pure: no I/O."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from keel.errors import ErrorKind, ProviderError
from keel.types import ChatEvent, Finish, Note, Start, Target, Text, Usage, UsageEvent
from keel.wire.base import MAX_TOKENS, Codec, counted, token_cap
from keel.wire.openai_chat import OpenAIChatCodec

CODEC: Codec = OpenAIChatCodec()


def answer(**fields: Any) -> bytes:
    body = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": "gpt-4o-mini",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 9, "completion_tokens": 2},
    }
    return orjson.dumps({**body, **fields})


def chunk(delta: dict[str, Any] | None = None, finish: str | None = None, **fields: Any) -> bytes:
    choice = {"index": 0, "delta": delta or {}, "finish_reason": finish}
    return orjson.dumps({"id": "chatcmpl-1", "model": "gpt-4o-mini", "choices": [choice], **fields})


STREAM = [
    chunk({"role": "assistant", "content": ""}),
    chunk({"content": "Hel"}),
    chunk({"content": "lo"}),
    chunk({}, "stop"),
    orjson.dumps({"id": "chatcmpl-1", "choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 2}}),
    b"[DONE]",
]
EVENTS: list[ChatEvent] = [
    Start("chatcmpl-1", "gpt-4o-mini"),
    Text("Hel"),
    Text("lo"),
    Finish("stop"),
    UsageEvent(Usage(9, 2)),
]


def feed(payloads: list[bytes]) -> tuple[list[ChatEvent], Any]:
    decoder = CODEC.stream_decoder()
    return [e for p in payloads for e in decoder.feed(p)], decoder


# ---- a 200 that is not an answer --------------------------------------------------------------


def test_a_plain_answer() -> None:
    assert CODEC.decode_chat(answer()) == [Start("chatcmpl-1", "gpt-4o-mini"), Text("Hi"), Finish("stop"), *EVENTS[4:]]


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        ({"message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded"}, "rate_limited"),
        ({"message": "The engine is overloaded", "type": "server_error", "code": None}, "server"),
        ({"message": "overloaded", "code": 529}, "overloaded"),  # OpenRouter-style: the HTTP status as `code`
        ({"message": "Provider returned error", "code": 502}, "overloaded"),
        ({"message": "bad", "type": "invalid_request_error"}, "bad_request"),
        (
            {"message": "This model's maximum context length is 8192 tokens", "type": "invalid_request_error"},
            "context_length",
        ),
        ({"message": "something odd"}, "server"),
        ("upstream exploded", "server"),
    ],
)
def test_an_error_object_under_200_is_an_upstream_error_of_its_kind(error: Any, kind: str) -> None:
    with pytest.raises(ProviderError) as info:
        CODEC.decode_chat(orjson.dumps({"error": error}))
    assert info.value.kind == kind
    assert info.value.upstream_status == 200
    assert info.value.message == (error["message"] if isinstance(error, dict) else error)


@pytest.mark.parametrize(
    "body",
    [
        answer(choices=[]),
        answer(choices=None),
        orjson.dumps({"id": "chatcmpl-1", "object": "chat.completion", "model": "m"}),
        answer(choices=["hello"]),
        answer(choices=[{"index": 0, "finish_reason": "stop"}]),
        answer(choices=[{"index": 0, "message": "Hi", "finish_reason": "stop"}]),
        answer(choices=[{"index": 0, "message": {"content": "x", "tool_calls": [7]}}]),
        b"[1, 2]",
        b'"ok"',
        b"<html>502 Bad Gateway</html>",
    ],
)
def test_an_answer_without_a_choice_to_give_is_a_protocol_error(body: bytes) -> None:
    with pytest.raises(ProviderError) as info:
        CODEC.decode_chat(body)
    assert info.value.error_kind is ErrorKind.protocol


def test_classify_under_an_error_status_still_keys_on_the_status() -> None:
    err = CODEC.classify(429, orjson.dumps({"error": {"message": "slow", "code": "rate_limit_exceeded"}}), {})
    assert (err.kind, err.upstream_status, err.message) == ("rate_limited", 429, "slow")
    assert CODEC.classify(400, orjson.dumps({"error": {"message": "x", "param": 3}}), {}).param == "3"
    assert CODEC.classify(503, b"[]", {"retry-after": "2"}).retry_after == 2


# ---- usage is checked ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("usage", "expected", "flagged"),
    [
        ({"prompt_tokens": 9, "completion_tokens": 2}, Usage(9, 2), None),
        ({"prompt_tokens": -9, "completion_tokens": 2}, Usage(0, 2), "prompt_tokens=-9"),
        ({"prompt_tokens": 9, "completion_tokens": 1e30}, Usage(9, MAX_TOKENS), "completion_tokens=1e+30"),
        ({"prompt_tokens": 2**62, "completion_tokens": 2}, Usage(MAX_TOKENS, 2), "prompt_tokens=4611686018427387904"),
        ({"prompt_tokens": True, "completion_tokens": "2"}, Usage(0, 0), "prompt_tokens=True, completion_tokens=2"),
        ({"prompt_tokens": 9.0, "completion_tokens": 2}, Usage(9, 2), "prompt_tokens=9.0"),
        (
            {"prompt_tokens": 9, "completion_tokens": 4, "completion_tokens_details": {"reasoning_tokens": -1}},
            Usage(9, 4),
            "reasoning_tokens=-1",
        ),
        ({"prompt_tokens": 9, "prompt_tokens_details": "x"}, Usage(9, 0), None),
        ([9, 2], Usage(), "usage=[9, 2]"),
    ],
)
def test_usage_counts_are_clamped_and_noted(usage: Any, expected: Usage, flagged: str | None) -> None:
    events = CODEC.decode_chat(answer(usage=usage))
    assert events[:3] == [Start("chatcmpl-1", "gpt-4o-mini"), Text("Hi"), Finish("stop")]  # the answer still flows
    assert events[3] == UsageEvent(expected)
    assert events[4:] == ([] if flagged is None else [Note("keel.usage", "clamped: " + flagged)])


@pytest.mark.parametrize(
    ("value", "expected"), [(float("nan"), 0), (float("inf"), 100), (float("-inf"), 0), (None, 0), (7, 7), (101, 100)]
)
def test_counted_clamps_what_json_text_cannot_even_carry(value: Any, expected: int) -> None:
    problems: list[str] = []
    assert counted(value, 100, "n", problems) == expected
    assert bool(problems) == (value not in (None, 7))


def test_a_known_window_bounds_usage_at_twice_itself() -> None:
    cap = token_cap(Target("oai", "gpt-4o-mini", context_window=128_000))
    assert cap == 256_000 and token_cap(Target("oai", "x")) == MAX_TOKENS
    events = CODEC.decode_chat(answer(usage={"prompt_tokens": 256_000, "completion_tokens": 300_000}), cap)
    assert events[3:] == [UsageEvent(Usage(256_000, 256_000)), Note("keel.usage", "clamped: completion_tokens=300000")]


def test_embedding_usage_is_clamped() -> None:
    body = {"data": [{"index": 0, "embedding": [0.1]}], "model": "e", "usage": {"prompt_tokens": -4}}
    assert CODEC.decode_embed(orjson.dumps(body)).usage == Usage()


# ---- streams: complete when finished, one malformed chunk forgiven --------------------------------


def test_a_whole_stream() -> None:
    events, decoder = feed(STREAM)
    assert events == EVENTS and decoder.done and decoder.close() == []


def test_a_stream_that_ends_after_its_finish_without_done_is_complete() -> None:
    events, decoder = feed(STREAM[:-1])
    assert events == EVENTS  # the usage that came is passed on
    assert decoder.done and decoder.close() == []
    events, decoder = feed(STREAM[:-2])  # and without the usage chunk too
    assert events == EVENTS[:-1] and decoder.close() == []


@pytest.mark.parametrize("payloads", [STREAM[:3], [STREAM[0], b"[DONE]"], []])
def test_a_stream_that_ends_without_a_finish_is_a_protocol_error(payloads: list[bytes]) -> None:
    _, decoder = feed(payloads)
    assert not decoder.done
    with pytest.raises(ProviderError) as info:
        decoder.close()
    assert info.value.error_kind is ErrorKind.protocol


def test_done_after_content_without_a_finish_reason_is_trusted() -> None:
    events, decoder = feed([*STREAM[:3], b"[DONE]"])
    assert events == EVENTS[:3] and decoder.close() == []


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        ({"message": "Rate limit reached", "code": "rate_limit_exceeded"}, "rate_limited"),
        ({"message": "Overloaded", "code": 529}, "overloaded"),
        ({"message": "boom", "type": "server_error"}, "server"),
    ],
)
def test_a_stream_whose_first_event_is_an_error_object_raises_it_classified(error: Any, kind: str) -> None:
    with pytest.raises(ProviderError) as info:
        CODEC.stream_decoder().feed(orjson.dumps({"error": error}))
    assert info.value.kind == kind and info.value.message == error["message"]


def test_a_null_error_field_in_a_chunk_is_no_error() -> None:
    events, _ = feed([chunk({"content": "Hi"}, error=None)])
    assert Text("Hi") in events


@pytest.mark.parametrize(
    "bad", [b'{"id": "chatcmpl-1", "choices": [{"delta": {"content": "Hel', b"[1]", b'{"choices": "nope"}', b"7"]
)
def test_one_malformed_chunk_is_skipped_and_noted(bad: bytes) -> None:
    events, decoder = feed([*STREAM[:2], bad, *STREAM[2:]])
    assert [e for e in events if not isinstance(e, Note)] == EVENTS
    assert [e for e in events if isinstance(e, Note)] == [Note("keel.malformed_events", "1")]
    assert decoder.close() == []


def test_a_malformed_first_chunk_keeps_the_start() -> None:
    events, _ = feed([b'{"id": "chatcmpl-1", "choices": "x"}', *STREAM[1:]])
    assert events[1] == Start("chatcmpl-1", "gpt-4o-mini")


def test_a_second_malformed_chunk_fails_the_stream() -> None:
    decoder = CODEC.stream_decoder()
    decoder.feed(STREAM[0])
    decoder.feed(b"{broken")
    with pytest.raises(ProviderError) as info:
        decoder.feed(b"{broken again")
    assert info.value.error_kind is ErrorKind.protocol and "2 malformed" in info.value.message
