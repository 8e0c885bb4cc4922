"""GeminiCodec on payloads shaped as Google's generateContent reference shows them."""

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
    Start,
    Target,
    Text,
    ToolCall,
    ToolCallDelta,
    Usage,
    UsageEvent,
)
from keel.wire.base import Codec
from keel.wire.gemini import GeminiCodec

CODEC: Codec = GeminiCodec()
TARGET = Target("gem", "gemini-2.5-flash")
TOOL = {
    "type": "function",
    "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}},
}


def encode(request: ChatRequest, stream: bool = False) -> tuple[str, Any]:
    out = CODEC.encode_chat(request, TARGET, stream)
    return out.path, orjson.loads(out.body)


def ask(*messages: Message, **fields: Any) -> ChatRequest:
    return ChatRequest(model="alias", messages=messages, **fields)


def test_paths_name_the_model_and_the_method() -> None:
    request = ask(Message("user", "hi"))
    assert encode(request)[0] == "/models/gemini-2.5-flash:generateContent"
    assert encode(request, stream=True)[0] == "/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
    out = CODEC.encode_chat(request, Target("gem", "models/gemini-2.5-pro"), False)
    assert out.path == "/models/gemini-2.5-pro:generateContent"


def test_system_turns_sampling_and_images() -> None:
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
    request = ask(
        Message("system", "be brief"),
        Message("developer", [{"type": "text", "text": "use metric units"}]),
        Message("user", [{"type": "text", "text": "what is this?"}, image]),
        Message("assistant", "a cat"),
        Message("user", "sure?"),
        Message("user", "really?"),
        temperature=0.2,
        top_p=0.9,
        max_tokens=64,
        stop=("END",),
        extra={"top_k": 40, "seed": 7, "n": 1},
    )
    _, body = encode(request)
    assert body["systemInstruction"] == {"parts": [{"text": "be brief"}, {"text": "use metric units"}]}
    assert body["contents"] == [
        {
            "role": "user",
            "parts": [{"text": "what is this?"}, {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}}],
        },
        {"role": "model", "parts": [{"text": "a cat"}]},
        {"role": "user", "parts": [{"text": "sure?"}, {"text": "really?"}]},
    ]
    config = {"temperature": 0.2, "topP": 0.9, "maxOutputTokens": 64, "stopSequences": ["END"], "topK": 40, "seed": 7}
    assert body["generationConfig"] == config


@pytest.mark.parametrize(
    ("choice", "config"),
    [
        ("auto", {"mode": "AUTO"}),
        ("required", {"mode": "ANY"}),
        ("none", {"mode": "NONE"}),
        (
            {"type": "function", "function": {"name": "get_weather"}},
            {"mode": "ANY", "allowedFunctionNames": ["get_weather"]},
        ),
    ],
)
def test_tool_choice(choice: Any, config: Any) -> None:
    _, body = encode(ask(Message("user", "hi"), tools=(TOOL,), tool_choice=choice))
    declaration = {"name": "get_weather", "parametersJsonSchema": TOOL["function"]["parameters"]}  # type: ignore[index]
    assert body["tools"] == [{"functionDeclarations": [declaration]}]
    assert body["toolConfig"] == {"functionCallingConfig": config}


def test_tool_results_are_named_after_their_call() -> None:
    request = ask(
        Message("user", "weather?"),
        Message(
            "assistant",
            None,
            tool_calls=(ToolCall("c1", "get_weather", '{"city": "Paris"}'), ToolCall("c2", "now", "")),
        ),
        Message("tool", '{"sky": "sunny"}', tool_call_id="c1"),
        Message("tool", "12:00", tool_call_id="c2"),
    )
    _, body = encode(request)
    assert body["contents"][1] == {
        "role": "model",
        "parts": [
            {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}},
            {"functionCall": {"name": "now", "args": {}}},
        ],
    }
    assert body["contents"][2] == {
        "role": "user",
        "parts": [
            {"functionResponse": {"name": "get_weather", "response": {"output": {"sky": "sunny"}}}},
            {"functionResponse": {"name": "now", "response": {"output": "12:00"}}},
        ],
    }


