"""AnthropicCodec on recorded Messages API payloads: request bodies, answers, SSE streams, errors."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from keel.errors import ErrorKind, InvalidRequest, ProviderError
from keel.types import (
    ChatEvent,
    ChatRequest,
    EmbeddingRequest,
    Finish,
    Message,
    Note,
    Reasoning,
    Start,
    Target,
    Text,
    ToolCall,
    ToolCallDelta,
    Usage,
    UsageEvent,
)
from keel.wire.anthropic_messages import AnthropicCodec
from keel.wire.base import Codec, token_cap

CODEC: Codec = AnthropicCodec()
TARGET = Target("anthropic", "claude-sonnet-4-5-20250929")
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def encode(*messages: Message, stream: bool = False, **fields: Any) -> dict[str, Any]:
    out = CODEC.encode_chat(ChatRequest(model="smart", messages=messages, **fields), TARGET, stream)
    assert out.path == "/messages"
    body: dict[str, Any] = orjson.loads(out.body)
    return body


def feed_all(payloads: list[bytes]) -> tuple[list[ChatEvent], bool]:
    decoder = CODEC.stream_decoder()
    events = [e for p in payloads for e in decoder.feed(p)]
    return events, decoder.done


# ---- encode_chat ------------------------------------------------------------------------------


def test_minimal_request_hoists_system_and_defaults_max_tokens() -> None:
    body = encode(Message("system", "You are terse."), Message("user", "Hi"))
    assert body == {
        "model": "claude-sonnet-4-5-20250929",
        "max_tokens": 4096,
        "messages": [{"role": "user", "content": "Hi"}],
        "system": "You are terse.",
    }


def test_sampling_fields_stream_and_user_map_and_openai_extras_are_dropped_and_noted() -> None:
    out = CODEC.encode_chat(
        ChatRequest(
            model="smart",
            messages=(Message("user", "Hi"),),
            stream=True,
            max_tokens=300,
            temperature=0.2,
            top_p=0.9,
            stop=("END", "###"),
            user="user-42",
            metadata={"feature": "chat"},
            extra={"seed": 7, "logprobs": False, "anthropic_beta": "x", "max_completion_tokens": 999},
        ),
        TARGET,
        True,
    )
    assert out.notes == (Note("keel.dropped", "anthropic_beta, logprobs, metadata, seed"),)
    body = encode(
        Message("user", "Hi"),
        stream=True,
        max_tokens=300,
        temperature=0.2,
        top_p=0.9,
        stop=("END", "###"),
        user="user-42",
        metadata={"feature": "chat"},
        extra={"seed": 7, "anthropic_beta": "x", "max_completion_tokens": 999},
    )
    assert body == {
        "model": "claude-sonnet-4-5-20250929",
        "max_tokens": 300,
        "messages": [{"role": "user", "content": "Hi"}],
        "stream": True,
        "temperature": 0.2,
        "top_p": 0.9,
        "stop_sequences": ["END", "###"],
        "metadata": {"user_id": "user-42"},
    }


def test_max_completion_tokens_is_the_cap_when_max_tokens_is_absent() -> None:
    assert encode(Message("user", "Hi"), extra={"max_completion_tokens": 1234})["max_tokens"] == 1234


def test_system_and_developer_join_as_a_string() -> None:
    body = encode(
        Message("system", "Rule one."),
        Message("developer", [{"type": "text", "text": "Rule two."}]),
        Message("user", "Go"),
    )
    assert body["system"] == "Rule one.\n\nRule two."


def test_system_with_cache_control_stays_a_list_of_blocks() -> None:
    long_doc = "A long reference document. " * 50
    body = encode(
        Message(
            "system",
            [
                {"type": "text", "text": "You answer from the document."},
                {"type": "text", "text": long_doc, "cache_control": {"type": "ephemeral"}},
            ],
        ),
        Message("user", "Summarise it."),
    )
    assert body["system"] == [
        {"type": "text", "text": "You answer from the document."},
        {"type": "text", "text": long_doc, "cache_control": {"type": "ephemeral"}},
    ]


def test_user_parts_keep_cache_control_and_images_become_image_blocks() -> None:
    parts = [
        {"type": "text", "text": "Compare these.", "cache_control": {"type": "ephemeral"}},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "high"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
    ]
    body = encode(Message("user", parts))
    assert body["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Compare these.", "cache_control": {"type": "ephemeral"}},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
                {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
            ],
        }
    ]


@pytest.mark.parametrize("url", ["data:image/png,rawbytes", "ftp://example.com/a.png", "file:///etc/passwd"])
def test_unusable_image_urls_are_refused_with_the_param(url: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        encode(Message("user", [{"type": "image_url", "image_url": {"url": url}}]))
    assert info.value.param == "messages[0].content[0].image_url.url"


def test_unsupported_part_types_are_refused() -> None:
    with pytest.raises(InvalidRequest) as info:
        encode(Message("user", [{"type": "input_audio", "input_audio": {"data": "AAA", "format": "wav"}}]))
    assert info.value.param == "messages[0].content[0].type"
    with pytest.raises(InvalidRequest):
        encode(Message("system", [{"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]))


def test_tool_round_trip_becomes_tool_use_and_one_merged_tool_result_turn() -> None:
    body = encode(
        Message("user", "Weather in Paris and Rome?"),
        Message(
            "assistant",
            "Checking both.",
            tool_calls=(
                ToolCall("toolu_01A", "get_weather", '{"city": "Paris"}'),
                ToolCall("toolu_01B", "get_weather", '{"city":"Rome"}'),
                ToolCall("toolu_01C", "get_time", ""),
            ),
        ),
        Message("tool", "18C, cloudy", tool_call_id="toolu_01A"),
        Message("tool", [{"type": "text", "text": "24C, sunny"}], tool_call_id="toolu_01B"),
        Message("tool", "12:00", tool_call_id="toolu_01C"),
        Message("user", "Which is warmer?"),
    )
    assert body["messages"] == [
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Checking both."},
                {"type": "tool_use", "id": "toolu_01A", "name": "get_weather", "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "toolu_01B", "name": "get_weather", "input": {"city": "Rome"}},
                {"type": "tool_use", "id": "toolu_01C", "name": "get_time", "input": {}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_01A", "content": "18C, cloudy"},
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_01B",
                    "content": [{"type": "text", "text": "24C, sunny"}],
                },
                {"type": "tool_result", "tool_use_id": "toolu_01C", "content": "12:00"},
                {"type": "text", "text": "Which is warmer?"},
            ],
        },
    ]


def test_assistant_with_only_tool_calls_has_no_text_block() -> None:
    body = encode(
        Message("user", "Weather?"),
        Message("assistant", None, tool_calls=(ToolCall("toolu_01A", "get_weather", '{"city":"Oslo"}'),)),
        Message("tool", "-3C", tool_call_id="toolu_01A"),
    )
    assert body["messages"][1]["content"] == [
        {"type": "tool_use", "id": "toolu_01A", "name": "get_weather", "input": {"city": "Oslo"}}
    ]


@pytest.mark.parametrize("arguments", ['{"city": "Par', "[1, 2]"])
def test_tool_call_arguments_must_be_a_json_object(arguments: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        encode(
            Message("user", "Weather?"),
            Message("assistant", None, tool_calls=(ToolCall("toolu_01A", "get_weather", arguments),)),
        )
    assert info.value.param == "messages[1].tool_calls"


def test_consecutive_same_role_messages_merge() -> None:
    body = encode(
        Message("user", "First."),
        Message("user", [{"type": "text", "text": "Second."}]),
        Message("assistant", "One."),
        Message("assistant", "Two."),
        Message("user", "Third."),
    )
    assert body["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "First."}, {"type": "text", "text": "Second."}]},
        {"role": "assistant", "content": [{"type": "text", "text": "One."}, {"type": "text", "text": "Two."}]},
        {"role": "user", "content": "Third."},
    ]


def test_tools_map_with_default_schema() -> None:
    bare = {"type": "function", "function": {"name": "ping"}}
    body = encode(Message("user", "Hi"), tools=(WEATHER_TOOL, bare))
    assert body["tools"] == [
        {
            "name": "get_weather",
            "description": "Current weather for a city",
            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        },
        {"name": "ping", "input_schema": {"type": "object", "properties": {}}},
    ]
    assert "tool_choice" not in body


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ("auto", {"type": "auto"}),
        ("required", {"type": "any"}),
        ("none", {"type": "none"}),
        ({"type": "function", "function": {"name": "get_weather"}}, {"type": "tool", "name": "get_weather"}),
    ],
)
def test_tool_choice_maps(choice: Any, expected: dict[str, Any]) -> None:
    assert encode(Message("user", "Hi"), tools=(WEATHER_TOOL,), tool_choice=choice)["tool_choice"] == expected


def test_tool_choice_without_tools_is_not_sent() -> None:
    assert "tool_choice" not in encode(Message("user", "Hi"), tool_choice="none")


# ---- decode_chat ------------------------------------------------------------------------------

TEXT_ANSWER = b"""{
  "id": "msg_01XFDUDYJgAACzvnptvVoYEL",
  "type": "message",
  "role": "assistant",
  "model": "claude-sonnet-4-5-20250929",
  "content": [{"type": "text", "text": "Hello! "}, {"type": "text", "text": "How can I help?"}],
  "stop_reason": "end_turn",
  "stop_sequence": null,
  "usage": {
    "input_tokens": 12,
    "cache_creation_input_tokens": 1500,
    "cache_read_input_tokens": 3000,
    "cache_creation": {"ephemeral_5m_input_tokens": 1500, "ephemeral_1h_input_tokens": 0},
    "output_tokens": 9,
    "service_tier": "standard"
  }
}"""

TOOL_ANSWER = b"""{
  "id": "msg_01Aq9w938a90dw8q",
  "type": "message",
  "role": "assistant",
  "model": "claude-sonnet-4-5-20250929",
  "content": [
    {"type": "thinking", "thinking": "Two cities.", "signature": "EqQB"},
    {"type": "text", "text": "I'll check both."},
    {"type": "tool_use", "id": "toolu_01A", "name": "get_weather", "input": {"city": "Paris"}},
    {"type": "tool_use", "id": "toolu_01B", "name": "get_weather", "input": {"city": "Rome"}}
  ],
  "stop_reason": "tool_use",
  "stop_sequence": null,
  "usage": {"input_tokens": 410, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0, "output_tokens": 88}
}"""


def test_decode_text_answer_with_cache_usage() -> None:
    assert CODEC.decode_chat(TEXT_ANSWER) == [
        Start("msg_01XFDUDYJgAACzvnptvVoYEL", "claude-sonnet-4-5-20250929"),
        Text("Hello! How can I help?"),
        Finish("stop"),
        UsageEvent(Usage(input_tokens=4512, output_tokens=9, cached_input_tokens=3000, cache_write_tokens=1500)),
    ]


def test_decode_tool_answer_numbers_calls_from_zero() -> None:
    events = CODEC.decode_chat(TOOL_ANSWER)
    assert events[1:6] == [
        Reasoning("Two cities.", "EqQB"),
        Text("I'll check both."),
        ToolCallDelta(0, "toolu_01A", "get_weather", '{"city":"Paris"}'),
        ToolCallDelta(1, "toolu_01B", "get_weather", '{"city":"Rome"}'),
        Finish("tool_calls"),
    ]
    assert events[6] == UsageEvent(Usage(input_tokens=410, output_tokens=88))


@pytest.mark.parametrize(
    ("stop_reason", "finish"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
        ("model_context_window_exceeded", "length"),
        ("pause_turn", "stop"),
    ],
)
def test_stop_reasons_map(stop_reason: str, finish: str) -> None:
    body = {"id": "msg_1", "model": "m", "content": [], "stop_reason": stop_reason, "usage": {}}
    assert Finish(finish) in CODEC.decode_chat(orjson.dumps(body))


@pytest.mark.parametrize("body", [b"<html>502 Bad Gateway</html>", b"[1, 2]"])
def test_decode_garbage_is_a_protocol_error(body: bytes) -> None:
    with pytest.raises(ProviderError) as info:
        CODEC.decode_chat(body)
    assert info.value.error_kind is ErrorKind.protocol


# ---- stream_decoder ---------------------------------------------------------------------------

TEXT_STREAM = [
    (
        b'{"type":"message_start","message":{"model":"claude-sonnet-4-5-20250929","id":"msg_01QC4g3HwBThD4BaNtBckFDJ",'
        b'"type":"message","role":"assistant","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":12,'
        b'"cache_creation_input_tokens":0,"cache_read_input_tokens":2048,"cache_creation":{"ephemeral_5m_input_tokens":0,'
        b'"ephemeral_1h_input_tokens":0},"output_tokens":1,"service_tier":"standard"}}}'
    ),
    b'{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}',
    b'{"type": "ping"}',
    b'{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hello"}}',
    b'{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"! How are you?"}}',
    b'{"type":"content_block_stop","index":0}',
    (
        b'{"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"input_tokens":12,'
        b'"cache_creation_input_tokens":0,"cache_read_input_tokens":2048,"output_tokens":30}}'
    ),
    b'{"type":"message_stop"}',
]

TOOL_STREAM = [
    (
        b'{"type":"message_start","message":{"id":"msg_014p7gG3wDgGV9EUtLvnow3U","type":"message","role":"assistant",'
        b'"model":"claude-sonnet-4-5-20250929","stop_sequence":null,"usage":{"input_tokens":472,"output_tokens":2},'
        b'"content":[],"stop_reason":null}}'
    ),
    b'{"type":"content_block_start","index":0,"content_block":{"type":"thinking","thinking":"","signature":""}}',
    b'{"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"Need the weather."}}',
    b'{"type":"content_block_delta","index":0,"delta":{"type":"signature_delta","signature":"EqQBCgIYAhIM"}}',
    b'{"type":"content_block_stop","index":0}',
    b'{"type":"content_block_start","index":1,"content_block":{"type":"text","text":""}}',
    b'{"type":"content_block_delta","index":1,"delta":{"type":"text_delta","text":"Let me check."}}',
    b'{"type":"content_block_stop","index":1}',
    (
        b'{"type":"content_block_start","index":2,"content_block":{"type":"tool_use","id":"toolu_01T1x1fJ34qAmk2tNTrN7Up6",'
        b'"name":"get_weather","input":{}}}'
    ),
    b'{"type":"content_block_delta","index":2,"delta":{"type":"input_json_delta","partial_json":""}}',
    b'{"type":"content_block_delta","index":2,"delta":{"type":"input_json_delta","partial_json":"{\\"city\\": \\"San"}}',
    b'{"type":"content_block_delta","index":2,"delta":{"type":"input_json_delta","partial_json":" Francisco\\"}"}}',
    b'{"type":"content_block_stop","index":2}',
    (
        b'{"type":"content_block_start","index":3,"content_block":{"type":"tool_use","id":"toolu_02","name":"get_time",'
        b'"input":{}}}'
    ),
    b'{"type":"content_block_delta","index":3,"delta":{"type":"input_json_delta","partial_json":""}}',
    b'{"type":"content_block_stop","index":3}',
    b'{"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":89}}',
    b'{"type":"message_stop"}',
]


def test_text_stream() -> None:
    events, done = feed_all(TEXT_STREAM)
    assert done
    assert events == [
        Start("msg_01QC4g3HwBThD4BaNtBckFDJ", "claude-sonnet-4-5-20250929"),
        Text("Hello"),
        Text("! How are you?"),
        Finish("stop"),
        UsageEvent(Usage(input_tokens=2060, output_tokens=30, cached_input_tokens=2048)),
    ]


def test_tool_stream_numbers_calls_and_carries_thinking() -> None:
    events, done = feed_all(TOOL_STREAM)
    assert done
    assert events == [
        Start("msg_014p7gG3wDgGV9EUtLvnow3U", "claude-sonnet-4-5-20250929"),
        Reasoning("Need the weather."),
        Reasoning(signature="EqQBCgIYAhIM"),
        Text("Let me check."),
        ToolCallDelta(0, "toolu_01T1x1fJ34qAmk2tNTrN7Up6", "get_weather", ""),
        ToolCallDelta(0, arguments='{"city": "San'),
        ToolCallDelta(0, arguments=' Francisco"}'),
        ToolCallDelta(1, "toolu_02", "get_time", ""),
        ToolCallDelta(1, arguments="{}"),
        Finish("tool_calls"),
        UsageEvent(Usage(input_tokens=472, output_tokens=89)),
    ]


def test_a_stream_without_message_stop_is_complete_after_its_stop_reason() -> None:
    decoder = CODEC.stream_decoder()
    events = [e for p in TEXT_STREAM[:-1] for e in decoder.feed(p)]
    assert decoder.done and events[-1] == Finish("stop")
    assert decoder.close() == [UsageEvent(Usage(input_tokens=2060, output_tokens=30, cached_input_tokens=2048))]


def test_a_stream_that_ends_before_its_stop_reason_is_a_protocol_error() -> None:
    decoder = CODEC.stream_decoder()
    for p in TEXT_STREAM[:-2]:
        decoder.feed(p)
    assert not decoder.done
    with pytest.raises(ProviderError) as info:
        decoder.close()
    assert info.value.error_kind is ErrorKind.protocol


def test_after_message_stop_close_owes_nothing() -> None:
    decoder = CODEC.stream_decoder()
    for p in TEXT_STREAM:
        decoder.feed(p)
    assert decoder.close() == []


def test_stream_error_event_raises_with_its_kind() -> None:
    decoder = CODEC.stream_decoder()
    decoder.feed(TEXT_STREAM[0])
    with pytest.raises(ProviderError) as info:
        decoder.feed(b'{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}')
    assert info.value.error_kind is ErrorKind.overloaded
    assert info.value.message == "Overloaded"
    assert not decoder.done


MALFORMED = [b'{"type":"content_block_delta","index":0,', b'"message_stop"', b'{"type":"message_start","message":7}']


@pytest.mark.parametrize("data", MALFORMED)
def test_one_malformed_stream_event_is_skipped_and_noted(data: bytes) -> None:
    decoder = CODEC.stream_decoder()
    events = [e for p in [*TEXT_STREAM[:3], data, *TEXT_STREAM[3:]] for e in decoder.feed(p)]
    assert decoder.done
    assert Note("keel.malformed_events", "1") in events
    assert [e for e in events if not isinstance(e, Note)] == feed_all(TEXT_STREAM)[0]


def test_a_second_malformed_stream_event_is_a_protocol_error() -> None:
    decoder = CODEC.stream_decoder()
    decoder.feed(TEXT_STREAM[0])
    decoder.feed(MALFORMED[0])
    with pytest.raises(ProviderError) as info:
        decoder.feed(MALFORMED[1])
    assert info.value.error_kind is ErrorKind.protocol and "2 malformed" in info.value.message


# ---- what a 200 may not be ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "kind"),
    [
        ({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}, "overloaded"),
        ({"type": "error", "error": {"type": "rate_limit_error", "message": "Slow down"}}, "rate_limited"),
        ({"type": "error", "error": {"type": "invalid_request_error", "message": "bad"}}, "bad_request"),
        ({"error": {"type": "api_error", "message": "boom"}}, "server"),
        ({"id": "msg_1", "type": "message", "model": "m", "stop_reason": "end_turn"}, "protocol"),
        ({"id": "msg_1", "type": "message", "content": None}, "protocol"),
        ({"id": "msg_1", "content": "Hello"}, "protocol"),
        ({}, "protocol"),
    ],
)
def test_a_200_that_is_an_error_or_not_a_message_is_an_upstream_error(body: dict[str, Any], kind: str) -> None:
    with pytest.raises(ProviderError) as info:
        CODEC.decode_chat(orjson.dumps(body))
    assert info.value.kind == kind
    assert info.value.upstream_status == 200 or kind == "protocol"


# ---- usage is checked ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("usage", "expected", "flagged"),
    [
        ({"input_tokens": 5, "output_tokens": 7}, Usage(5, 7), None),
        ({"input_tokens": -5, "output_tokens": 7}, Usage(0, 7), "input_tokens=-5"),
        ({"input_tokens": 5, "output_tokens": 1e30}, Usage(5, 10_000_000), "output_tokens=1e+30"),
        ({"input_tokens": 5.5, "output_tokens": True}, Usage(5, 0), "input_tokens=5.5, output_tokens=True"),
        (
            {"input_tokens": "12", "cache_read_input_tokens": 2**62},
            Usage(10_000_000, 0, 10_000_000),
            "cache_read_input_tokens=4611686018427387904, input_tokens=12",
        ),
        ("lots", Usage(), "usage=lots"),
    ],
)
def test_usage_counts_are_clamped_and_noted(usage: Any, expected: Usage, flagged: str | None) -> None:
    body = {"id": "m", "content": [{"type": "text", "text": "hi"}], "stop_reason": "end_turn", "usage": usage}
    events = CODEC.decode_chat(orjson.dumps(body))
    assert UsageEvent(expected) in events
    notes = [e for e in events if isinstance(e, Note)]
    if flagged is None:
        assert notes == []
    else:
        assert len(notes) == 1 and notes[0].tag == "keel.usage" and notes[0].value.startswith("clamped: " + flagged)


def test_usage_beyond_twice_the_targets_window_is_clamped_to_it() -> None:
    cap = token_cap(Target("anthropic", "claude", context_window=1000))
    body = {"id": "m", "content": [], "stop_reason": "end_turn", "usage": {"input_tokens": 1999, "output_tokens": 2001}}
    events = CODEC.decode_chat(orjson.dumps(body), cap)
    assert UsageEvent(Usage(1999, 2000)) in events and Note("keel.usage", "clamped: output_tokens=2001") in events


# ---- classify ---------------------------------------------------------------------------------


def anthropic_error(error_type: str, message: str) -> bytes:
    return orjson.dumps(
        {
            "type": "error",
            "error": {"type": error_type, "message": message},
            "request_id": "req_011CSHoEeqs5C35K2UUqR7Fy",
        }
    )


@pytest.mark.parametrize(
    ("status", "body", "kind"),
    [
        (
            429,
            anthropic_error("rate_limit_error", "Number of request tokens has exceeded your rate limit."),
            "rate_limited",
        ),
        (529, anthropic_error("overloaded_error", "Overloaded"), "overloaded"),
        (401, anthropic_error("authentication_error", "invalid x-api-key"), "auth"),
        (403, anthropic_error("permission_error", "Your API key does not have permission."), "auth"),
        (404, anthropic_error("not_found_error", "model: claude-nope"), "not_found"),
        (400, anthropic_error("invalid_request_error", "messages: roles must alternate"), "bad_request"),
        (
            400,
            anthropic_error("invalid_request_error", "prompt is too long: 208656 tokens > 200000 maximum"),
            "context_length",
        ),
        (
            400,
            anthropic_error(
                "invalid_request_error",
                "input length and `max_tokens` exceed context limit: 199759 + 8192 > 200000, "
                "decrease input length or `max_tokens` and try again",
            ),
            "context_length",
        ),
        (
            413,
            anthropic_error("request_too_large", "Request exceeds the maximum allowed number of bytes."),
            "bad_request",
        ),
        (500, anthropic_error("api_error", "Internal server error"), "server"),
        (504, b"<html><body>Gateway Timeout</body></html>", "timeout"),
        (408, b"", "timeout"),
        (418, b"", "bad_request"),
        (599, b"", "server"),
    ],
)
def test_classify(status: int, body: bytes, kind: str) -> None:
    err = CODEC.classify(status, body, {})
    assert err.kind == kind
    assert err.upstream_status == status


def test_classify_keeps_the_message_and_retry_after() -> None:
    err = CODEC.classify(429, anthropic_error("rate_limit_error", "Slow down."), {"retry-after": "17"})
    assert err.message == "Slow down."
    assert err.retry_after == 17.0
    assert err.headers() == {"retry-after": "17"}
    assert CODEC.classify(502, b"", {}).message == "upstream answered HTTP 502"


# ---- embeddings -------------------------------------------------------------------------------


def test_embeddings_are_refused() -> None:
    with pytest.raises(ProviderError) as info:
        CODEC.encode_embed(EmbeddingRequest("embed", ("hello",)), TARGET)
    assert info.value.error_kind is ErrorKind.bad_request
    with pytest.raises(ProviderError):
        CODEC.decode_embed(b"{}")
