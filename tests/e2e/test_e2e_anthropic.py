"""End to end over real HTTP: the official anthropic SDK → Keel's /v1/messages → the fake upstream.

Every test runs on SQLite and PostgreSQL (the `gateway` fixture); most run against both an
OpenAI-compatible alias and an Anthropic alias, since the edge must route to any provider.
"""

from __future__ import annotations

from typing import Any

import anthropic
import httpx
import pytest

from keel.testing import FakeUpstream, Script
from tests.conftest import Gateway

ALIASES = ["gpt-4o-mini", "claude"]
SERVED = {"gpt-4o-mini": "gpt-4o-mini", "claude": "claude-sonnet-4-5"}  # `model` names the model that answered
WEATHER: Any = {
    "name": "get_weather",
    "description": "Weather in a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
USER: Any = [{"role": "user", "content": "hello there"}]


def client(gw: Gateway, key: str | None = None) -> anthropic.Anthropic:
    # The SDK appends /v1/messages itself: its base_url is the bare origin.
    return anthropic.Anthropic(base_url=gw.url, api_key=key or gw.key, max_retries=0, timeout=10)


def post(gw: Gateway, body: Any, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.post(gw.url + "/v1/messages", json=body, headers=headers or {"x-api-key": gw.key})


def only(rows: list[Any]) -> Any:
    assert len(rows) == 1, rows
    return rows[0]


def system_sent(up: FakeUpstream, alias: str) -> Any:
    sent = up.requests[-1]["json"]
    return sent["system"] if alias == "claude" else sent["messages"][0]


# ---- the plain path, both modes, both upstream formats ---------------------------------------


@pytest.mark.parametrize("alias", ALIASES)
def test_messages_non_streaming(gateway: Gateway, up: FakeUpstream, alias: str) -> None:
    with client(gateway) as c:
        raw = c.messages.with_raw_response.create(model=alias, max_tokens=100, system="be brief", messages=USER)
    m = raw.parse()
    assert m.content[0].type == "text" and m.content[0].text == "echo: hello there"
    assert (m.type, m.role, m.model, m.stop_reason) == ("message", "assistant", SERVED[alias], "end_turn")
    assert m.id.startswith("msg_") and m.usage.output_tokens == 3 and m.usage.input_tokens > 0
    assert raw.headers["x-keel-provider"] == ("ant" if alias == "claude" else "oai")
    assert float(raw.headers["x-keel-overhead-ms"]) >= 0
    if alias == "claude":
        assert system_sent(up, alias) == "be brief"
    else:
        assert system_sent(up, alias) == {"role": "system", "content": "be brief"}
    assert up.requests[-1]["json"]["max_tokens"] == 100
    t = only(gateway.traces())
    assert t.id == raw.headers["x-keel-trace-id"]
    assert (t.endpoint, t.tenant, t.status, t.alias, t.stream) == ("messages", "t1", "ok", alias, False)
    assert t.request["system"] == "be brief"
    assert t.output_tokens == 3 and t.input_tokens and t.cost_usd is not None and t.cost_usd > 0


@pytest.mark.parametrize("alias", ALIASES)
def test_messages_streaming(gateway: Gateway, up: FakeUpstream, alias: str) -> None:
    with client(gateway) as c, c.messages.stream(model=alias, max_tokens=100, system="be brief", messages=USER) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    assert text == "echo: hello there"
    assert final.content[0].type == "text" and final.content[0].text == text
    assert (final.model, final.stop_reason, final.usage.output_tokens) == (SERVED[alias], "end_turn", 3)
    assert final.usage.input_tokens > 0  # known only at the end, sent in message_delta
    assert system_sent(up, alias) in ("be brief", {"role": "system", "content": "be brief"})
    t = only(gateway.traces())
    assert t.stream and t.status == "ok" and t.output_tokens == 3 and t.ttft_ms is not None and t.cost_usd


def test_raw_stream_is_well_formed_sse(gateway: Gateway, up: FakeUpstream) -> None:
    body = {"model": "gpt-4o-mini", "max_tokens": 50, "stream": True, "messages": USER}
    with httpx.stream("POST", gateway.url + "/v1/messages", json=body, headers={"x-api-key": gateway.key}) as r:
        raw = r.read().decode()
        assert r.headers["content-type"].startswith("text/event-stream") and r.headers["x-keel-trace-id"]
    events = [frame.split("\n")[0].removeprefix("event: ") for frame in raw.strip().split("\n\n")]
    assert events[0] == "message_start" and events[1] == "content_block_start"
    assert events[-4:] == ["content_block_delta", "content_block_stop", "message_delta", "message_stop"]


# ---- tools -----------------------------------------------------------------------------------


@pytest.mark.parametrize("alias", ALIASES)
@pytest.mark.parametrize("stream", [False, True])
def test_tool_use_is_returned(gateway: Gateway, up: FakeUpstream, alias: str, stream: bool) -> None:
    up.script(Script(tool_call=True))
    args: Any = {"model": alias, "max_tokens": 100, "messages": [{"role": "user", "content": "weather?"}]}
    m: anthropic.types.Message
    with client(gateway) as c:
        if stream:
            with c.messages.stream(**args, tools=[WEATHER]) as s:
                m = s.get_final_message()
        else:
            m = c.messages.create(**args, tools=[WEATHER])
    block = m.content[-1]
    assert block.type == "tool_use" and block.name == "get_weather" and block.id
    assert block.input == {"city": "Paris"}
    assert m.stop_reason == "tool_use"
    sent = up.requests[-1]["json"]
    if alias == "claude":
        assert sent["tools"] == [WEATHER]
    else:
        function = {"name": "get_weather", "description": "Weather in a city", "parameters": WEATHER["input_schema"]}
        assert sent["tools"] == [{"type": "function", "function": function}]


def tool_conversation() -> Any:
    return [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": [
            {"type": "text", "text": "Let me check."},
            {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"},
            {"type": "text", "text": "and tomorrow?"}]},
    ]  # fmt: skip


def test_tool_result_round_trip_to_openai(gateway: Gateway, up: FakeUpstream) -> None:
    with client(gateway) as c:
        m = c.messages.create(model="gpt-4o-mini", max_tokens=100, messages=tool_conversation(), tools=[WEATHER])
    assert m.content[0].type == "text" and m.content[0].text == "echo: and tomorrow?"
    sent = up.requests[-1]["json"]["messages"]
    call = {"id": "toolu_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}
    assert sent[1:] == [
        {"role": "assistant", "content": "Let me check.", "tool_calls": [call]},
        {"role": "tool", "content": "sunny", "tool_call_id": "toolu_1"},
        {"role": "user", "content": "and tomorrow?"},
    ]


def test_tool_result_round_trip_to_anthropic(gateway: Gateway, up: FakeUpstream) -> None:
    with client(gateway) as c:
        c.messages.create(model="claude", max_tokens=100, messages=tool_conversation(), tools=[WEATHER])
    sent = up.requests[-1]["json"]["messages"]
    tool_use = {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}
    assert sent[1]["content"][1] == tool_use
    assert sent[2]["role"] == "user"
    assert sent[2]["content"][0] == {"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"}
    assert sent[2]["content"][1] == {"type": "text", "text": "and tomorrow?"}


def test_tool_choice_and_sampling_parameters_are_mapped(gateway: Gateway, up: FakeUpstream) -> None:
    with client(gateway) as c:
        c.messages.create(
            model="gpt-4o-mini",
            max_tokens=64,
            messages=USER,
            tools=[WEATHER],
            tool_choice={"type": "any", "disable_parallel_tool_use": True},
            stop_sequences=["END"],
            metadata={"user_id": "end-user-7"},
            extra_body={"temperature": 0.5, "top_p": 0.9, "top_k": 40},  # no longer typed in the SDK
        )
        pick: Any = {"type": "tool", "name": "get_weather"}
        c.messages.create(model="claude", max_tokens=64, messages=USER, tools=[WEATHER], tool_choice=pick)
    openai_body, anthropic_body = (r["json"] for r in up.requests[-2:])
    assert openai_body["tool_choice"] == "required" and openai_body["parallel_tool_calls"] is False
    assert (openai_body["temperature"], openai_body["top_p"]) == (0.5, 0.9)
    assert "top_k" not in openai_body  # OpenAI takes no top_k: dropped, and the trace says so
    assert openai_body["stop"] == ["END"] and openai_body["user"] == "end-user-7"
    assert anthropic_body["tool_choice"] == {"type": "tool", "name": "get_weather"}
    traces = gateway.traces()
    assert [t.user for t in traces].count("end-user-7") == 1
    assert next(t for t in traces if t.user == "end-user-7").tags["keel.dropped"] == "top_k"


def test_cache_control_and_images_survive(gateway: Gateway, up: FakeUpstream) -> None:
    cached: Any = {"type": "ephemeral"}
    system: Any = [{"type": "text", "text": "a long policy", "cache_control": cached}]
    image: Any = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}
    messages: Any = [{"role": "user", "content": [image, {"type": "text", "text": "what is this?"}]}]
    with client(gateway) as c:
        c.messages.create(model="claude", max_tokens=64, system=system, messages=messages)
        c.messages.create(model="gpt-4o-mini", max_tokens=64, system=system, messages=messages)
    to_anthropic, to_openai = (r["json"] for r in up.requests[-2:])
    assert to_anthropic["system"] == system
    assert to_anthropic["messages"][0]["content"][0] == image
    system_part = {"type": "text", "text": "a long policy", "cache_control": cached}
    assert to_openai["messages"][0] == {"role": "system", "content": [system_part]}
    image_part = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
    assert to_openai["messages"][1]["content"][0] == image_part


# ---- errors ----------------------------------------------------------------------------------


def test_bad_key_is_an_authentication_error(gateway: Gateway) -> None:
    with client(gateway, "sk-keel-not-a-key") as c, pytest.raises(anthropic.AuthenticationError) as info:
        c.messages.create(model="sim", max_tokens=10, messages=USER)
    assert isinstance(info.value.body, dict) and info.value.body["error"]["type"] == "authentication_error"


def test_bearer_authorization_is_accepted_too(gateway: Gateway) -> None:
    body = {"model": "sim", "max_tokens": 10, "messages": USER}
    r = post(gateway, body, {"authorization": f"Bearer {gateway.key}"})
    assert r.status_code == 200 and r.json()["type"] == "message"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "sim", "messages": USER}, "max_tokens"),
        ({"max_tokens": 5, "messages": USER}, "model"),
        ({"model": "sim", "max_tokens": 0, "messages": USER}, "max_tokens"),
        ({"model": "sim", "max_tokens": 5, "messages": []}, "messages"),
        ({"model": "sim", "max_tokens": 5, "messages": [{"role": "system", "content": "x"}]}, "messages.0.role"),
        ({"model": "sim", "max_tokens": 5, "messages": [{"role": "user", "content": 7}]}, "messages.0.content"),
        ({"model": "sim", "max_tokens": 5, "messages": [{"role": "user", "content": [{"type": "audio"}]}]}, "messages.0.content.0.type"),
        ({"model": "sim", "max_tokens": 5, "messages": USER, "temperature": 3}, "temperature"),
        ({"model": "sim", "max_tokens": 5, "messages": USER, "tools": [{"name": "x"}]}, "tools.0.input_schema"),
        ({"model": "sim", "max_tokens": 5, "messages": USER, "system": [{"type": "image"}]}, "system.0.type"),
    ],
)  # fmt: skip
def test_malformed_body_is_400_naming_the_field(gateway: Gateway, body: dict[str, Any], param: str) -> None:
    r = post(gateway, body)
    assert r.status_code == 400
    assert r.json()["type"] == "error"
    err = r.json()["error"]
    assert err["type"] == "invalid_request_error" and param in err["message"]