@pytest.mark.parametrize(
    ("fmt", "config"),
    [
        ({"type": "json_object"}, {"responseMimeType": "application/json"}),
        (
            {
                "type": "json_schema",
                "json_schema": {"name": "w", "schema": {"type": "object", "additionalProperties": False}},
            },
            {
                "responseMimeType": "application/json",
                "responseJsonSchema": {"type": "object", "additionalProperties": False},
            },
        ),
    ],
)
def test_response_format_becomes_json_output(fmt: Any, config: Any) -> None:
    assert encode(ask(Message("user", "hi"), response_format=fmt))[1]["generationConfig"] == config


@pytest.mark.parametrize(
    ("request_", "param"),
    [
        (ask(Message("user", "hi"), extra={"n": 2}), "n"),
        (ask(Message("tool", "x", tool_call_id="nope")), "messages[0].tool_call_id"),
        (
            ask(Message("user", [{"type": "image_url", "image_url": {"url": "https://x/cat.png"}}])),
            "messages[0].content[0].image_url.url",
        ),
        (ask(Message("user", "hi"), response_format={"type": "json_schema"}), "response_format"),
        (ask(Message("user", "hi"), tools=(TOOL,), tool_choice={"type": "function"}), "tool_choice"),
    ],
    ids=["n", "orphan-tool-result", "image-url", "schema-missing", "bad-choice"],
)
def test_what_gemini_cannot_carry_is_refused_naming_the_field(request_: ChatRequest, param: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        CODEC.encode_chat(request_, TARGET, False)
    assert info.value.param == param


ANSWER = {
    "candidates": [
        {
            "content": {
                "parts": [
                    {"text": "thinking about it", "thought": True},
                    {"text": "Let me check."},
                    {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}},
                ],
                "role": "model",
            },
            "finishReason": "STOP",
            "index": 0,
        }
    ],
    "usageMetadata": {
        "promptTokenCount": 120,
        "candidatesTokenCount": 15,
        "totalTokenCount": 145,
        "cachedContentTokenCount": 100,
        "thoughtsTokenCount": 10,
    },
    "modelVersion": "gemini-2.5-flash",
    "responseId": "resp-1",
}


def test_a_whole_answer() -> None:
    assert CODEC.decode_chat(orjson.dumps(ANSWER)) == [
        Start("resp-1", "gemini-2.5-flash"),
        Text("Let me check."),
        ToolCallDelta(0, "call_0", "get_weather", '{"city":"Paris"}'),
        Finish("tool_calls"),
        UsageEvent(Usage(input_tokens=120, output_tokens=25, cached_input_tokens=100, reasoning_tokens=10)),
    ]


@pytest.mark.parametrize(
    ("reason", "finish"), [("STOP", "stop"), ("MAX_TOKENS", "length"), ("SAFETY", "content_filter"), ("OTHER", "stop")]
)
def test_finish_reasons(reason: str, finish: str) -> None:
    body = {"candidates": [{"content": {"parts": [{"text": "x"}]}, "finishReason": reason}]}
    assert Finish(finish) in CODEC.decode_chat(orjson.dumps(body))


def test_a_blocked_prompt_is_a_content_filter_error() -> None:
    with pytest.raises(ProviderError) as info:
        CODEC.decode_chat(orjson.dumps({"promptFeedback": {"blockReason": "SAFETY"}}))
    assert info.value.error_kind is ErrorKind.content_filter


