"""keel.wire.openai_chat as a pure codec, on recorded payloads: the client body parsed, the upstream request
encoded per quirk flag, answers and stream chunks decoded (tool calls and usage included), errors classified
into ErrorKinds, Retry-After read, and the client JSON rendered back. No I/O.

tests/unit/test_openai_codec.py covers what broken upstreams send (errors under 200, clamped usage, streams that end
early or carry malformed chunks); this file covers the normal shapes and the mapping tables.
"""

from __future__ import annotations

import email.utils
import time
from typing import Any

import orjson
import pytest

from keel.errors import ErrorKind, InvalidRequest, ProviderError
from keel.types import (
    PREFIX,
    ChatEvent,
    ChatRequest,
    ChatResponse,
    EmbeddingRequest,
    Finish,
    Message,
    Note,
    Start,
    Target,
    Text,
    ToolCall,
    ToolCallDelta,
    Usage,
    UsageEvent,
)
from keel.wire.base import MAX_TOKENS, retry_after
from keel.wire.openai_chat import (
    OpenAIChatCodec,
    chunk_json,
    output_cap,
    parse_request,
    request_json,
    response_json,
    usage_chunk_json,
)

TARGET = Target("oai", "gpt-4o-mini")
WEATHER_TOOL = {
    "type": "function",
    "function": {"name": "weather", "description": "Weather now", "parameters": {"type": "object"}},
}
# A recorded client body: a tool round trip, sampling fields, and two fields Keel does not know.
CLIENT_BODY: dict[str, Any] = {
    "model": "fast",
    "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "Weather in Oslo?"}], "name": "ada"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": '{"city":"Oslo"}'}}
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "4 C, rain"},
    ],
    "temperature": 0.2,
    "top_p": 1,
    "max_tokens": 64,
    "stop": "END",
    "tools": [WEATHER_TOOL],
    "tool_choice": "auto",
    "user": "u-42",
    "metadata": {"run": "7"},
    "seed": 11,
    "logit_bias": {"50256": -100},
}


def decoded(codec: OpenAIChatCodec, payloads: list[bytes]) -> list[ChatEvent]:
    decoder = codec.stream_decoder()
    events = [e for p in payloads for e in decoder.feed(p)]
    assert decoder.done
    return events + decoder.close()


# ---- client body → ChatRequest ------------------------------------------------------------------


def test_a_recorded_body_parses_into_the_request_with_unknown_fields_in_extra() -> None:
    r = parse_request(CLIENT_BODY)
    assert (r.model, r.stream, r.include_usage, r.max_tokens, r.temperature, r.top_p) == (
        "fast",
        False,
        False,
        64,
        0.2,
        1.0,
    )
    assert (r.stop, r.tools, r.tool_choice, r.user, r.metadata) == (
        ("END",),
        (WEATHER_TOOL,),
        "auto",
        "u-42",
        {"run": "7"},
    )
    assert r.extra == {"seed": 11, "logit_bias": {"50256": -100}}
    system, user, assistant, tool = r.messages
    assert system == Message("system", "Be brief.")
    assert user.name == "ada" and user.content == [{"type": "text", "text": "Weather in Oslo?"}]
    assert assistant.tool_calls == (ToolCall("call_1", "weather", '{"city":"Oslo"}'),) and assistant.content is None
    assert (tool.role, tool.tool_call_id, tool.content) == ("tool", "call_1", "4 C, rain")