def test_invalid_json_is_400(gateway: Gateway) -> None:
    r = httpx.post(gateway.url + "/v1/messages", content=b"{nope", headers={"x-api-key": gateway.key})
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"


def test_unknown_alias_is_not_found(gateway: Gateway) -> None:
    with client(gateway) as c, pytest.raises(anthropic.NotFoundError) as info:
        c.messages.create(model="claude-9", max_tokens=10, messages=USER)
    assert isinstance(info.value.body, dict) and info.value.body["error"]["type"] == "not_found_error"
    assert "claude" in info.value.message


@pytest.mark.parametrize("stream", [False, True])
def test_upstream_500_is_an_anthropic_error_not_a_traceback(gateway: Gateway, up: FakeUpstream, stream: bool) -> None:
    up.script(Script(status=500), Script(status=500))  # the one retry of a 5xx fails too
    with client(gateway) as c, pytest.raises(anthropic.APIStatusError) as info:
        if stream:
            with c.messages.stream(model="claude", max_tokens=10, messages=USER) as s:
                s.get_final_message()
        else:
            c.messages.create(model="claude", max_tokens=10, messages=USER)
    err = info.value
    assert err.status_code == 502
    assert isinstance(err.body, dict) and err.body["type"] == "error" and err.body["error"]["type"] == "api_error"
    assert "Traceback" not in str(err.body)
    t = only(gateway.traces())
    assert (t.status, t.error_kind, t.http_status, t.endpoint) == ("error", "server", 502, "messages")