def test_a_200_that_is_not_an_answer_is_an_error() -> None:
    with pytest.raises(ProviderError) as info:
        CODEC.decode_chat(b'{"candidates": []}')
    assert info.value.error_kind is ErrorKind.protocol
    with pytest.raises(ProviderError) as info:
        CODEC.decode_chat(b'{"error": {"code": 503, "message": "overloaded", "status": "UNAVAILABLE"}}')
    assert info.value.error_kind is ErrorKind.overloaded


def chunk(parts: list[Any], finish: str | None = None, usage: Any = None) -> bytes:
    candidate: Any = {"content": {"parts": parts, "role": "model"}, "index": 0}
    if finish:
        candidate["finishReason"] = finish
    body: Any = {"candidates": [candidate], "modelVersion": "gemini-2.5-flash", "responseId": "r9"}
    if usage:
        body["usageMetadata"] = usage
    return orjson.dumps(body)


def test_a_stream() -> None:
    decoder = CODEC.stream_decoder()
    events: list[ChatEvent] = []
    events += decoder.feed(chunk([{"text": "Hel"}], usage={"promptTokenCount": 5}))
    events += decoder.feed(b"{not json")  # one malformed chunk is skipped and noted
    events += decoder.feed(chunk([{"text": "lo"}]))
    assert not decoder.done
    events += decoder.feed(
        chunk([{"text": ""}], "STOP", {"promptTokenCount": 5, "candidatesTokenCount": 2, "totalTokenCount": 7})
    )
    assert decoder.done and decoder.close() == []
    assert events == [
        Start("r9", "gemini-2.5-flash"),
        Text("Hel"),
        Note("keel.malformed_events", "1"),
        Text("lo"),
        Finish("stop"),
        UsageEvent(Usage(input_tokens=5, output_tokens=2)),
    ]


def test_a_stream_with_function_calls_and_no_finish_is_incomplete() -> None:
    decoder = CODEC.stream_decoder()
    call = {"functionCall": {"name": "a", "args": {"x": 1}, "id": "fc-1"}}
    assert decoder.feed(chunk([call]))[1:] == [ToolCallDelta(0, "fc-1", "a", '{"x":1}')]
    with pytest.raises(ProviderError) as info:
        decoder.close()
    assert info.value.error_kind is ErrorKind.protocol


def test_an_error_inside_a_stream() -> None:
    decoder = CODEC.stream_decoder()
    decoder.feed(chunk([{"text": "a"}]))
    with pytest.raises(ProviderError) as info:
        decoder.feed(b'{"error": {"code": 429, "message": "quota", "status": "RESOURCE_EXHAUSTED"}}')
    assert info.value.error_kind is ErrorKind.rate_limited


def error(status: int, name: str, message: str = "m", details: Any = None) -> bytes:
    return orjson.dumps({"error": {"code": status, "message": message, "status": name, "details": details or []}})


@pytest.mark.parametrize(
    ("status", "body", "kind"),
    [
        (429, error(429, "RESOURCE_EXHAUSTED"), ErrorKind.rate_limited),
        (400, error(400, "INVALID_ARGUMENT"), ErrorKind.bad_request),
        (400, error(400, "FAILED_PRECONDITION"), ErrorKind.bad_request),
        (400, error(400, "INVALID_ARGUMENT", "API key not valid.", [{"reason": "API_KEY_INVALID"}]), ErrorKind.auth),
        (
            400,
            error(
                400, "INVALID_ARGUMENT", "The input token count (9) exceeds the maximum number of tokens allowed (8)."
            ),
            ErrorKind.context_length,
        ),
        (403, error(403, "PERMISSION_DENIED"), ErrorKind.auth),
        (404, error(404, "NOT_FOUND"), ErrorKind.not_found),
        (500, error(500, "INTERNAL"), ErrorKind.server),
        (503, error(503, "UNAVAILABLE"), ErrorKind.overloaded),
        (504, error(504, "DEADLINE_EXCEEDED"), ErrorKind.timeout),
        (502, b"<html>bad gateway</html>", ErrorKind.server),
    ],
)
def test_errors(status: int, body: bytes, kind: ErrorKind) -> None:
    err = CODEC.classify(status, body, {})
    assert (err.error_kind, err.upstream_status) == (kind, status)


