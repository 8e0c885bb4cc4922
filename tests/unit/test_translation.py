"""Translation between the OpenAI and Anthropic shapes, codec by codec, with no I/O: the request fields
each wire carries, drops (noted) or refuses, thinking both ways, the forced answer tool, and the
reasoning rendered back in each client's shape."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from keel.errors import InvalidRequest
from keel.types import (
    IS_ERROR,
    PREFIX,
    THINKING,
    ChatRequest,
    ChatResponse,
    Finish,
    Message,
    Note,
    Reasoning,
    Start,
    Target,
    Text,
    ToolCallDelta,
)
from keel.wire.anthropic_messages import AnthropicCodec
from keel.wire.anthropic_request import parse_request
from keel.wire.anthropic_response import StreamEncoder, message_json
from keel.wire.openai_chat import OpenAIChatCodec, chunk_json, events_from_response, response_json
from keel.wire.translate import ANSWER_TOOL, BUDGETS, effort_of, thinking_of

NATIVE = AnthropicCodec(("claude-sonnet-4-5",))
CLAUDE = Target("ant", "claude-sonnet-4-5-20250929")
HAIKU = Target("ant", "claude-3-5-haiku-latest")
GPT = Target("oai", "gpt-5")
SCHEMA = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
JSON_SCHEMA = {"type": "json_schema", "json_schema": {"name": "N", "schema": SCHEMA, "strict": True}}
HI = (Message("user", "hi"),)
TOOL: Any = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}


def anthropic_body(target: Target = CLAUDE, **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = orjson.loads(NATIVE.encode_chat(ChatRequest("m", HI, **fields), target, False).body)
    return body


def anthropic_client(body: dict[str, Any], betas: str | None = None) -> ChatRequest:
    return parse_request(
        {"model": "m", "max_tokens": 2000, "messages": [{"role": "user", "content": "hi"}], **body}, betas
    )


# ---- response_format on an Anthropic target ---------------------------------------------------


def test_json_schema_goes_native_where_the_model_has_structured_output() -> None:
    body = anthropic_body(response_format=JSON_SCHEMA)
    closed = {**SCHEMA, "additionalProperties": False}  # Anthropic's subset: objects are closed
    assert body["output_config"] == {"format": {"type": "json_schema", "schema": closed}}
    assert "tools" not in body


def test_json_schema_elsewhere_is_a_forced_answer_tool() -> None:
    body = anthropic_body(HAIKU, response_format=JSON_SCHEMA)
    assert body["tools"] == [
        {"name": ANSWER_TOOL, "description": "Give the answer: its input is the whole reply.", "input_schema": SCHEMA}
    ]
    assert body["tool_choice"] == {"type": "tool", "name": ANSWER_TOOL}


def test_with_the_callers_tools_the_answer_tool_joins_them_and_some_tool_must_be_called() -> None:
    body = anthropic_body(HAIKU, response_format={"type": "json_object"}, tools=(TOOL,))
    assert [t["name"] for t in body["tools"]] == ["lookup", ANSWER_TOOL]
    assert body["tools"][1]["input_schema"] == {"type": "object", "additionalProperties": True}
    assert body["tool_choice"] == {"type": "any"}


@pytest.mark.parametrize(
    ("fmt", "param"),
    [({"type": "xml"}, "response_format"), ({"type": "json_schema", "json_schema": {}}, "response_format")],
)
def test_unusable_response_formats_are_refused(fmt: Any, param: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        anthropic_body(response_format=fmt)
    assert info.value.param == param


def test_text_response_format_asks_for_nothing() -> None:
    body = anthropic_body(response_format={"type": "text"})
    assert "output_config" not in body and "tools" not in body


# ---- the answer tool decoded back into text ---------------------------------------------------


def test_an_answer_tool_call_is_the_messages_text() -> None:
    answer = {
        "id": "msg_1",
        "model": "claude-3-5-haiku",
        "content": [{"type": "tool_use", "id": "toolu_1", "name": ANSWER_TOOL, "input": {"n": 3}}],
        "stop_reason": "tool_use",
        "usage": {"input_tokens": 5, "output_tokens": 3},
    }
    events = NATIVE.decode_chat(orjson.dumps(answer))
    assert events[1:3] == [Text('{"n":3}'), Finish("stop")]


def test_a_streamed_answer_tool_call_streams_as_text() -> None:
    decoder = NATIVE.stream_decoder()
    frames = [
        {"type": "message_start", "message": {"id": "msg_1", "model": "m", "usage": {"input_tokens": 5}}},
        {
            "type": "content_block_start",
            "index": 0,
            "content_block": {"type": "tool_use", "id": "t", "name": ANSWER_TOOL},
        },
        {"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": '{"n":'}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": " 3}"}},
        {"type": "content_block_stop", "index": 0},
        {"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 3}},
    ]
    events = [e for f in frames for e in decoder.feed(orjson.dumps(f))]
    assert events[:4] == [Start("msg_1", "m"), Text('{"n":'), Text(" 3}"), Finish("stop")]


# ---- reasoning_effort <-> thinking --------------------------------------------------------------


@pytest.mark.parametrize(
    ("effort", "cap", "thinking", "max_tokens"),
    [
        ("none", None, None, 4096),
        ("minimal", None, {"type": "enabled", "budget_tokens": 1024}, 4096 + 1024),
        ("medium", None, {"type": "enabled", "budget_tokens": 4096}, 4096 + 4096),
        ("high", None, {"type": "enabled", "budget_tokens": 16384}, 4096 + 16384),
        ("high", 3000, {"type": "enabled", "budget_tokens": 2999}, 3000),  # the budget shrinks under the cap
    ],
)
def test_reasoning_effort_maps_to_a_thinking_budget(
    effort: str, cap: int | None, thinking: Any, max_tokens: int
) -> None:
    assert thinking_of(effort, cap, 4096) == (thinking, max_tokens)


def test_sampling_that_thinking_cannot_run_with_is_dropped_and_noted() -> None:
    request = ChatRequest("m", HI, temperature=0.2, top_p=0.97, extra={"reasoning_effort": "low", "top_k": 5})
    out = NATIVE.encode_chat(request, CLAUDE, False)
    body = orjson.loads(out.body)
    assert "temperature" not in body and "top_k" not in body and body["top_p"] == 0.97
    assert out.notes == (Note("keel.dropped", "temperature, top_k"),)


def test_a_cap_too_small_to_think_in_is_refused() -> None:
    with pytest.raises(InvalidRequest) as info:
        thinking_of("low", 1024, 4096)
    assert info.value.param == "reasoning_effort"


@pytest.mark.parametrize(
    ("thinking", "effort"),
    [
        ({"type": "enabled", "budget_tokens": 1024}, "low"),
        ({"type": "enabled", "budget_tokens": BUDGETS["medium"]}, "medium"),
        ({"type": "enabled", "budget_tokens": 32000}, "high"),
        ({"type": "adaptive"}, "medium"),
        ({"type": "disabled"}, None),
    ],
)
def test_thinking_maps_back_to_an_effort(thinking: Any, effort: str | None) -> None:
    assert effort_of(thinking) == effort


def test_an_openai_client_may_send_anthropics_own_thinking() -> None:
    thinking = {"type": "enabled", "budget_tokens": 2000}
    body = anthropic_body(max_tokens=5000, extra={"thinking": thinking, "reasoning_effort": "high"})
    assert body["thinking"] == thinking and body["max_tokens"] == 5000


def test_thinking_and_a_forced_tool_cannot_go_together() -> None:
    with pytest.raises(InvalidRequest) as info:
        anthropic_body(HAIKU, response_format=JSON_SCHEMA, extra={"reasoning_effort": "low"})
    assert info.value.param == "reasoning_effort"


# ---- OpenAI dialect on an Anthropic target --------------------------------------------------------


def test_openai_options_are_carried_dropped_or_refused() -> None:
    out = NATIVE.encode_chat(
        ChatRequest("m", HI, tools=(TOOL,), extra={"parallel_tool_calls": False, "top_k": 3, "seed": 1}), CLAUDE, False
    )
    body = orjson.loads(out.body)
    assert body["tool_choice"] == {"type": "auto", "disable_parallel_tool_use": True} and body["top_k"] == 3
    assert out.notes == (Note("keel.dropped", "seed"),)
    for field, value in (("logprobs", True), ("audio", {"voice": "alloy"}), ("modalities", ["text", "audio"])):
        with pytest.raises(InvalidRequest) as info:
            anthropic_body(extra={field: value})
        assert info.value.param == field
    assert anthropic_body(extra={"logprobs": False, "modalities": ["text"]})["messages"]  # asking nothing is fine


def test_file_parts_become_document_blocks_and_file_ids_are_refused() -> None:
    pdf = {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBE"}}
    url = {"type": "file", "file": {"file_data": "https://example.com/a.pdf"}}
    body = orjson.loads(NATIVE.encode_chat(ChatRequest("m", (Message("user", [pdf, url]),)), CLAUDE, False).body)
    assert body["messages"][0]["content"] == [
        {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBE"}},
        {"type": "document", "source": {"type": "url", "url": "https://example.com/a.pdf"}},
    ]
    with pytest.raises(InvalidRequest) as info:
        NATIVE.encode_chat(
            ChatRequest("m", (Message("user", [{"type": "file", "file": {"file_id": "f"}}]),)), CLAUDE, False
        )
    assert info.value.param == "messages[0].content[0].file"


def test_openai_message_fields_anthropic_has_no_place_for_are_noted() -> None:
    messages = (
        Message("user", "hi"),
        Message("assistant", "ok", extra={"reasoning_content": "hmm"}),
        Message("user", "go"),
    )
    out = NATIVE.encode_chat(ChatRequest("m", messages), CLAUDE, False)
    assert out.notes == (Note("keel.dropped", "messages[].reasoning_content"),)


# ---- Anthropic dialect: parsed, then to Anthropic intact, to OpenAI translated ----------------------


def test_an_anthropic_body_keeps_its_own_fields_and_gives_the_format_as_response_format() -> None:
    config = {"format": {"type": "json_schema", "schema": SCHEMA}, "effort": "high"}
    request = anthropic_client({"output_config": config, "thinking": {"type": "adaptive"}, "top_k": 4}, "a-1, b-2")
    assert request.dialect == "anthropic_messages" and request.betas == ("a-1", "b-2")
    assert request.response_format is not None and request.response_format["json_schema"]["schema"] == SCHEMA
    out = NATIVE.encode_chat(request, HAIKU, False)  # the caller chose the native form: it is kept
    body = orjson.loads(out.body)
    assert body["output_config"] == config and body["thinking"] == {"type": "adaptive"} and body["top_k"] == 4
    assert "tools" not in body and out.headers == (("anthropic-beta", "a-1,b-2"),) and out.notes == ()


def test_the_older_output_format_is_read_too_and_bad_formats_are_refused() -> None:
    request = anthropic_client({"output_format": {"type": "json_schema", "schema": SCHEMA}})
    assert request.response_format is not None
    with pytest.raises(InvalidRequest) as info:
        anthropic_client({"output_config": {"format": {"type": "json_schema"}}})
    assert info.value.param == "output_config.format"
    with pytest.raises(InvalidRequest):
        anthropic_client({}, "bad beta\r\nx: y")


def test_thinking_blocks_and_is_error_ride_in_message_extra() -> None:
    thought = {"type": "thinking", "thinking": "t", "signature": "s"}
    messages = [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": [thought, {"type": "tool_use", "id": "c1", "name": "f", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "c1", "content": "no", "is_error": True}]},
    ]
    request = parse_request({"model": "m", "max_tokens": 10, "messages": messages})
    assert request.messages[1].extra == {THINKING: [thought]}
    assert request.messages[2].extra == {IS_ERROR: True}
    body = orjson.loads(NATIVE.encode_chat(request, CLAUDE, False).body)
    assert body["messages"] == messages


def test_to_an_openai_target_anthropic_fields_are_translated_or_dropped() -> None:
    request = anthropic_client(
        {
            "thinking": {"type": "enabled", "budget_tokens": 2000},
            "top_k": 4,
            "output_config": {"format": {"type": "json_schema", "schema": SCHEMA}},
            "service_tier": "auto",
        },
        "b-1",
    )
    plain = OpenAIChatCodec(frozenset({"reasoning_effort"})).encode_chat(request, GPT, False)
    body = orjson.loads(plain.body)
    assert body["reasoning_effort"] == "low" and body["response_format"]["type"] == "json_schema"
    assert {"thinking", "top_k", "output_config", "service_tier"}.isdisjoint(body)
    assert plain.notes == (Note("keel.dropped", "anthropic-beta, service_tier, top_k"),)
    vllm = orjson.loads(OpenAIChatCodec(frozenset({"top_k"})).encode_chat(request, GPT, False).body)
    assert vllm["top_k"] == 4 and "reasoning_effort" not in vllm


def test_output_config_effort_is_reasoning_effort_where_taken() -> None:
    request = anthropic_client({"output_config": {"effort": "max"}})
    body = orjson.loads(OpenAIChatCodec(frozenset({"reasoning_effort"})).encode_chat(request, GPT, False).body)
    assert body["reasoning_effort"] == "high"
    out = OpenAIChatCodec().encode_chat(request, GPT, False)
    assert out.notes == (Note("keel.dropped", "output_config.effort"),)


def test_tool_errors_read_as_errors_and_prefills_survive_on_openai_targets() -> None:
    messages = (
        Message("user", "q"),
        Message("tool", [{"type": "text", "text": "down"}], tool_call_id="c1", extra={IS_ERROR: True}),
        Message("assistant", "The", extra={PREFIX: True}),
    )
    request = ChatRequest("m", messages, dialect="anthropic_messages")
    body = orjson.loads(OpenAIChatCodec().encode_chat(request, GPT, False).body)
    assert body["messages"][1]["content"] == [
        {"type": "text", "text": "[tool error]"},
        {"type": "text", "text": "down"},
    ]
    assert body["messages"][2] == {"role": "assistant", "content": "The", "prefix": True}


def test_refused_anthropic_fields_on_openai_targets() -> None:
    with pytest.raises(InvalidRequest) as info:
        OpenAIChatCodec().encode_chat(anthropic_client({"mcp_servers": [{"type": "url"}]}), GPT, False)
    assert info.value.param == "mcp_servers"


# ---- reasoning in the answer, in each client's shape ----------------------------------------------


def test_openai_compatible_reasoning_is_read_from_messages_and_deltas() -> None:
    answer = {
        "id": "c",
        "model": "deepseek-reasoner",
        "choices": [{"message": {"content": "4", "reasoning_content": "2+2"}}],
    }
    assert events_from_response(answer)[1:3] == [Reasoning("2+2"), Text("4")]
    chunk = {"id": "c", "choices": [{"delta": {"reasoning": "hm"}}]}
    decoder = OpenAIChatCodec().stream_decoder()
    assert decoder.feed(orjson.dumps(chunk))[1:] == [Reasoning("hm")]


def test_reasoning_renders_as_reasoning_content_and_as_signed_thinking_blocks() -> None:
    blocks = ({"type": "thinking", "thinking": "2+2", "signature": "sig"}, {"type": "redacted_thinking", "data": "x"})
    r = ChatResponse("id", "m", "4", (), "stop", None, blocks)
    assert response_json(r, "a", 0)["choices"][0]["message"]["reasoning_content"] == "2+2"
    assert message_json(r, "msg_1", "m")["content"] == [*blocks, {"type": "text", "text": "4"}]
    assert chunk_json("id", "a", 0, Reasoning("hm"))["choices"][0]["delta"] == {"reasoning_content": "hm"}  # type: ignore[index]
    assert chunk_json("id", "a", 0, Reasoning(signature="sig")) is None


def test_the_anthropic_stream_encoder_opens_thinking_blocks_and_signs_them() -> None:
    encoder = StreamEncoder("msg_1", "m")
    frames = b"".join(
        encoder.feed(e)
        for e in (Reasoning("a"), Reasoning("b"), Reasoning(signature="sig"), Reasoning(redacted="x"), Text("4"))
    )
    events = [orjson.loads(line[6:]) for line in frames.split(b"\n") if line.startswith(b"data: ")]
    assert [(e["type"], e.get("index")) for e in events] == [
        ("content_block_start", 0),
        ("content_block_delta", 0),
        ("content_block_delta", 0),
        ("content_block_delta", 0),
        ("content_block_stop", 0),
        ("content_block_start", 1),
        ("content_block_stop", 1),
        ("content_block_start", 2),
        ("content_block_delta", 2),
    ]
    assert events[3]["delta"] == {"type": "signature_delta", "signature": "sig"}
    assert events[5]["content_block"] == {"type": "redacted_thinking", "data": "x"}


def test_tool_calls_still_stream_after_thinking() -> None:
    encoder = StreamEncoder("msg_1", "m")
    frames = encoder.feed(Reasoning("a")) + encoder.feed(ToolCallDelta(0, "t1", "f", "{}"))
    assert b'"type":"tool_use"' in frames and b'"index":1' in frames


def test_documents_reach_anthropic_whole_and_openai_as_file_or_text_parts() -> None:
    pdf = {
        "type": "document",
        "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBE"},
        "title": "a.pdf",
        "citations": {"enabled": True},
        "cache_control": {"type": "ephemeral"},
    }
    url = {"type": "document", "source": {"type": "url", "url": "https://example.com/b.pdf"}}
    text = {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "Plain words."}}
    blocks = [pdf, url, text, {"type": "text", "text": "Summarise."}]
    request = parse_request({"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": blocks}]})
    assert orjson.loads(NATIVE.encode_chat(request, CLAUDE, False).body)["messages"][0]["content"] == blocks
    parts = orjson.loads(OpenAIChatCodec().encode_chat(request, GPT, False).body)["messages"][0]["content"]
    assert parts == [
        {
            "type": "file",
            "file": {"file_data": "data:application/pdf;base64,JVBE", "filename": "a.pdf"},
            "cache_control": {"type": "ephemeral"},
        },
        {"type": "file", "file": {"file_data": "https://example.com/b.pdf"}},
        {"type": "text", "text": "Plain words."},
        {"type": "text", "text": "Summarise."},
    ]
    uploaded = {"type": "document", "source": {"type": "file", "file_id": "file_1"}}
    request = parse_request({"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": [uploaded]}]})
    with pytest.raises(InvalidRequest) as info:
        OpenAIChatCodec().encode_chat(request, GPT, False)
    assert info.value.param == "messages[0].content[0]"


def test_tool_strictness_and_anthropics_own_tool_fields() -> None:
    tool = {**{k: v for k, v in TOOL.items()}, "function": {**TOOL["function"], "strict": True}}
    assert anthropic_body(tools=(tool,))["tools"][0]["strict"] is True  # a structured-output model takes it
    out = NATIVE.encode_chat(ChatRequest("m", HI, tools=(tool,)), HAIKU, False)
    assert "strict" not in orjson.loads(out.body)["tools"][0]
    assert out.notes == (Note("keel.dropped", "tools[].function.strict"),)
    own = {"name": "f", "input_schema": {"type": "object"}, "strict": True, "input_examples": [{"a": 1}]}
    request = anthropic_client({"tools": [own]})
    assert orjson.loads(NATIVE.encode_chat(request, HAIKU, False).body)["tools"] == [own]
    plain = OpenAIChatCodec().encode_chat(request, GPT, False)
    assert orjson.loads(plain.body)["tools"] == [
        {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}, "strict": True}}
    ]
    assert plain.notes == (Note("keel.dropped", "tools[].input_examples"),)


def test_a_native_schema_is_rewritten_into_anthropics_subset() -> None:
    schema = {
        "type": "object",
        "properties": {
            "age": {"type": "integer", "minimum": 0, "description": "years"},
            "email": {"type": "string", "format": "email", "maxLength": 99},
            "pet": {"oneOf": [{"type": "string"}, {"type": "null"}]},
            "tags": {"type": "array", "items": {"type": "string"}, "minItems": 2},
            "kind": {"enum": ["a", "b"], "type": "string"},
        },
        "required": ["age"],
    }
    fmt = {"type": "json_schema", "json_schema": {"name": "P", "schema": schema}}
    sent = anthropic_body(response_format=fmt)["output_config"]["format"]["schema"]
    assert sent == {
        "type": "object",
        "properties": {
            "age": {"type": "integer", "description": "years\n\n{minimum: 0}"},
            "email": {"type": "string", "format": "email", "description": "{maxLength: 99}"},
            "pet": {"anyOf": [{"type": "string"}, {"type": "null"}]},
            "tags": {"type": "array", "items": {"type": "string"}, "description": "{minItems: 2}"},
            "kind": {"enum": ["a", "b"]},
        },
        "additionalProperties": False,
        "required": ["age"],
    }
    deep: dict[str, Any] = {"type": "string"}
    for _ in range(200):  # a schema nested past any model's limit is sent on, not a crash
        deep = {"type": "array", "items": deep}
    assert anthropic_body(response_format={"type": "json_schema", "json_schema": {"schema": deep}})["output_config"]
