"""BedrockCodec on payloads shaped as the Bedrock Runtime API reference shows Converse and
ConverseStream; stream events are framed by the fake upstream's independent event-stream encoder."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from keel.errors import ErrorKind, InvalidRequest, ProviderError
from keel.testing.fake_cloud import eventstream_message
from keel.types import (
    ChatEvent,
    ChatRequest,
    Finish,
    Message,
    Start,
    Target,
    Text,
    ToolCall,
    ToolCallDelta,
    Usage,
    UsageEvent,
)
from keel.wire.base import Codec
from keel.wire.bedrock import BedrockCodec

CODEC: Codec = BedrockCodec()
TARGET = Target("aws", "anthropic.claude-3-5-haiku-20241022-v1:0")
SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}}
TOOL = {"type": "function", "function": {"name": "get_weather", "description": "Weather", "parameters": SCHEMA}}


def ask(*messages: Message, **fields: Any) -> ChatRequest:
    return ChatRequest(model="alias", messages=messages, **fields)


def encode(request: ChatRequest, stream: bool = False) -> tuple[str, Any]:
    out = CODEC.encode_chat(request, TARGET, stream)
    return out.path, orjson.loads(out.body)


def test_paths_escape_the_model_id() -> None:
    assert encode(ask(Message("user", "hi")))[0] == "/model/anthropic.claude-3-5-haiku-20241022-v1%3A0/converse"
    assert encode(ask(Message("user", "hi")), True)[0].endswith("%3A0/converse-stream")


def test_system_blocks_images_cache_points_and_inference_config() -> None:
    image = {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/4AAQ"}}
    cached = {"type": "text", "text": "long context", "cache_control": {"type": "ephemeral"}}
    request = ask(
        Message("system", [cached]),
        Message("user", [{"type": "text", "text": "what is it?"}, image]),
        Message("user", "and?"),
        max_tokens=100,
        temperature=0.1,
        top_p=0.5,
        stop=("END",),
        extra={"top_k": 20},
    )
    _, body = encode(request)
    assert body["system"] == [{"text": "long context"}, {"cachePoint": {"type": "default"}}]
    image_block = {"image": {"format": "jpeg", "source": {"bytes": "/9j/4AAQ"}}}
    assert body["messages"] == [{"role": "user", "content": [{"text": "what is it?"}, image_block, {"text": "and?"}]}]
    assert body["inferenceConfig"] == {"maxTokens": 100, "temperature": 0.1, "topP": 0.5, "stopSequences": ["END"]}
    assert body["additionalModelRequestFields"] == {"top_k": 20}


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        (None, None),
        ("auto", {"auto": {}}),
        ("required", {"any": {}}),
        ({"type": "function", "function": {"name": "get_weather"}}, {"tool": {"name": "get_weather"}}),
    ],
)
def test_tools_and_tool_choice(choice: Any, expected: Any) -> None:
    _, body = encode(ask(Message("user", "hi"), tools=(TOOL,), tool_choice=choice))
    spec = {"toolSpec": {"name": "get_weather", "description": "Weather", "inputSchema": {"json": SCHEMA}}}
    assert body["toolConfig"]["tools"] == [spec]
    assert body["toolConfig"].get("toolChoice") == expected


def test_tool_choice_none_leaves_the_tools_out_unless_the_history_needs_them() -> None:
    assert "toolConfig" not in encode(ask(Message("user", "hi"), tools=(TOOL,), tool_choice="none"))[1]
    history = (
        Message("user", "hi"),
        Message("assistant", None, tool_calls=(ToolCall("t1", "get_weather", '{"city": "Oslo"}'),)),
        Message("tool", "cold", tool_call_id="t1"),
    )
    _, body = encode(ask(*history, tools=(TOOL,), tool_choice="none"))
    assert "toolChoice" not in body["toolConfig"] and body["toolConfig"]["tools"]
    assert body["messages"][1:] == [
        {
            "role": "assistant",
            "content": [{"toolUse": {"toolUseId": "t1", "name": "get_weather", "input": {"city": "Oslo"}}}],
        },
        {"role": "user", "content": [{"toolResult": {"toolUseId": "t1", "content": [{"text": "cold"}]}}]},
    ]


def test_response_format_becomes_output_config() -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "weather", "schema": SCHEMA}}
    _, body = encode(ask(Message("user", "hi"), response_format=fmt))
    definition = body["outputConfig"]["textFormat"]["structure"]["jsonSchema"]
    assert body["outputConfig"]["textFormat"]["type"] == "json_schema"
    assert (definition["name"], orjson.loads(definition["schema"])) == ("weather", SCHEMA)


@pytest.mark.parametrize(
    ("request_", "param"),
    [
        (
            ask(Message("user", [{"type": "image_url", "image_url": {"url": "https://x/cat.png"}}])),
            "messages[0].content[0].image_url.url",
        ),
        (ask(Message("assistant", None, tool_calls=(ToolCall("t", "f", "[1]"),))), "messages[0].tool_calls"),
        (ask(Message("user", [{"type": "input_audio"}])), "messages[0].content[0].type"),
    ],
)
def test_what_converse_cannot_carry_is_refused_naming_the_field(request_: ChatRequest, param: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        CODEC.encode_chat(request_, TARGET, False)
    assert info.value.param == param


def test_a_whole_answer_in_keels_usage_convention() -> None:
    answer = {
        "output": {
            "message": {
                "role": "assistant",
                "content": [
                    {"text": "Checking."},
                    {"toolUse": {"toolUseId": "tooluse_1", "name": "get_weather", "input": {"city": "Paris"}}},
                ],
            }
        },
        "stopReason": "tool_use",
        "usage": {
            "inputTokens": 10,
            "outputTokens": 20,
            "totalTokens": 80,
            "cacheReadInputTokens": 40,
            "cacheWriteInputTokens": 10,
        },
        "metrics": {"latencyMs": 321},
    }
    assert CODEC.decode_chat(orjson.dumps(answer)) == [
        Start("", ""),
        Text("Checking."),
        ToolCallDelta(0, "tooluse_1", "get_weather", '{"city":"Paris"}'),
        Finish("tool_calls"),
        UsageEvent(Usage(input_tokens=60, output_tokens=20, cached_input_tokens=40, cache_write_tokens=10)),
    ]


@pytest.mark.parametrize(
    ("reason", "finish"),
    [
        ("end_turn", "stop"),
        ("max_tokens", "length"),
        ("guardrail_intervened", "content_filter"),
        ("stop_sequence", "stop"),
    ],
)
def test_stop_reasons(reason: str, finish: str) -> None:
    answer = {
        "output": {"message": {"role": "assistant", "content": [{"text": "x"}]}},
        "stopReason": reason,
        "usage": {},
    }
    assert Finish(finish) in CODEC.decode_chat(orjson.dumps(answer))


def event(name: str, payload: Any, message_type: str = "event") -> bytes:
    kind = ":exception-type" if message_type == "exception" else ":event-type"
    headers = {kind: name, ":content-type": "application/json", ":message-type": message_type}
    return eventstream_message(headers, orjson.dumps(payload))


def feed(*messages: bytes) -> tuple[list[ChatEvent], Any]:
    decoder = CODEC.stream_decoder()
    events: list[ChatEvent] = []
    for m in messages:
        events += decoder.feed(m)
    return events, decoder


def test_a_stream_with_text_and_a_tool_call() -> None:
    events, decoder = feed(
        event("messageStart", {"role": "assistant", "p": "abc"}),
        event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "One "}}),
        event("contentBlockStop", {"contentBlockIndex": 0}),
        event("contentBlockStart", {"contentBlockIndex": 1, "start": {"toolUse": {"toolUseId": "t1", "name": "f"}}}),
        event("contentBlockDelta", {"contentBlockIndex": 1, "delta": {"toolUse": {"input": '{"a":'}}}),
        event("contentBlockDelta", {"contentBlockIndex": 1, "delta": {"toolUse": {"input": "1}"}}}),
        event("contentBlockStop", {"contentBlockIndex": 1}),
        event("contentBlockStart", {"contentBlockIndex": 2, "start": {"toolUse": {"toolUseId": "t2", "name": "g"}}}),
        event("contentBlockStop", {"contentBlockIndex": 2}),
        event("messageStop", {"stopReason": "tool_use"}),
        event(
            "metadata", {"usage": {"inputTokens": 3, "outputTokens": 4, "totalTokens": 7}, "metrics": {"latencyMs": 1}}
        ),
    )
    assert events == [
        Start("", ""),
        Text("One "),
        ToolCallDelta(0, "t1", "f", ""),
        ToolCallDelta(0, arguments='{"a":'),
        ToolCallDelta(0, arguments="1}"),
        ToolCallDelta(1, "t2", "g", ""),
        ToolCallDelta(1, arguments="{}"),  # a call without arguments still carries a JSON object
        Finish("tool_calls"),
        UsageEvent(Usage(input_tokens=3, output_tokens=4)),
    ]
    assert decoder.done and decoder.close() == []


def test_a_stream_without_message_stop_is_incomplete() -> None:
    _, decoder = feed(
        event("messageStart", {"role": "assistant"}),
        event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "a"}}),
    )
    with pytest.raises(ProviderError) as info:
        decoder.close()
    assert info.value.error_kind is ErrorKind.protocol


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("throttlingException", ErrorKind.rate_limited),
        ("serviceUnavailableException", ErrorKind.overloaded),
        ("modelStreamErrorException", ErrorKind.server),
        ("validationException", ErrorKind.bad_request),
    ],
)
def test_exceptions_inside_the_stream(name: str, kind: ErrorKind) -> None:
    with pytest.raises(ProviderError) as info:
        feed(event("messageStart", {"role": "assistant"}), event(name, {"message": "boom"}, "exception"))
    assert (info.value.error_kind, info.value.message) == (kind, "boom")


@pytest.mark.parametrize(
    ("status", "name", "message", "kind"),
    [
        (
            429,
            "ThrottlingException:http://internal.amazon.com/coral/com.amazon.bedrock/",
            "Too many requests",
            ErrorKind.rate_limited,
        ),
        (400, "ValidationException", "Malformed input request", ErrorKind.bad_request),
        (400, "ValidationException", "Input is too long for requested model.", ErrorKind.context_length),
        (429, "ModelNotReadyException", "Model is not ready", ErrorKind.overloaded),
        (503, "ServiceUnavailableException", "", ErrorKind.overloaded),
        (500, "InternalServerException", "", ErrorKind.server),
        (408, "ModelTimeoutException", "", ErrorKind.timeout),
        (424, "ModelErrorException", "", ErrorKind.server),
        (403, "AccessDeniedException", "", ErrorKind.auth),
        (403, "InvalidSignatureException", "", ErrorKind.auth),
        (404, "ResourceNotFoundException", "", ErrorKind.not_found),
        (502, "", "", ErrorKind.server),
    ],
)
def test_errors_by_exception_name(status: int, name: str, message: str, kind: ErrorKind) -> None:
    err = CODEC.classify(status, orjson.dumps({"message": message}), {"x-amzn-errortype": name} if name else {})
    assert (err.error_kind, err.upstream_status) == (kind, status)
    assert err.message == (message or f"upstream answered HTTP {status}")


def test_json_object_asks_for_any_object_and_a_schemaless_json_schema_is_refused() -> None:
    _, body = encode(ask(Message("user", "hi"), response_format={"type": "json_object"}))
    assert orjson.loads(body["outputConfig"]["textFormat"]["structure"]["jsonSchema"]["schema"]) == {"type": "object"}
    with pytest.raises(InvalidRequest) as info:
        encode(ask(Message("user", "hi"), response_format={"type": "json_schema", "json_schema": {"name": "x"}}))
    assert info.value.param == "response_format"


# ---- what is carried, dropped (recorded in keel.dropped) or refused: translate.py's policy ------------


def dropped(request: ChatRequest) -> str | None:
    notes = CODEC.encode_chat(request, TARGET, False).notes
    assert all(n.tag == "keel.dropped" for n in notes)
    return notes[0].value if notes else None


def test_fields_converse_has_no_place_for_are_dropped_and_named_for_the_trace() -> None:
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "low"}}
    request = ask(
        Message("user", [image], name="ann"),
        Message("assistant", "hello", extra={"refusal": None}),
        Message("user", "again"),
        user="u1",
        metadata={"feature": "x"},
        tools=({**TOOL, "function": {**TOOL["function"], "strict": True}},),
        extra={"seed": 7, "presence_penalty": 0.5, "reasoning_effort": "high", "store": False, "top_k": 4},
    )
    body = encode(request)[1]
    assert body["additionalModelRequestFields"] == {"top_k": 4}  # carried
    assert dropped(request) == (
        "image_url.detail, messages[].name, messages[].refusal, metadata, presence_penalty, reasoning_effort, "
        "seed, store, tools[].function.strict, user"
    )


def test_a_request_converse_carries_whole_records_nothing_and_tool_cache_control_is_a_cache_point() -> None:
    request = ask(
        Message("system", "brief"),
        Message("user", "hi"),
        temperature=0.2,
        max_tokens=50,
        tools=({**TOOL, "cache_control": {"type": "ephemeral"}},),
        extra={"top_k": 3, "n": 1, "parallel_tool_calls": True, "max_completion_tokens": 9},
    )
    assert encode(request)[1]["toolConfig"]["tools"][1] == {"cachePoint": {"type": "default"}}
    assert dropped(request) is None


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"logprobs": True}, "logprobs"),
        ({"top_logprobs": 3}, "top_logprobs"),
        ({"audio": {"voice": "alloy", "format": "wav"}}, "audio"),
        ({"modalities": ["audio"]}, "modalities"),
        ({"functions": [{"name": "f"}]}, "functions"),
        ({"logit_bias": {"1": 5}}, "logit_bias"),
    ],
)
def test_fields_the_caller_would_read_back_are_refused(extra: Any, param: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        CODEC.encode_chat(ask(Message("user", "hi"), extra=extra), TARGET, False)
    assert info.value.param == param
    assert "Bedrock" in info.value.message


def test_an_anthropic_client_is_translated_first() -> None:
    request = ChatRequest(
        model="alias",
        messages=(
            Message("user", "hi"),
            Message("assistant", None, tool_calls=(ToolCall("t1", "get_weather", "{}"),)),
            Message("tool", "boom", tool_call_id="t1", extra={"is_error": True}),
        ),
        tools=(TOOL,),
        extra={"top_k": 5, "thinking": {"type": "enabled", "budget_tokens": 2000}, "parallel_tool_calls": False},
        dialect="anthropic_messages",
        betas=("interleaved-thinking-2025-05-14",),
    )
    body = encode(request)[1]
    assert body["additionalModelRequestFields"] == {"top_k": 5}
    assert body["messages"][2]["content"][0]["toolResult"]["content"] == [{"text": "[tool error] boom"}]
    assert dropped(request) == "anthropic-beta, parallel_tool_calls, thinking"