def test_stream_options_and_unknown_message_fields_are_kept() -> None:
    body = {
        "model": "m",
        "stream": True,
        "stream_options": {"include_usage": True},
        "messages": [{"role": "user", "content": "hi", "cache_control": {"type": "ephemeral"}}],
    }
    r = parse_request(body)
    assert r.stream and r.include_usage
    assert r.messages[0].extra == {"cache_control": {"type": "ephemeral"}}


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"model": ""}, "model"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "messages[0].role"),
        ({"messages": [{"role": "user"}]}, "messages[0].content"),
        ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
        ({"messages": [{"role": "user", "content": [{"type": "text"}]}]}, "messages[0].content[0].text"),
        ({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, "messages[0].content[0].image_url"),
        ({"messages": [{"role": "tool", "content": "x"}]}, "messages[0].tool_call_id"),
        ({"messages": [{"role": "assistant", "tool_calls": [{"id": 1, "function": {"name": "f"}}]}]}, "messages[0].tool_calls[0].id"),
        ({"messages": [{"role": "assistant", "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": {}}}]}]}, "messages[0].tool_calls[0].function.arguments"),
        ({"stream": "yes"}, "stream"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": MAX_TOKENS + 1}, "max_tokens"),
        ({"max_completion_tokens": True}, "max_completion_tokens"),
        ({"temperature": 2.5}, "temperature"),
        ({"top_p": True}, "top_p"),
        ({"stop": [1]}, "stop"),
        ({"tools": [{"type": "function"}]}, "tools[0].function.name"),
        ({"tools": [{"function": {"name": "f", "parameters": []}}]}, "tools[0].function.parameters"),
        ({"tool_choice": "sometimes"}, "tool_choice"),
        ({"n": 2}, "n"),
        ({"n": True}, "n"),
    ],
)  # fmt: skip
def test_a_bad_body_is_refused_naming_the_field(change: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        parse_request({"model": "m", "messages": [{"role": "user", "content": "hi"}], **change})
    assert info.value.param == param


def test_output_cap_takes_either_openai_name() -> None:
    base = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    assert output_cap(parse_request({**base, "max_tokens": 5})) == 5
    assert output_cap(parse_request({**base, "max_completion_tokens": 9})) == 9
    assert output_cap(parse_request(base)) is None


# ---- ChatRequest → upstream request, per quirk ---------------------------------------------------


def test_the_request_round_trips_to_the_upstream_body_with_the_targets_model() -> None:
    out = OpenAIChatCodec().encode_chat(parse_request(CLIENT_BODY), TARGET, stream=False)
    assert out.path == "/chat/completions"
    expected = {**CLIENT_BODY, "model": "gpt-4o-mini", "stop": ["END"]}
    assert orjson.loads(out.body) == expected


def test_a_stream_asks_for_usage_unless_the_upstream_refuses_stream_options() -> None:
    request = ChatRequest("m", (Message("user", "hi"),), stream=True)
    body = orjson.loads(OpenAIChatCodec().encode_chat(request, TARGET, stream=True).body)
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    quirky = orjson.loads(OpenAIChatCodec(frozenset({"no_stream_options"})).encode_chat(request, TARGET, True).body)
    assert quirky["stream"] is True and "stream_options" not in quirky
    assert "stream" not in orjson.loads(OpenAIChatCodec().encode_chat(request, TARGET, stream=False).body)


def test_azure_deployments_put_the_model_in_the_path_with_the_api_version() -> None:
    codec = OpenAIChatCodec(frozenset({"azure_deployments"}), api_version="2024-10-21")
    request = ChatRequest("m", (Message("user", "hi"),))
    assert (
        codec.encode_chat(request, TARGET, False).path
        == "/openai/deployments/gpt-4o-mini/chat/completions?api-version=2024-10-21"
    )
    embed = codec.encode_embed(EmbeddingRequest("e", ("a",)), Target("oai", "text-embedding-3-small"))
    assert embed.path == "/openai/deployments/text-embedding-3-small/embeddings?api-version=2024-10-21"
    assert OpenAIChatCodec(api_version="v1").encode_chat(request, TARGET, False).path == "/chat/completions?api-version=v1"  # fmt: skip


def test_continue_final_message_turns_a_prefill_into_vllms_two_flags() -> None:
    prefill = ChatRequest("m", (Message("user", "Count"), Message("assistant", "1, 2,", extra={PREFIX: True})))
    vllm = orjson.loads(OpenAIChatCodec(frozenset({"continue_final_message"})).encode_chat(prefill, TARGET, False).body)
    assert vllm["messages"][-1] == {"role": "assistant", "content": "1, 2,"}
    assert (vllm["continue_final_message"], vllm["add_generation_prompt"]) == (True, False)
    plain = orjson.loads(OpenAIChatCodec().encode_chat(prefill, TARGET, False).body)  # others get the flag as sent
    assert plain["messages"][-1] == {"role": "assistant", "content": "1, 2,", PREFIX: True}
    assert "continue_final_message" not in plain
    no_prefill = ChatRequest("m", (Message("user", "Count"),))
    body = orjson.loads(
        OpenAIChatCodec(frozenset({"continue_final_message"})).encode_chat(no_prefill, TARGET, False).body
    )
    assert "continue_final_message" not in body


def test_request_json_leaves_out_what_was_not_set() -> None:
    assert request_json(ChatRequest("m", (Message("user", "hi"),)), "up", stream=False) == {
        "model": "up",
        "messages": [{"role": "user", "content": "hi"}],
    }


def test_an_embedding_request_carries_its_extra_fields() -> None:
    out = OpenAIChatCodec().encode_embed(EmbeddingRequest("e", ("a", "b"), {"dimensions": 256}), TARGET)
    assert out.path == "/embeddings"
    assert orjson.loads(out.body) == {"model": "gpt-4o-mini", "input": ["a", "b"], "dimensions": 256}


# ---- upstream answers → events ---------------------------------------------------------------------

# Recorded from an OpenAI-compatible upstream: a tool call answer with cached and reasoning token details.
TOOL_ANSWER = orjson.dumps(
    {
        "id": "chatcmpl-9",
        "object": "chat.completion",
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {"id": "call_a", "type": "function", "function": {"name": "weather", "arguments": '{"city":"Oslo"}'}},
                        {"id": "call_b", "type": "function", "function": {"name": "time", "arguments": ""}},
                    ],
                },
                "finish_reason": "tool_calls",
            }
        ],
        "usage": {
            "prompt_tokens": 120,
            "completion_tokens": 30,
            "total_tokens": 150,
            "prompt_tokens_details": {"cached_tokens": 64, "cache_write_tokens": 8},
            "completion_tokens_details": {"reasoning_tokens": 12},
        },
    }
)  # fmt: skip


