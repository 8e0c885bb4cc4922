"""End to end over real HTTP: the official openai SDK → Keel → the fake upstream speaking Amazon
Bedrock's Converse API (`converse`, `converse-stream` in AWS event-stream framing). The fake
recomputes each request's SigV4 signature: a wrong one is a 403, as AWS answers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import openai
import pytest

from keel.providers.prices import PriceBook
from keel.testing import FakeUpstream, Script
from keel.testing.fake_cloud import AWS_KEYS, BEDROCK_API_KEY
from keel.types import Usage
from tests.conftest import Gateway

MODEL = "anthropic.claude-3-5-haiku-20241022-v1:0"
KEY_ID, SECRET = next(iter(AWS_KEYS.items()))
TOOLS: list[Any] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather in a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        },
    }
]
ASK: Any = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello there"}]


def bedrock(up: FakeUpstream, **keys: str) -> dict[str, Any]:
    return {"type": "bedrock", "base_url": up.url, "aws_region": "us-east-1", **keys}


def config(up: FakeUpstream, b: FakeUpstream, tmp: Path) -> dict[str, Any]:
    signed = {"aws_access_key_id": KEY_ID, "aws_secret_access_key": SECRET}
    return {
        "storage": {"url": f"sqlite:///{tmp}/keel.db"},
        "traces": {"spill_dir": str(tmp / "spill"), "flush_interval_ms": 10},
        "resilience": {"backoff_ms": 10, "retry_after_cap_s": 1, "total_timeout_s": 5},
        "providers": {
            "aws": bedrock(up, **signed),
            "aws_key": bedrock(up, api_key=BEDROCK_API_KEY),
            "aws_wrong": bedrock(up, aws_access_key_id=KEY_ID, aws_secret_access_key="not-the-secret"),
            "backup": {"type": "openai", "base_url": b.url + "/v1", "api_key": "sk-b"},
        },
        "models": {
            "haiku": {"targets": [{"provider": "aws", "model": MODEL}]},
            "haiku_key": {"targets": [{"provider": "aws_key", "model": MODEL}]},
            "haiku_wrong": {"targets": [{"provider": "aws_wrong", "model": MODEL}]},
            "haiku_first": {
                "targets": [{"provider": "aws", "model": MODEL}, {"provider": "backup", "model": "gpt-4o-mini"}]
            },
        },
    }


@pytest.fixture
def gw(make_gateway: Any, up: FakeUpstream, b: FakeUpstream, tmp_path: Path) -> Gateway:
    return make_gateway(config(up, b, tmp_path))  # type: ignore[no-any-return]


def client(gw: Gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.base_url, api_key=gw.key, max_retries=0, timeout=10)


def only(rows: list[Any]) -> Any:
    assert len(rows) == 1, rows
    return rows[0]


def cost(usage: Usage) -> float | None:
    return PriceBook.bundled().cost(MODEL, usage)


def text_of(chunks: list[Any]) -> str:
    return "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)


def test_chat_goes_out_as_a_signed_converse_call(gw: Gateway, up: FakeUpstream) -> None:
    with client(gw) as c:
        raw = c.chat.completions.with_raw_response.create(
            model="haiku", messages=ASK, temperature=0.5, max_tokens=50, stop=["END"]
        )
    r = raw.parse()
    assert r.choices[0].message.content == "echo: hello there" and r.choices[0].finish_reason == "stop"
    sent = up.requests[-1]
    assert sent["path"] == f"/model/{MODEL}/converse"
    auth = sent["headers"]["authorization"]
    assert auth.startswith(f"AWS4-HMAC-SHA256 Credential={KEY_ID}/") and "/us-east-1/bedrock/aws4_request" in auth
    assert SECRET not in json.dumps(sent["headers"])
    assert sent["json"] == {
        "messages": [{"role": "user", "content": [{"text": "hello there"}]}],
        "system": [{"text": "be brief"}],
        "inferenceConfig": {"maxTokens": 50, "temperature": 0.5, "stopSequences": ["END"]},
    }
    assert r.usage is not None and r.usage.completion_tokens == 3
    t = only(gw.traces())
    assert (t.provider, t.model, t.status) == ("aws", MODEL, "ok")
    assert t.cost_usd and t.cost_usd == cost(Usage(r.usage.prompt_tokens, 3))


def test_stream_decodes_the_event_stream(gw: Gateway, up: FakeUpstream) -> None:
    with client(gw) as c:
        chunks = list(
            c.chat.completions.create(model="haiku", messages=ASK, stream=True, stream_options={"include_usage": True})
        )
    assert text_of(chunks) == "echo: hello there"
    assert [ch.choices[0].finish_reason for ch in chunks if ch.choices and ch.choices[0].finish_reason] == ["stop"]
    assert up.requests[-1]["path"] == f"/model/{MODEL}/converse-stream"
    usage = chunks[-1].usage
    assert usage is not None and usage.completion_tokens == 3
    t = only(gw.traces())
    assert t.stream and t.status == "ok" and t.ttft_ms is not None and t.output_tokens == 3
    assert t.cost_usd == cost(Usage(usage.prompt_tokens, 3))


@pytest.mark.parametrize("stream", [False, True])
def test_tool_use_then_the_second_turn_with_its_result(gw: Gateway, up: FakeUpstream, stream: bool) -> None:
    up.script(Script(tool_call=True), Script(text="It is sunny in Paris."))
    ask: list[Any] = [{"role": "user", "content": "weather in Paris?"}]
    with client(gw) as c:
        if stream:
            chunks = list(c.chat.completions.create(model="haiku", messages=ask, tools=TOOLS, stream=True))
            deltas = [d for ch in chunks if ch.choices for d in ch.choices[0].delta.tool_calls or []]
            call_id, name = deltas[0].id, deltas[0].function and deltas[0].function.name
            arguments = "".join((d.function and d.function.arguments) or "" for d in deltas)
            finish = [ch.choices[0].finish_reason for ch in chunks if ch.choices and ch.choices[0].finish_reason]
        else:
            choice: Any = {"type": "function", "function": {"name": "get_weather"}}
            r = c.chat.completions.create(model="haiku", messages=ask, tools=TOOLS, tool_choice=choice)
            call = (r.choices[0].message.tool_calls or [])[0]
            call_id, name, arguments = call.id, call.function.name, call.function.arguments  # type: ignore[union-attr]
            finish = [r.choices[0].finish_reason]
        assert (name, json.loads(arguments), finish) == ("get_weather", {"city": "Paris"}, ["tool_calls"])
        tool_config = up.requests[-1]["json"]["toolConfig"]
        spec = {"name": "get_weather", "description": "Weather in a city"}
        assert tool_config["tools"] == [
            {"toolSpec": {**spec, "inputSchema": {"json": TOOLS[0]["function"]["parameters"]}}}
        ]
        if not stream:
            assert tool_config["toolChoice"] == {"tool": {"name": "get_weather"}}
        turn = [
            *ask,
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": call_id, "type": "function", "function": {"name": "get_weather", "arguments": arguments}}
            ]},
            {"role": "tool", "tool_call_id": call_id, "content": "sunny"},
        ]  # fmt: skip
        second = c.chat.completions.create(model="haiku", messages=turn, tools=TOOLS)
    assert second.choices[0].message.content == "It is sunny in Paris."
    messages = up.requests[-1]["json"]["messages"]
    use = {"toolUseId": call_id, "name": "get_weather", "input": {"city": "Paris"}}
    assert messages[1:] == [
        {"role": "assistant", "content": [{"toolUse": use}]},
        {"role": "user", "content": [{"toolResult": {"toolUseId": call_id, "content": [{"text": "sunny"}]}}]},
    ]


@pytest.mark.parametrize("stream", [False, True])
def test_usage_with_cache_tokens_is_priced(gw: Gateway, up: FakeUpstream, stream: bool) -> None:
    counts = {"prompt_tokens": 1000, "completion_tokens": 30, "cached_tokens": 400, "cache_creation_tokens": 100}
    up.script(Script(usage=counts))
    with client(gw) as c:
        if stream:
            options: Any = {"include_usage": True}
            usage = list(c.chat.completions.create(model="haiku", messages=ASK, stream=True, stream_options=options))[
                -1
            ].usage
        else:
            usage = c.chat.completions.create(model="haiku", messages=ASK).usage
    assert usage is not None and (usage.prompt_tokens, usage.completion_tokens) == (1000, 30)
    assert usage.prompt_tokens_details and usage.prompt_tokens_details.cached_tokens == 400
    t = only(gw.traces())
    assert (t.input_tokens, t.cached_input_tokens, t.cache_write_tokens, t.output_tokens) == (1000, 400, 100, 30)
    expected = (500 * 0.8 + 400 * 0.08 + 100 * 1.0 + 30 * 4.0) / 1e6
    assert t.cost_usd == pytest.approx(expected)


def test_a_bedrock_api_key_is_sent_as_a_bearer_token(gw: Gateway, up: FakeUpstream) -> None:
    with client(gw) as c:
        r = c.chat.completions.create(model="haiku_key", messages=ASK)
    assert r.choices[0].message.content == "echo: hello there"
    headers = up.requests[-1]["headers"]
    assert headers["authorization"] == f"Bearer {BEDROCK_API_KEY}" and "x-amz-date" not in headers


def test_a_wrong_signature_is_refused_by_the_upstream_and_never_retried(gw: Gateway, up: FakeUpstream) -> None:
    with client(gw) as c, pytest.raises(openai.APIStatusError) as info:
        c.chat.completions.create(model="haiku_wrong", messages=ASK)
    assert info.value.status_code == 502  # Keel's own credentials are wrong: not the caller's fault
    assert "providers.aws_wrong.aws_access_key_id" in str(info.value.body)
    assert "not-the-secret" not in str(info.value.body)
    assert len(up.requests) == 1
    t = only(gw.traces())
    assert (t.status, t.error_kind) == ("error", "auth")


@pytest.mark.parametrize("stream", [False, True])
def test_throttling_is_retried_then_fails_over(gw: Gateway, up: FakeUpstream, b: FakeUpstream, stream: bool) -> None:
    up.script(Script(status=429, retry_after=0.05), Script(status=429, retry_after=30))
    with client(gw) as c:
        raw = c.chat.completions.with_raw_response.create(model="haiku_first", messages=ASK, stream=stream)
        text = text_of(list(raw.parse())) if stream else raw.parse().choices[0].message.content
    assert text == "echo: hello there" and raw.headers["x-keel-provider"] == "backup"
    assert len(up.requests) == 2 and len(b.requests) == 1
    kinds = [(e["outcome"], e.get("kind")) for e in only(gw.traces()).attempt_log]
    assert kinds == [("error", "rate_limited"), ("error", "rate_limited"), ("ok", None)]


@pytest.mark.parametrize(
    ("script", "status", "kind"),
    [
        (Script(status=400, error_code="context_length_exceeded"), 400, "context_length"),
        (Script(status=400), 400, "bad_request"),
        (Script(status=429, error_code="ModelNotReadyException"), 503, "overloaded"),
        (Script(status=503), 503, "overloaded"),
    ],
    ids=["context-length", "validation", "model-not-ready", "unavailable"],
)
def test_errors_are_classified_by_their_exception_name(
    gw: Gateway, up: FakeUpstream, script: Script, status: int, kind: str
) -> None:
    up.script(script, script, script)
    with client(gw) as c, pytest.raises(openai.APIStatusError) as info:
        c.chat.completions.create(model="haiku", messages=ASK)
    assert info.value.status_code == status
    t = only(gw.traces())
    assert t.status == "error" and {e.get("kind") for e in t.attempt_log} == {kind}


def test_a_throttling_exception_inside_the_stream_fails_it(gw: Gateway, up: FakeUpstream) -> None:
    up.script(Script(error_in_200=429, error_after=2))
    with client(gw) as c, pytest.raises(openai.APIError):
        for _ in c.chat.completions.create(model="haiku", messages=ASK, stream=True):
            pass
    assert only(gw.traces()).attempt_log[0]["kind"] == "rate_limited"


def test_a_stream_cut_mid_message_is_an_error(gw: Gateway, up: FakeUpstream) -> None:
    up.script(Script(cut_after=2))
    with client(gw) as c, pytest.raises(openai.APIError):
        for _ in c.chat.completions.create(model="haiku", messages=ASK, stream=True):
            pass
    assert only(gw.traces()).status in ("error", "partial")


def test_one_malformed_event_is_skipped_and_noted(gw: Gateway, up: FakeUpstream) -> None:
    up.script(Script(malformed_at=1))  # a well-framed message (CRCs right) whose JSON is broken
    with client(gw) as c:
        text = text_of(list(c.chat.completions.create(model="haiku", messages=ASK, stream=True)))
    assert text == "echo: there"
    t = only(gw.traces())
    assert (t.status, t.tags["keel.malformed_events"]) == ("ok", "1")


def test_absurd_usage_is_clamped_and_noted(gw: Gateway, up: FakeUpstream) -> None:
    up.script(Script(bad_usage={"outputTokens": -5}))
    with client(gw) as c:
        c.chat.completions.create(model="haiku", messages=ASK)
    t = only(gw.traces())
    assert t.output_tokens == 0 and t.tags["keel.usage"] == "clamped: outputTokens=-5"


def test_anthropic_clients_reach_it_too(gw: Gateway, up: FakeUpstream) -> None:
    import anthropic

    with (
        anthropic.Anthropic(base_url=gw.url, api_key=gw.key, max_retries=0, timeout=10) as c,
        c.messages.stream(
            model="haiku", max_tokens=50, system="be brief", messages=[{"role": "user", "content": "hello there"}]
        ) as s,
    ):
        text = "".join(s.text_stream)
        final = s.get_final_message()
    assert text == "echo: hello there" and final.stop_reason == "end_turn" and final.usage.output_tokens == 3


def test_dropped_fields_are_named_in_the_trace_and_logprobs_is_refused(gw: Gateway, up: FakeUpstream) -> None:
    with client(gw) as c:
        c.chat.completions.create(model="haiku", messages=ASK, seed=7, presence_penalty=0.5, reasoning_effort="low")
        with pytest.raises(openai.BadRequestError) as info:
            c.chat.completions.create(model="haiku", messages=ASK, logprobs=True)
    assert "logprobs" in str(info.value) and len(up.requests) == 1  # refused before anything was sent
    assert set(up.requests[-1]["json"]) == {"messages", "system"}
    ok = next(t for t in gw.traces() if t.status == "ok")
    assert ok.tags["keel.dropped"] == "presence_penalty, reasoning_effort, seed"