def test_rate_limit_status_and_retry_after_are_passed_on(gateway: Gateway, up: FakeUpstream) -> None:
    up.script(Script(status=429, retry_after=7))
    r = post(gateway, {"model": "gpt-4o-mini", "max_tokens": 10, "messages": USER})
    assert r.status_code == 429 and r.headers["retry-after"] == "7"
    assert r.json()["error"]["type"] == "rate_limit_error"


@pytest.mark.parametrize("alias", ALIASES)
def test_stream_cut_mid_answer_raises_never_a_clean_message(gateway: Gateway, up: FakeUpstream, alias: str) -> None:
    up.script(Script(text="one two three four five six", cut_after=2))
    seen: list[str] = []
    with (
        client(gateway) as c,
        pytest.raises(anthropic.APIStatusError) as info,
        c.messages.stream(model=alias, max_tokens=50, messages=USER) as s,
    ):
        seen.extend(s.text_stream)
        s.get_final_message()
    assert seen and "six" not in "".join(seen)
    assert isinstance(info.value.body, dict) and info.value.body["type"] == "error"
    t = only(gateway.traces())
    assert t.status == "partial" and t.error_kind in ("network", "protocol")


# ---- usage and cost --------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
def test_anthropic_cache_tokens_map_back(gateway: Gateway, up: FakeUpstream, stream: bool) -> None:
    # 100 uncached + 1000 read from cache + 2000 written to it = 3100 prompt tokens in Keel's convention.
    usage = {"prompt_tokens": 3100, "cached_tokens": 1000, "cache_creation_tokens": 2000, "completion_tokens": 50}
    up.script(Script(usage=usage))
    m: anthropic.types.Message
    with client(gateway) as c:
        if stream:
            with c.messages.stream(model="claude", max_tokens=100, messages=USER) as s:
                m = s.get_final_message()
        else:
            m = c.messages.create(model="claude", max_tokens=100, messages=USER)
    u = m.usage
    assert (u.input_tokens, u.cache_read_input_tokens, u.cache_creation_input_tokens) == (100, 1000, 2000)
    assert u.output_tokens == 50
    t = only(gateway.traces())
    assert (t.input_tokens, t.cached_input_tokens, t.cache_write_tokens, t.output_tokens) == (3100, 1000, 2000, 50)
    # claude-sonnet-4-5: input 3.00, cache read 0.30, cache write 3.75, output 15.00 per million
    assert t.cost_usd == pytest.approx((100 * 3.00 + 1000 * 0.30 + 2000 * 3.75 + 50 * 15.00) / 1e6)


def test_openai_cached_tokens_map_to_cache_reads(gateway: Gateway, up: FakeUpstream) -> None:
    up.script(Script(usage={"prompt_tokens": 1000, "cached_tokens": 400, "completion_tokens": 5}))
    with client(gateway) as c:
        m = c.messages.create(model="gpt-4o-mini", max_tokens=100, messages=USER)
    assert (m.usage.input_tokens, m.usage.cache_read_input_tokens, m.usage.output_tokens) == (600, 400, 5)
    assert only(gateway.traces()).input_tokens == 1000