def test_a_tool_call_answer_decodes_with_every_usage_detail() -> None:
    assert OpenAIChatCodec().decode_chat(TOOL_ANSWER) == [
        Start("chatcmpl-9", "gpt-4o-mini-2024-07-18"),
        ToolCallDelta(0, "call_a", "weather", '{"city":"Oslo"}'),
        ToolCallDelta(1, "call_b", "time", ""),
        Finish("tool_calls"),
        UsageEvent(Usage(120, 30, cached_input_tokens=64, cache_write_tokens=8, reasoning_tokens=12)),
    ]


def test_an_answer_without_usage_or_finish_reason_defaults_to_stop() -> None:
    body = {"id": "x", "model": "m", "choices": [{"message": {"content": "Hi"}}]}
    assert OpenAIChatCodec().decode_chat(orjson.dumps(body)) == [Start("x", "m"), Text("Hi"), Finish("stop")]


def test_invalid_json_is_a_protocol_error() -> None:
    with pytest.raises(ProviderError) as info:
        OpenAIChatCodec().decode_chat(b"{not json")
    assert info.value.error_kind is ErrorKind.protocol


def test_embeddings_decode_in_index_order() -> None:
    body = {
        "model": "text-embedding-3-small",
        "data": [{"index": 1, "embedding": [0.5, 0.6]}, {"index": 0, "embedding": [0.1, 0.2]}],
        "usage": {"prompt_tokens": 4, "total_tokens": 4},
    }
    r = OpenAIChatCodec().decode_embed(orjson.dumps(body))
    assert (r.model, r.vectors, r.usage) == ("text-embedding-3-small", ((0.1, 0.2), (0.5, 0.6)), Usage(4))
    with pytest.raises(ProviderError) as info:
        OpenAIChatCodec().decode_embed(orjson.dumps({"data": [{"index": 0}]}))
    assert info.value.error_kind is ErrorKind.protocol