def test_retry_info_gives_retry_after_and_the_header_wins() -> None:
    details = [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "37s"}]
    assert CODEC.classify(429, error(429, "RESOURCE_EXHAUSTED", details=details), {}).retry_after == 37
    assert CODEC.classify(429, error(429, "RESOURCE_EXHAUSTED", details=details), {"retry-after": "2"}).retry_after == 2


def test_embeddings_use_batch_embed_contents() -> None:
    out = CODEC.encode_embed(EmbeddingRequest("e", ("a", "b"), {"dimensions": 8}), Target("gem", "text-embedding-004"))
    assert out.path == "/models/text-embedding-004:batchEmbedContents"
    one = {"model": "models/text-embedding-004", "content": {"parts": [{"text": "a"}]}, "outputDimensionality": 8}
    assert orjson.loads(out.body)["requests"][0] == one
    reply = CODEC.decode_embed(b'{"embeddings": [{"values": [0.1, 0.2]}, {"values": [0.3, 0.4]}]}')
    assert reply.vectors == ((0.1, 0.2), (0.3, 0.4))


def test_a_thought_signature_rides_in_the_call_id_and_goes_back() -> None:
    signature = "CiQBcsjafE+7/xZ1dK2Qq8Rm0w=="
    body = {
        "candidates": [
            {
                "content": {"parts": [{"functionCall": {"name": "f", "args": {}}, "thoughtSignature": signature}]},
                "finishReason": "STOP",
            }
        ]
    }
    call = next(e for e in CODEC.decode_chat(orjson.dumps(body)) if isinstance(e, ToolCallDelta))
    assert (
        call.id
        and call.id.startswith("call_0_ts_")
        and set(call.id) <= set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")
    )
    request = ask(
        Message("user", "go"),
        Message("assistant", None, tool_calls=(ToolCall(call.id, "f", "{}"),)),
        Message("tool", "done", tool_call_id=call.id),
    )
    part = encode(request)[1]["contents"][1]["parts"][0]
    assert part == {"functionCall": {"name": "f", "args": {}}, "thoughtSignature": signature}


@pytest.mark.parametrize(
    ("model", "effort", "thinking"),
    [
        ("gemini-2.5-flash", "low", {"thinkingBudget": 1024}),
        ("gemini-2.5-flash", "none", {"thinkingBudget": 0}),
        ("gemini-2.5-pro", "high", {"thinkingBudget": 24576}),
        ("gemini-3-pro-preview", "high", {"thinkingLevel": "high"}),
        ("models/gemini-3-flash", "none", {"thinkingLevel": "minimal"}),
    ],
)
def test_reasoning_effort_becomes_a_thinking_config(model: str, effort: str, thinking: Any) -> None:
    out = CODEC.encode_chat(ask(Message("user", "hi"), extra={"reasoning_effort": effort}), Target("gem", model), False)
    assert orjson.loads(out.body)["generationConfig"]["thinkingConfig"] == thinking


def test_an_unknown_reasoning_effort_is_refused() -> None:
    with pytest.raises(InvalidRequest) as info:
        CODEC.encode_chat(ask(Message("user", "hi"), extra={"reasoning_effort": "max"}), TARGET, False)
    assert info.value.param == "reasoning_effort"


# ---- what is carried, dropped (recorded in keel.dropped) or refused: translate.py's policy ------------


def dropped(request: ChatRequest) -> str | None:
    notes = CODEC.encode_chat(request, TARGET, False).notes
    assert all(n.tag == "keel.dropped" for n in notes)
    return notes[0].value if notes else None


