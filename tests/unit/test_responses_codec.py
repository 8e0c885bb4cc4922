"""The Responses codecs on recorded payloads, no I/O: the edge's (keel.wire.openai_responses and
openai_responses_reply) and the one for Responses API upstreams (openai_responses_upstream).

Requests are bodies as the openai SDK and pydantic-ai send them; what the codec renders is checked
against the openai SDK's own pydantic models (validated, not merely constructed), which are the
spec of what clients parse.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from openai.types.responses import Response, ResponseItem, ResponseStreamEvent
from pydantic import TypeAdapter

from keel.errors import ErrorKind, InvalidRequest, ProviderError
from keel.types import (
    ChatRequest,
    ChatResponse,
    Finish,
    Message,
    Reasoning,
    Start,
    Target,
    Text,
    ToolCall,
    ToolCallDelta,
    Usage,
    UsageEvent,
)
from keel.wire import openai_responses as wire
from keel.wire import openai_responses_reply as reply
from keel.wire.openai_responses_upstream import OpenAIResponsesCodec

# keys the fuzz test draws from: the body's own fields, and the fields of its items, parts and tools
FIELDS = [
    "input", "instructions", "tools", "tool_choice", "text", "format", "reasoning", "effort", "type", "role",
    "content", "text", "name", "call_id", "arguments", "output", "image_url", "mode", "schema", "parameters",
    "metadata", "truncation", "include", "max_output_tokens", "temperature", "id", "verbosity",
]  # fmt: skip
EVENTS: TypeAdapter[Any] = TypeAdapter(ResponseStreamEvent)
ITEMS: TypeAdapter[Any] = TypeAdapter(list[ResponseItem])

# pydantic-ai's second model request of a tool run (its OpenAIResponsesModel, store off), as sent
PYDANTIC_AI_TURN: Any = {
    "model": "gpt-4o-mini",
    "input": [
        {"role": "user", "content": "What is the weather in Paris?"},
        {"id": "rs_1", "type": "reasoning", "summary": [], "encrypted_content": "gAAAA"},
        {
            "type": "function_call",
            "call_id": "call_abc",
            "name": "get_weather",
            "arguments": '{"city": "Paris"}',
            "id": "fc_1",
        },
        {"type": "function_call_output", "call_id": "call_abc", "output": "sunny"},
    ],
    "instructions": "Be concise.",
    "parallel_tool_calls": False,
    "tools": [
        {
            "type": "function",
            "name": "get_weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
            "strict": True,
            "description": "Weather in a city",
        }
    ],
    "tool_choice": "auto",
    "reasoning": {"effort": "low", "summary": "auto"},
    "text": {"format": {"type": "text"}, "verbosity": "low"},
    "truncation": "disabled",
    "include": ["reasoning.encrypted_content"],
    "store": False,
    "stream": True,
    "stream_options": {"include_obfuscation": False},
    "max_output_tokens": 300,
    "temperature": 0.2,
}


def test_a_tool_turn_becomes_chat_messages() -> None:
    parsed = wire.parse_request(PYDANTIC_AI_TURN)
    chat = wire.chat_request(parsed)
    assert chat.messages == (
        Message("system", "Be concise."),
        Message("user", "What is the weather in Paris?"),
        Message("assistant", None, tool_calls=(ToolCall("call_abc", "get_weather", '{"city": "Paris"}'),)),
        Message("tool", "sunny", tool_call_id="call_abc"),
    )
    function = {k: v for k, v in PYDANTIC_AI_TURN["tools"][0].items() if k != "type"}
    assert chat.tools == ({"type": "function", "function": function},)
    assert (chat.tool_choice, chat.max_tokens, chat.temperature, chat.stream) == ("auto", 300, 0.2, True)
    assert chat.response_format is None and not parsed.store
    assert chat.extra == {"reasoning_effort": "low", "verbosity": "low", "parallel_tool_calls": False}


def test_history_then_input_and_assistant_text_merges_with_its_calls() -> None:
    history: Any = [
        {"id": "msg_1", "type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]},
        reply.message_item("msg_2", "let me look"),
        reply.call_item("fc_3", "call_1", "lookup", '{"q": 1}'),
        reply.call_item("fc_4", "call_2", "lookup", '{"q": 2}'),
    ]
    outputs = [{"type": "function_call_output", "call_id": f"call_{n}", "output": str(n)} for n in (1, 2)]
    chat = wire.chat_request(wire.parse_request({"model": "m", "input": outputs}), history)
    calls = (ToolCall("call_1", "lookup", '{"q": 1}'), ToolCall("call_2", "lookup", '{"q": 2}'))
    assert chat.messages == (
        Message("user", "hi"),
        Message("assistant", "let me look", tool_calls=calls),
        Message("tool", "1", tool_call_id="call_1"),
        Message("tool", "2", tool_call_id="call_2"),
    )


def test_parts_images_files_and_formats() -> None:
    body: Any = {
        "model": "m",
        "input": [
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "what is this?"},
                    {"type": "input_image", "image_url": "data:image/png;base64,AAAA", "detail": "high"},
                    {"type": "input_file", "file_data": "data:application/pdf;base64,BBBB", "filename": "a.pdf"},
                ],
            }
        ],
        "text": {"format": {"type": "json_schema", "name": "Thing", "schema": {"type": "object"}, "strict": True}},
        "tools": [
            {"type": "function", "name": "a", "parameters": None, "strict": None},
            {"type": "function", "name": "b"},
        ],
        "tool_choice": {"type": "allowed_tools", "mode": "required", "tools": [{"type": "function", "name": "b"}]},
    }
    chat = wire.chat_request(wire.parse_request(body))
    assert chat.messages[0].content == [
        {"type": "text", "text": "what is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA", "detail": "high"}},
        {"type": "file", "file": {"file_data": "data:application/pdf;base64,BBBB", "filename": "a.pdf"}},
    ]
    schema = {"name": "Thing", "schema": {"type": "object"}, "strict": True}
    assert chat.response_format == {"type": "json_schema", "json_schema": schema}
    assert chat.tools == ({"type": "function", "function": {"name": "b"}},) and chat.tool_choice == "required"
    one = wire.parse_request({"model": "m", "input": "x", "text": {"format": {"type": "json_object"}}})
    assert wire.chat_request(one).response_format == {"type": "json_object"}
    named = wire.parse_request(
        {"model": "m", "input": "x", "tools": body["tools"], "tool_choice": {"type": "function", "name": "a"}}
    )
    assert wire.chat_request(named).tool_choice == {"type": "function", "function": {"name": "a"}}


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (
            {"input": [{"role": "user", "content": "a"}, {"type": "computer_call_output", "call_id": "x"}]},
            "input[1].type",
        ),
        ({"input": [{"role": "critic", "content": "a"}]}, "input[0].role"),
        ({"input": [{"role": "user", "content": [{"type": "output_text", "text": "a"}]}]}, "input[0].content[0].type"),
        (
            {"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "f"}]}]},
            "input[0].content[0].image_url",
        ),
        ({"input": [{"type": "function_call", "call_id": "c", "name": "f"}]}, "input[0].arguments"),
        ({"input": "a", "tools": [{"type": "function"}]}, "tools[0].name"),
        ({"input": "a", "tool_choice": {"type": "function", "name": "nope"}}, "tool_choice.name"),
        ({"input": "a", "text": {"format": {"type": "grammar"}}}, "text.format.type"),
        ({"input": "a", "max_output_tokens": 0}, "max_output_tokens"),
        ({"input": "a", "temperature": 3}, "temperature"),
        ({"input": "a", "metadata": {"k": 1}}, "k"),
        ({"input": "a", "conversation": "conv_1"}, "conversation"),
        ({"input": "a", "previous_response_id": 7}, "previous_response_id"),
        ({"input": []}, "input"),
    ],
)
def test_refusals_name_the_field(body: Any, param: str) -> None:
    with pytest.raises(InvalidRequest) as err:
        wire.chat_request(wire.parse_request({"model": "m", **body}))
    assert err.value.param == param


def test_response_json_is_what_the_sdk_parses() -> None:
    parsed = wire.parse_request({**PYDANTIC_AI_TURN, "stream": False, "store": True, "metadata": {"a": "b"}})
    answer = ChatResponse(
        "chatcmpl-1", "gpt-4o-mini-2024", "It is sunny.", (ToolCall("call_9", "get_weather", "{}"),), "tool_calls",
        Usage(input_tokens=30, output_tokens=7, cached_input_tokens=10, reasoning_tokens=2),
    )  # fmt: skip
    out = reply.response_json(
        parsed, "resp_t1", 1_700_000_000.5, answer.model, output=reply.output_items(answer, "t1"), usage=answer.usage
    )
    r = Response.model_validate(out)
    assert r.output_text == "It is sunny." and r.status == "completed" and r.model == "gpt-4o-mini-2024"
    assert [o.type for o in r.output] == ["message", "function_call"]
    assert r.output[1].call_id == "call_9"  # type: ignore[union-attr]
    assert r.usage is not None and (r.usage.total_tokens, r.usage.input_tokens_details.cached_tokens) == (37, 10)
    assert r.usage.output_tokens_details.reasoning_tokens == 2
    assert r.reasoning is not None and r.reasoning.effort == "low" and r.parallel_tool_calls is False
    assert reply.status_of("length") == ("incomplete", {"reason": "max_output_tokens"})
    ITEMS.validate_python(wire.with_ids(parsed.items, "t1"))


def _decode(frames: bytes) -> list[Any]:
    events = []
    for frame in frames.decode().strip().split("\n\n"):
        head, data = frame.split("\n")
        event = orjson.loads(data.removeprefix("data: "))
        assert head == f"event: {event['type']}"
        events.append(EVENTS.validate_python(event))
    return events


def test_stream_encoder_event_sequence() -> None:
    parsed = wire.parse_request({"model": "m", "input": "weather?", "stream": True})
    enc = reply.StreamEncoder(parsed, "resp_t9", 1_700_000_000.0, "m-1")
    feed = [
        Start("x", "m-1"), Text("Let me "), Text("check."), ToolCallDelta(0, "call_1", "get_weather", ""),
        ToolCallDelta(0, None, None, '{"city":'), ToolCallDelta(0, None, None, ' "Paris"}'),
        ToolCallDelta(1, "call_2", "get_time", "{}"), Finish("tool_calls"), UsageEvent(Usage(12, 9)),
    ]  # fmt: skip
    raw = enc.start() + b"".join(enc.feed(e) for e in feed)
    frames, final = enc.close()
    events = _decode(raw + frames + enc.completed(final))
    assert [e.type for e in events] == [
        "response.created", "response.in_progress",
        "response.output_item.added", "response.content_part.added",
        "response.output_text.delta", "response.output_text.delta",
        "response.output_text.done", "response.content_part.done", "response.output_item.done",
        "response.output_item.added", "response.function_call_arguments.delta",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done", "response.output_item.done",
        "response.output_item.added", "response.function_call_arguments.delta",
        "response.function_call_arguments.done", "response.output_item.done",
        "response.completed",
    ]  # fmt: skip
    assert [e.sequence_number for e in events] == list(range(len(events)))
    done = events[-1].response
    assert done.output_text == "Let me check." and done.usage.total_tokens == 21
    assert [o.type for o in done.output] == ["message", "function_call", "function_call"]
    assert {o.status for o in done.output} == {"completed"}
    assert done.output[1].arguments == '{"city": "Paris"}' and done.output[1].id == events[9].item.id


def test_stream_encoder_failure_is_an_error_then_response_failed() -> None:
    enc = reply.StreamEncoder(wire.parse_request({"model": "m", "input": "hi"}), "resp_t8", 1.0, "m")
    raw = enc.start() + enc.feed(Text("partial"))
    events = _decode(raw + enc.failed(_overloaded()))
    assert [e.type for e in events[-2:]] == ["error", "response.failed"]
    failed = events[-1].response
    assert failed.status == "failed" and failed.error.code == "server_error" and failed.output_text == "partial"


def _overloaded() -> ProviderError:
    return ProviderError(ErrorKind.overloaded, "upstream overloaded", status=503)


def test_thinking_becomes_reasoning_items() -> None:
    parsed = wire.parse_request({"model": "m", "input": "why?", "reasoning": {"effort": "low"}})
    answer = ChatResponse(
        "x", "claude", "Because.", (), "stop", Usage(5, 9, reasoning_tokens=4),
        ({"type": "thinking", "thinking": "Let me think.", "signature": "sig"}, {"type": "redacted_thinking", "data": "opaque"}),
    )  # fmt: skip
    r = Response.model_validate(
        reply.response_json(parsed, "resp_t7", 1.0, "claude", output=reply.output_items(answer, "t7"))
    )
    assert [o.type for o in r.output] == ["reasoning", "reasoning", "message"]
    assert r.output[0].content[0].text == "Let me think." and r.output[1].encrypted_content == "opaque"  # type: ignore[union-attr]

    enc = reply.StreamEncoder(parsed, "resp_t6", 1.0, "claude")
    feed = [
        Reasoning("Let me "),
        Reasoning("think."),
        Reasoning(signature="sig"),
        Reasoning(redacted="opaque"),
        Text("Because."),
        Finish("stop"),
    ]
    raw = enc.start() + b"".join(enc.feed(e) for e in feed)
    frames, final = enc.close()
    events = _decode(raw + frames + enc.completed(final))
    assert [e.type for e in events] == [
        "response.created", "response.in_progress",
        "response.output_item.added", "response.content_part.added",
        "response.reasoning_text.delta", "response.reasoning_text.delta",
        "response.reasoning_text.done", "response.content_part.done", "response.output_item.done",
        "response.output_item.added", "response.output_item.done",
        "response.output_item.added", "response.content_part.added", "response.output_text.delta",
        "response.output_text.done", "response.content_part.done", "response.output_item.done",
        "response.completed",
    ]  # fmt: skip
    done = events[-1].response
    assert [o.type for o in done.output] == ["reasoning", "reasoning", "message"]
    assert done.output[0].content[0].text == "Let me think." and done.output_text == "Because."


# ---- the codec for Responses API upstreams -----------------------------------------------------


# an answer of OpenAI's /v1/responses, as recorded (ids shortened)
OPENAI_ANSWER: Any = {
    "id": "resp_68af",
    "object": "response",
    "created_at": 1756000000,
    "status": "completed",
    "model": "gpt-5-2025-08-07",
    "output": [
        {"id": "rs_1", "type": "reasoning", "summary": []},
        {"id": "fc_2", "type": "function_call", "status": "completed", "arguments": '{"city":"Paris"}',
         "call_id": "call_Xy", "name": "get_weather"},
    ],
    "usage": {"input_tokens": 75, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": 83,
              "output_tokens_details": {"reasoning_tokens": 64}, "total_tokens": 158},
}  # fmt: skip


def test_upstream_encoding_of_a_chat_request() -> None:
    tool: Any = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
    request = ChatRequest(
        "alias",
        (
            Message("system", "be brief"),
            Message("user", [{"type": "text", "text": "look"}, {"type": "image_url", "image_url": {"url": "https://x/y.png"}}]),
            Message("assistant", None, tool_calls=(ToolCall("call_1", "get_weather", '{"city":"Paris"}'),)),
            Message("tool", "sunny", tool_call_id="call_1"),
        ),
        max_tokens=100,
        tools=(tool,),
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        response_format={"type": "json_schema", "json_schema": {"name": "W", "schema": {"type": "object"}, "strict": True}},
        extra={"reasoning_effort": "low", "seed": 7, "parallel_tool_calls": False},
    )  # fmt: skip
    out = OpenAIResponsesCodec().encode_chat(request, Target("oair", "gpt-5"), stream=True)
    body = orjson.loads(out.body)
    assert out.path == "/responses"
    assert body["input"] == [
        {"type": "message", "role": "system", "content": "be brief"},
        {"type": "message", "role": "user", "content": [
            {"type": "input_text", "text": "look"}, {"type": "input_image", "image_url": "https://x/y.png", "detail": "auto"}]},
        {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": '{"city":"Paris"}'},
        {"type": "function_call_output", "call_id": "call_1", "output": "sunny"},
    ]  # fmt: skip
    assert body["tools"] == [
        {"type": "function", "name": "get_weather", "strict": False, "parameters": {"type": "object"}}
    ]
    assert body["tool_choice"] == {"type": "function", "name": "get_weather"}
    assert body["text"] == {
        "format": {"type": "json_schema", "name": "W", "schema": {"type": "object"}, "strict": True}
    }
    assert (body["model"], body["max_output_tokens"], body["stream"], body["store"]) == ("gpt-5", 100, True, False)
    assert body["reasoning"] == {"effort": "low"} and body["parallel_tool_calls"] is False and "seed" not in body
    assert [(n.tag, n.value) for n in out.notes] == [("keel.dropped", "seed")]


def test_upstream_decoding_of_an_answer_and_its_stream() -> None:
    codec = OpenAIResponsesCodec()
    events = codec.decode_chat(orjson.dumps(OPENAI_ANSWER))
    assert events == [
        Start("resp_68af", "gpt-5-2025-08-07"),
        ToolCallDelta(0, "call_Xy", "get_weather", '{"city":"Paris"}'),
        Finish("tool_calls"),
        UsageEvent(Usage(75, 83, reasoning_tokens=64)),
    ]
    decoder = codec.stream_decoder()
    stream: list[Any] = [
        {"type": "response.created", "response": {**OPENAI_ANSWER, "status": "in_progress", "output": []}},
        {"type": "response.output_item.added", "output_index": 0, "item": {"type": "reasoning", "id": "rs_1"}},
        {"type": "response.reasoning_summary_text.delta", "output_index": 0, "delta": "Thinking"},
        {
            "type": "response.output_item.added",
            "output_index": 1,
            "item": {"type": "message", "id": "m", "content": []},
        },
        {"type": "response.output_text.delta", "output_index": 1, "delta": "It is "},
        {"type": "response.output_text.delta", "output_index": 1, "delta": "sunny."},
        {"type": "response.completed", "response": {**OPENAI_ANSWER, "output": []}},
    ]
    got = [e for chunk in stream for e in decoder.feed(orjson.dumps(chunk))]
    assert got == [
        Start("resp_68af", "gpt-5-2025-08-07"),
        Reasoning("Thinking"),
        Text("It is "),
        Text("sunny."),
        Finish("stop"),
        UsageEvent(Usage(75, 83, reasoning_tokens=64)),
    ]
    assert decoder.done and decoder.close() == []
    failed = codec.stream_decoder()
    with pytest.raises(ProviderError) as err:
        failed.feed(
            orjson.dumps(
                {"type": "response.failed", "response": {"error": {"code": "server_error", "message": "boom"}}}
            )
        )
    assert err.value.kind == ErrorKind.server


JSONS = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 5) | st.sampled_from(["", "x", "user", "function", "message", "auto"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(FIELDS), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(st.sampled_from(FIELDS), JSONS, max_size=6))
def test_any_body_is_an_answer_or_a_400_naming_a_field(body: dict[str, Any]) -> None:
    try:
        wire.chat_request(wire.parse_request({"model": "m", **body}))
    except InvalidRequest as err:
        assert err.param, err.message


def test_a_cut_answer_is_incomplete_not_completed() -> None:
    enc = reply.StreamEncoder(
        wire.parse_request({"model": "m", "input": "hi", "max_output_tokens": 2}), "resp_t5", 1.0, "m"
    )
    raw = enc.start() + enc.feed(Text("one two")) + enc.feed(Finish("length"))
    frames, final = enc.close()
    events = _decode(raw + frames + enc.completed(final))
    assert events[-1].type == "response.incomplete"
    assert (
        events[-1].response.status == "incomplete"
        and events[-1].response.incomplete_details.reason == "max_output_tokens"
    )