# ---- stream lines → events -------------------------------------------------------------------------


def line(delta: dict[str, Any], finish: str | None = None, **fields: Any) -> bytes:
    return orjson.dumps({"id": "c-1", "model": "gpt-4o", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **fields})  # fmt: skip


# Recorded: two parallel tool calls streamed as OpenAI does (id and name first, arguments in pieces).
TOOL_STREAM = [
    line({"role": "assistant", "content": None, "tool_calls": [{"index": 0, "id": "call_a", "type": "function", "function": {"name": "weather", "arguments": ""}}]}),
    line({"tool_calls": [{"index": 0, "function": {"arguments": '{"ci'}}]}),
    line({"tool_calls": [{"index": 0, "function": {"arguments": 'ty":"Oslo"}'}}]}),
    line({"tool_calls": [{"index": 1, "id": "call_b", "type": "function", "function": {"name": "time", "arguments": "{}"}}]}),
    line({}, "tool_calls"),
    orjson.dumps({"id": "c-1", "model": "gpt-4o", "choices": [], "usage": {"prompt_tokens": 50, "completion_tokens": 20, "prompt_tokens_details": {"cached_tokens": 32}}}),
    b"[DONE]",
]  # fmt: skip


def test_a_tool_call_stream_decodes_into_deltas_by_index() -> None:
    assert decoded(OpenAIChatCodec(), TOOL_STREAM) == [
        Start("c-1", "gpt-4o"),
        ToolCallDelta(0, "call_a", "weather", ""),
        ToolCallDelta(0, None, None, '{"ci'),
        ToolCallDelta(0, None, None, 'ty":"Oslo"}'),
        ToolCallDelta(1, "call_b", "time", "{}"),
        Finish("tool_calls"),
        UsageEvent(Usage(50, 20, cached_input_tokens=32)),
    ]


def test_usage_on_the_finishing_chunk_comes_after_its_finish() -> None:
    payloads = [line({"content": "Hi"}), line({}, "length", usage={"prompt_tokens": 3, "completion_tokens": 1})]
    assert decoded(OpenAIChatCodec(), payloads) == [
        Start("c-1", "gpt-4o"),
        Text("Hi"),
        Finish("length"),
        UsageEvent(Usage(3, 1)),
    ]


def test_a_null_usage_and_empty_deltas_yield_no_events() -> None:
    decoder = OpenAIChatCodec().stream_decoder()
    assert decoder.feed(line({"role": "assistant", "content": ""}, usage=None)) == [Start("c-1", "gpt-4o")]
    assert decoder.feed(line({})) == [] and decoder.feed(line({"content": ""})) == []
    assert not decoder.done


def test_a_stream_usage_past_the_cap_is_clamped_and_noted() -> None:
    decoder = OpenAIChatCodec().stream_decoder(cap=100)
    events = decoder.feed(line({}, "stop", usage={"prompt_tokens": 500, "completion_tokens": 2}))
    assert events[-2:] == [UsageEvent(Usage(100, 2)), Note("keel.usage", "clamped: prompt_tokens=500")]


def test_a_malformed_line_between_tool_deltas_is_skipped_and_noted() -> None:
    events = decoded(OpenAIChatCodec(), [*TOOL_STREAM[:2], b'{"choices": [{"delta": ', *TOOL_STREAM[2:]])
    assert Note("keel.malformed_events", "1") in events
    assert [e for e in events if isinstance(e, ToolCallDelta)][2] == ToolCallDelta(0, None, None, 'ty":"Oslo"}')


