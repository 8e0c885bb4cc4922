"""End to end over real HTTP: the official openai SDK → Keel → the fake upstream speaking Gemini's
native API (`generateContent`, `streamGenerateContent?alt=sse`), through a `type: google` provider."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import openai
import pytest

from keel.providers.prices import PriceBook
from keel.testing import FakeUpstream, Script
from keel.testing.fake_cloud import thought_signature
from keel.types import Usage
from tests.conftest import Gateway

KEY = "gm-upstream-SECRET-gemini-key"
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


def config(up: FakeUpstream, b: FakeUpstream, tmp: Path) -> dict[str, Any]:
    return {
        "storage": {"url": f"sqlite:///{tmp}/keel.db"},
        "traces": {"spill_dir": str(tmp / "spill"), "flush_interval_ms": 10},
        "resilience": {"backoff_ms": 10, "retry_after_cap_s": 1, "total_timeout_s": 5},
        "providers": {
            "gem": {"type": "google", "base_url": up.url + "/v1beta", "api_key": KEY},
            "backup": {"type": "openai", "base_url": b.url + "/v1", "api_key": "sk-b"},
        },
        "models": {
            "gemini": {"targets": [{"provider": "gem", "model": "gemini-2.5-flash"}]},
            "gemini-embed": {"targets": [{"provider": "gem", "model": "text-embedding-004"}]},
            "gemini_first": {
                "targets": [
                    {"provider": "gem", "model": "gemini-2.5-flash"},
                    {"provider": "backup", "model": "gpt-4o-mini"},
                ]
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
    return PriceBook.bundled().cost("gemini-2.5-flash", usage)


def test_chat_goes_out_as_generate_content(gw: Gateway, up: FakeUpstream) -> None:
    with client(gw) as c:
        raw = c.chat.completions.with_raw_response.create(model="gemini", messages=ASK, temperature=0.5, max_tokens=50)
    r = raw.parse()
    assert r.choices[0].message.content == "echo: hello there" and r.choices[0].finish_reason == "stop"
    sent = up.requests[-1]
    assert sent["path"] == "/v1beta/models/gemini-2.5-flash:generateContent"
    assert sent["headers"]["x-goog-api-key"] == KEY and "authorization" not in sent["headers"]
    assert sent["json"] == {
        "contents": [{"role": "user", "parts": [{"text": "hello there"}]}],
        "systemInstruction": {"parts": [{"text": "be brief"}]},
        "generationConfig": {"temperature": 0.5, "maxOutputTokens": 50},
    }
    assert r.usage is not None and r.usage.completion_tokens == 3 and r.usage.prompt_tokens > 0
    t = only(gw.traces())
    assert (t.provider, t.model, t.status, t.attempts) == ("gem", "gemini-2.5-flash", "ok", 1)
    assert (t.input_tokens, t.output_tokens) == (r.usage.prompt_tokens, 3)
    assert t.cost_usd == cost(Usage(r.usage.prompt_tokens, 3)) and t.cost_usd


def test_stream_reads_sse_chunks_and_usage(gw: Gateway, up: FakeUpstream) -> None:
    with client(gw) as c:
        stream = c.chat.completions.create(
            model="gemini", messages=ASK, stream=True, stream_options={"include_usage": True}
        )
        chunks = list(stream)
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    finish = [ch.choices[0].finish_reason for ch in chunks if ch.choices and ch.choices[0].finish_reason]
    assert text == "echo: hello there" and finish == ["stop"]
    assert up.requests[-1]["path"] == "/v1beta/models/gemini-2.5-flash:streamGenerateContent"
    usage = chunks[-1].usage
    assert usage is not None and usage.completion_tokens == 3
    t = only(gw.traces())
    assert t.stream and t.status == "ok" and t.ttft_ms is not None
    assert t.output_tokens == 3 and t.cost_usd == cost(Usage(usage.prompt_tokens, 3))


@pytest.mark.parametrize("stream", [False, True])
def test_tool_call_then_the_second_turn_with_its_result(gw: Gateway, up: FakeUpstream, stream: bool) -> None:
    up.script(Script(tool_call=True), Script(text="It is sunny in Paris."))
    ask: list[Any] = [{"role": "user", "content": "weather in Paris?"}]
    with client(gw) as c:
        if stream:
            chunks = [ch for ch in c.chat.completions.create(model="gemini", messages=ask, tools=TOOLS, stream=True)]
            deltas = [d for ch in chunks if ch.choices for d in ch.choices[0].delta.tool_calls or []]
            call_id, name = deltas[0].id, deltas[0].function and deltas[0].function.name
            arguments = "".join((d.function and d.function.arguments) or "" for d in deltas)
            finish = [ch.choices[0].finish_reason for ch in chunks if ch.choices and ch.choices[0].finish_reason]
        else:
            r = c.chat.completions.create(model="gemini", messages=ask, tools=TOOLS, tool_choice="required")
            calls = r.choices[0].message.tool_calls or []
            call_id, name, arguments = calls[0].id, calls[0].function.name, calls[0].function.arguments  # type: ignore[union-attr]
            finish = [r.choices[0].finish_reason]
        assert (name, json.loads(arguments), finish) == ("get_weather", {"city": "Paris"}, ["tool_calls"])
        first = up.requests[-1]["json"]
        declaration = {"name": "get_weather", "description": "Weather in a city"}
        declaration["parametersJsonSchema"] = TOOLS[0]["function"]["parameters"]
        assert first["tools"] == [{"functionDeclarations": [declaration]}]
        if not stream:
            assert first["toolConfig"] == {"functionCallingConfig": {"mode": "ANY"}}
        turn = [
            *ask,
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": call_id, "type": "function", "function": {"name": "get_weather", "arguments": arguments}}
            ]},
            {"role": "tool", "tool_call_id": call_id, "content": '{"sky": "sunny"}'},
        ]  # fmt: skip
        second = c.chat.completions.create(model="gemini", messages=turn, tools=TOOLS)
    assert second.choices[0].message.content == "It is sunny in Paris."
    contents = up.requests[-1]["json"]["contents"]
    call = {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}}
    signed = {**call, "thoughtSignature": thought_signature("get_weather")}  # carried in the call id and back
    assert contents[1] == {"role": "model", "parts": [signed]}
    assert contents[2] == {
        "role": "user",
        "parts": [{"functionResponse": {"name": "get_weather", "response": {"output": {"sky": "sunny"}}}}],
    }


@pytest.mark.parametrize("stream", [False, True])
def test_usage_with_cached_and_thinking_tokens_is_priced(gw: Gateway, up: FakeUpstream, stream: bool) -> None:
    counts = {"prompt_tokens": 1000, "completion_tokens": 30, "cached_tokens": 400, "reasoning_tokens": 20}
    up.script(Script(usage=counts))
    with client(gw) as c:
        if stream:
            options: Any = {"include_usage": True}
            usage = list(c.chat.completions.create(model="gemini", messages=ASK, stream=True, stream_options=options))[
                -1
            ].usage
        else:
            usage = c.chat.completions.create(model="gemini", messages=ASK).usage
    assert usage is not None and (usage.prompt_tokens, usage.completion_tokens) == (1000, 30)
    assert usage.prompt_tokens_details and usage.prompt_tokens_details.cached_tokens == 400
    assert usage.completion_tokens_details and usage.completion_tokens_details.reasoning_tokens == 20
    t = only(gw.traces())
    assert (t.input_tokens, t.cached_input_tokens, t.output_tokens, t.reasoning_tokens) == (1000, 400, 30, 20)
    expected = (600 * 0.3 + 400 * 0.03 + 30 * 2.5) / 1e6  # gemini-2.5-flash: thinking is billed as output
    assert t.cost_usd == pytest.approx(expected) and t.cost_usd == cost(Usage(1000, 30, 400, 0, 20))


@pytest.mark.parametrize("stream", [False, True])
def test_resource_exhausted_is_retried_then_fails_over(
    gw: Gateway, up: FakeUpstream, b: FakeUpstream, stream: bool
) -> None:
    up.script(Script(status=429, retry_after=0.05), Script(status=429, retry_after=30))
    with client(gw) as c:
        raw = c.chat.completions.with_raw_response.create(model="gemini_first", messages=ASK, stream=stream)
        if stream:
            text = "".join(ch.choices[0].delta.content or "" for ch in raw.parse() if ch.choices)
        else:
            text = raw.parse().choices[0].message.content or ""
    assert text == "echo: hello there" and raw.headers["x-keel-provider"] == "backup"
    assert len(up.requests) == 2 and len(b.requests) == 1
    t = only(gw.traces())
    kinds = [(e["outcome"], e.get("kind")) for e in t.attempt_log]
    assert kinds == [("error", "rate_limited"), ("error", "rate_limited"), ("ok", None)]


@pytest.mark.parametrize(
    ("script", "status", "kind"),
    [
        (Script(status=400, error_code="context_length_exceeded"), 400, "context_length"),
        (Script(status=400, error_code="API_KEY_INVALID"), 502, "auth"),
        (Script(status=404), 404, "not_found"),
    ],
    ids=["context-length", "bad-key", "not-found"],
)
def test_errors_are_classified(gw: Gateway, up: FakeUpstream, script: Script, status: int, kind: str) -> None:
    up.script(script)
    with client(gw) as c, pytest.raises(openai.APIStatusError) as info:
        c.chat.completions.create(model="gemini", messages=ASK)
    assert info.value.status_code == status
    t = only(gw.traces())
    assert (t.status, t.error_kind) == ("error", kind)
    assert KEY not in json.dumps(info.value.body) and KEY not in (t.error_message or "")


def test_an_error_inside_the_stream_fails_it(gw: Gateway, up: FakeUpstream) -> None:
    up.script(Script(error_in_200=503, error_after=2))
    with client(gw) as c, pytest.raises(openai.APIError):
        for _ in c.chat.completions.create(model="gemini", messages=ASK, stream=True):
            pass
    assert only(gw.traces()).status in ("error", "partial")


def test_absurd_usage_is_clamped_and_noted(gw: Gateway, up: FakeUpstream) -> None:
    up.script(Script(bad_usage={"candidatesTokenCount": 1e30}))
    with client(gw) as c:
        c.chat.completions.create(model="gemini", messages=ASK)
    t = only(gw.traces())
    assert t.tags["keel.usage"].startswith("clamped: candidatesTokenCount=") and t.output_tokens < 1e30


def test_embeddings_go_out_as_batch_embed_contents(gw: Gateway, up: FakeUpstream) -> None:
    with client(gw) as c:
        r = c.embeddings.create(model="gemini-embed", input=["first text", "second text"], dimensions=8)
    assert [len(d.embedding) for d in r.data] == [8, 8] and r.data[0].embedding != r.data[1].embedding
    sent = up.requests[-1]
    assert sent["path"] == "/v1beta/models/text-embedding-004:batchEmbedContents"
    one = {
        "model": "models/text-embedding-004",
        "content": {"parts": [{"text": "first text"}]},
        "outputDimensionality": 8,
    }
    assert sent["json"]["requests"][0] == one and len(sent["json"]["requests"]) == 2
    assert only(gw.traces()).status == "ok"


def test_anthropic_clients_reach_it_too(gw: Gateway, up: FakeUpstream) -> None:
    import anthropic

    with (
        anthropic.Anthropic(base_url=gw.url, api_key=gw.key, max_retries=0, timeout=10) as c,
        c.messages.stream(
            model="gemini", max_tokens=50, system="be brief", messages=[{"role": "user", "content": "hello there"}]
        ) as s,
    ):
        text = "".join(s.text_stream)
        final = s.get_final_message()
    assert text == "echo: hello there" and final.stop_reason == "end_turn" and final.usage.output_tokens == 3


def test_dropped_fields_are_named_in_the_trace_and_logprobs_is_refused(gw: Gateway, up: FakeUpstream) -> None:
    with client(gw) as c:
        c.chat.completions.create(model="gemini", messages=ASK, user="ann", seed=7, store=True, service_tier="flex")
        with pytest.raises(openai.BadRequestError) as info:
            c.chat.completions.create(model="gemini", messages=ASK, logprobs=True)
    assert "logprobs" in str(info.value) and len(up.requests) == 1  # refused before anything was sent
    sent = up.requests[-1]["json"]
    assert sent["generationConfig"] == {"seed": 7} and "ann" not in json.dumps(sent)
    ok = next(t for t in gw.traces() if t.status == "ok")
    assert ok.tags["keel.dropped"] == "service_tier, store, user"