def test_fields_gemini_has_no_place_for_are_dropped_and_named_for_the_trace() -> None:
    request = ask(
        Message("user", [{"type": "text", "text": "hi", "cache_control": {"type": "ephemeral"}}], name="ann"),
        Message("assistant", "hello", extra={"reasoning_content": "thought"}),
        Message("user", "again"),
        user="u1",
        metadata={"feature": "x"},
        tools=({**TOOL, "function": {**TOOL["function"], "strict": True}},),
        extra={"store": True, "service_tier": "flex", "parallel_tool_calls": False, "seed": 7, "logprobs": False},
    )
    body = encode(request)[1]
    assert body["generationConfig"] == {"seed": 7}  # carried
    assert "strict" not in body["tools"][0]["functionDeclarations"][0]
    assert dropped(request) == (
        "cache_control, logprobs, messages[].name, messages[].reasoning_content, metadata, parallel_tool_calls, "
        "service_tier, store, tools[].function.strict, user"
    )


def test_a_request_gemini_carries_whole_records_nothing() -> None:
    request = ask(
        Message("system", "brief"),
        Message("user", "hi"),
        temperature=0.2,
        max_tokens=50,
        tools=(TOOL,),
        extra={"top_k": 3, "n": 1, "parallel_tool_calls": True, "reasoning_effort": "low", "max_completion_tokens": 9},
    )
    assert dropped(request) is None


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"logprobs": True}, "logprobs"),
        ({"top_logprobs": 3}, "top_logprobs"),
        ({"audio": {"voice": "alloy", "format": "wav"}}, "audio"),
        ({"modalities": ["text", "audio"]}, "modalities"),
        ({"logit_bias": {"50256": -100}}, "logit_bias"),
        ({"prediction": {"type": "content", "content": "x"}}, "prediction"),
        ({"web_search_options": {"search_context_size": "low"}}, "web_search_options"),
    ],
)
def test_fields_the_caller_would_read_back_are_refused(extra: Any, param: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        CODEC.encode_chat(ask(Message("user", "hi"), extra=extra), TARGET, False)
    assert info.value.param == param
    assert "Gemini" in info.value.message


def test_anthropic_thinking_becomes_a_thinking_config() -> None:
    request = ask(Message("user", "hi"), extra={"thinking": {"type": "enabled", "budget_tokens": 2000}})
    assert encode(request)[1]["generationConfig"]["thinkingConfig"] == {"thinkingBudget": 1024}
    assert dropped(request) is None


def test_an_anthropic_client_is_translated_first() -> None:
    pdf = {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBERi0x"}}
    request = ChatRequest(
        model="alias",
        messages=(
            Message("user", [{"type": "text", "text": "read"}, pdf]),
            Message("assistant", None, tool_calls=(ToolCall("t1", "get_weather", "{}"),), extra={"thinking": "x"}),
            Message("tool", "boom", tool_call_id="t1", extra={"is_error": True}),
        ),
        extra={"top_k": 5, "thinking": {"type": "enabled", "budget_tokens": 20000}, "service_tier": "auto"},
        dialect="anthropic_messages",
        betas=("pdfs-2024-09-25",),
    )
    body = encode(request)[1]
    assert body["generationConfig"] == {"topK": 5, "thinkingConfig": {"thinkingBudget": 24576}}
    assert body["contents"][0]["parts"][1] == {"inlineData": {"mimeType": "application/pdf", "data": "JVBERi0x"}}
    result = body["contents"][2]["parts"][0]["functionResponse"]["response"]["output"]
    assert result == "[tool error] boom"
    assert dropped(request) == "anthropic-beta, messages[].thinking, service_tier"


def test_token_array_embeddings_are_refused_naming_input() -> None:
    with pytest.raises(ProviderError) as info:
        CODEC.encode_embed(EmbeddingRequest("e", (), tokens=((1, 2),)), Target("gem", "text-embedding-004"))
    assert (info.value.error_kind, info.value.param) == (ErrorKind.bad_request, "input")