def test_a_stream_error_chunk_after_content_raises_its_kind() -> None:
    decoder = OpenAIChatCodec().stream_decoder()
    decoder.feed(line({"content": "Hel"}))
    with pytest.raises(ProviderError) as info:
        decoder.feed(orjson.dumps({"error": {"message": "context window exceeded", "code": "context_length_exceeded"}}))
    assert info.value.error_kind is ErrorKind.context_length


# ---- errors → ErrorKind ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, ErrorKind.bad_request),
        (401, ErrorKind.auth),
        (403, ErrorKind.auth),
        (404, ErrorKind.not_found),
        (408, ErrorKind.timeout),
        (409, ErrorKind.overloaded),
        (413, ErrorKind.bad_request),
        (422, ErrorKind.bad_request),
        (429, ErrorKind.rate_limited),
        (500, ErrorKind.server),
        (501, ErrorKind.server),
        (502, ErrorKind.overloaded),
        (503, ErrorKind.overloaded),
        (504, ErrorKind.timeout),
        (529, ErrorKind.overloaded),
    ],
)
def test_an_error_status_decides_the_kind(status: int, kind: ErrorKind) -> None:
    err = OpenAIChatCodec().classify(status, b"", {})
    assert (err.error_kind, err.upstream_status, err.message) == (kind, status, f"upstream answered HTTP {status}")


@pytest.mark.parametrize(
    ("status", "error", "kind"),
    [
        (400, {"message": "This model's maximum context length is 8192 tokens.", "code": "context_length_exceeded"}, ErrorKind.context_length),
        (400, {"message": "too long", "code": "string_above_max_length_context_length"}, ErrorKind.context_length),
        (400, {"message": "Your request was rejected", "code": "content_filter"}, ErrorKind.content_filter),
        (400, {"message": "Your request was rejected", "code": "content_policy_violation"}, ErrorKind.content_filter),
        (200, {"message": "Incorrect API key", "code": "invalid_api_key"}, ErrorKind.auth),
        (200, {"message": "no", "type": "permission_error"}, ErrorKind.auth),
        (200, {"message": "gone", "code": "model_not_found"}, ErrorKind.not_found),
        (200, {"message": "slow down", "type": "tokens"}, ErrorKind.rate_limited),
        (200, {"message": "later", "code": "service_unavailable"}, ErrorKind.overloaded),
        (200, {"message": "late", "code": "timeout"}, ErrorKind.timeout),
        (200, {"message": "hm", "type": "internal_error"}, ErrorKind.server),
        (200, {"message": "teapot", "status": 418}, ErrorKind.bad_request),
        (200, {"message": "upstream 503", "code": 503, "status": 500}, ErrorKind.overloaded),
    ],
)  # fmt: skip
def test_the_error_object_refines_or_decides_the_kind(status: int, error: dict[str, Any], kind: ErrorKind) -> None:
    err = OpenAIChatCodec().classify(status, orjson.dumps({"error": error}), {})
    assert err.error_kind is kind and err.message == error["message"] and err.upstream_status == status


def test_classify_reads_a_body_that_is_not_json_or_has_no_error_object() -> None:
    assert OpenAIChatCodec().classify(502, b"<html>Bad Gateway</html>", {}).error_kind is ErrorKind.overloaded
    assert OpenAIChatCodec().classify(500, b'{"detail": "x"}', {}).message == "upstream answered HTTP 500"
    assert OpenAIChatCodec().classify(429, orjson.dumps({"error": "slow down"}), {}).message == "slow down"


# ---- Retry-After -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({}, None),
        ({"retry-after": "7"}, 7.0),
        ({"retry-after": "0.5"}, 0.5),
        ({"retry-after": "-3"}, 0.0),
        ({"retry-after": ""}, None),
        ({"retry-after": "soon"}, None),
        ({"retry-after-ms": "1500"}, 1.5),
        ({"retry-after-ms": "250", "retry-after": "9"}, 0.25),  # the finer one wins
        ({"retry-after-ms": "x", "retry-after": "9"}, 9.0),  # a bad one falls back
        ({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, 0.0),  # a date in the past: now
    ],
)
def test_retry_after_headers(headers: dict[str, str], seconds: float | None) -> None:
    assert retry_after(headers) == seconds


def test_retry_after_as_an_http_date_counts_from_now() -> None:
    value = retry_after({"retry-after": email.utils.formatdate(time.time() + 120, usegmt=True)})
    assert value is not None and 110 < value <= 120


def test_classify_carries_retry_after() -> None:
    err = OpenAIChatCodec().classify(429, b"{}", {"retry-after-ms": "800"})
    assert err.retry_after == 0.8 and err.headers() == {"retry-after": "1"}


# ---- Keel → client JSON (the HTTP edge) ---------------------------------------------------------------


def test_a_response_renders_as_a_chat_completion_under_the_alias() -> None:
    r = ChatResponse("chatcmpl-k", "gpt-4o", None, (ToolCall("call_a", "weather", "{}"),), "tool_calls", Usage(5, 2, 1))
    out = response_json(r, "fast", 1_700_000_000)
    assert out == {
        "id": "chatcmpl-k",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": "fast",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [{"id": "call_a", "type": "function", "function": {"name": "weather", "arguments": "{}"}}],
                },
                "finish_reason": "tool_calls",
                "logprobs": None,
            }
        ],
        "usage": {
            "prompt_tokens": 5,
            "completion_tokens": 2,
            "total_tokens": 7,
            "prompt_tokens_details": {"cached_tokens": 1},
            "completion_tokens_details": {"reasoning_tokens": 0},
        },
    }  # fmt: skip
    assert "usage" not in response_json(ChatResponse("i", "m", "Hi", (), "stop", None), "fast", 0)


@pytest.mark.parametrize(
    ("event", "delta", "finish"),
    [
        (Start("u", "m"), {"role": "assistant", "content": ""}, None),
        (Text("Hel"), {"content": "Hel"}, None),
        (ToolCallDelta(0, "call_a", "weather", ""), {"tool_calls": [{"index": 0, "id": "call_a", "type": "function", "function": {"name": "weather", "arguments": ""}}]}, None),
        (ToolCallDelta(0, None, None, '{"a"'), {"tool_calls": [{"index": 0, "function": {"arguments": '{"a"'}}]}, None),
        (Finish("stop"), {}, "stop"),
    ],
)  # fmt: skip
def test_each_event_renders_as_one_client_chunk(event: ChatEvent, delta: dict[str, Any], finish: str | None) -> None:
    chunk = chunk_json("chatcmpl-k", "fast", 1, event)
    assert chunk == {
        "id": "chatcmpl-k",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "fast",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
    }


def test_usage_and_notes_have_no_chunk_of_their_own_but_usage_has_its_final_chunk() -> None:
    assert chunk_json("k", "fast", 1, UsageEvent(Usage(1, 1))) is None
    assert chunk_json("k", "fast", 1, Note("keel.usage", "x")) is None
    final = usage_chunk_json("k", "fast", 1, Usage(3, 4))
    assert final["choices"] == [] and final["usage"]["total_tokens"] == 7


def test_a_decoded_upstream_stream_renders_back_to_the_same_tool_call() -> None:
    """Upstream chunks → events → client chunks keep the call's id, name and the arguments in order."""
    chunks = [chunk_json("k", "fast", 1, e) for e in decoded(OpenAIChatCodec(), TOOL_STREAM)]
    calls = [c["choices"][0]["delta"].get("tool_calls", [None])[0] for c in chunks if c is not None]
    first = [c for c in calls if c is not None and c["index"] == 0]
    assert first[0]["id"] == "call_a" and first[0]["function"]["name"] == "weather"
    assert "".join(c["function"]["arguments"] for c in first) == '{"city":"Oslo"}'
