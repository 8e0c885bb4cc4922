"""End to end over real HTTP: the official openai SDK → Keel → the fake upstream, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import openai
import pytest

from keel.testing import FakeUpstream, Script
from tests.conftest import Gateway

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


def client(gw: Gateway, key: str | None = None) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.base_url, api_key=key or gw.key, max_retries=0, timeout=10)


def only(rows: list[Any]) -> Any:
    assert len(rows) == 1, rows
    return rows[0]


def test_chat_non_streaming(gateway: Gateway, up: FakeUpstream) -> None:
    with client(gateway) as c:
        raw = c.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hello there"}]
        )
    r = raw.parse()
    assert r.choices[0].message.content == "echo: hello there"
    assert r.model == "gpt-4o-mini"
    assert r.usage is not None and r.usage.completion_tokens == 3
    assert raw.headers["x-keel-provider"] == "oai"
    assert raw.headers["x-keel-model"] == "gpt-4o-mini"
    assert float(raw.headers["x-keel-overhead-ms"]) >= 0
    t = only(gateway.traces())
    assert t.id == raw.headers["x-keel-trace-id"]
    assert (t.tenant, t.status, t.provider, t.alias) == ("t1", "ok", "oai", "gpt-4o-mini")
    assert t.response["content"] == "echo: hello there"
    assert t.request["messages"] == [{"role": "user", "content": "hello there"}]
    assert t.output_tokens == 3 and t.latency_ms is not None and t.attempts == 1


def test_chat_streaming_with_usage(gateway: Gateway, up: FakeUpstream) -> None:
    with client(gateway) as c:
        stream = c.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "stream me please"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = list(stream)
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text == "echo: stream me please"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 4
    finishes = [ch.choices[0].finish_reason for ch in chunks if ch.choices and ch.choices[0].finish_reason]
    assert finishes == ["stop"]
    t = only(gateway.traces())
    assert t.stream and t.status == "ok" and t.output_tokens == 4 and t.ttft_ms is not None


def test_streaming_without_include_usage_sends_no_usage_chunk(gateway: Gateway, up: FakeUpstream) -> None:
    with client(gateway) as c:
        chunks = list(
            c.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}], stream=True)
        )
    assert all(ch.usage is None for ch in chunks)
    # ...but Keel still asked the upstream for usage, so the call is billed.
    assert up.requests[-1]["json"]["stream_options"] == {"include_usage": True}
    assert only(gateway.traces()).output_tokens == 2


@pytest.mark.parametrize("alias", ["gpt-4o-mini", "claude"])
@pytest.mark.parametrize("stream", [False, True])
def test_tool_calls_through_both_codecs(gateway: Gateway, up: FakeUpstream, alias: str, stream: bool) -> None:
    up.script(Script(tool_call=True))
    with client(gateway) as c:
        args: dict[str, Any] = {"model": alias, "messages": [{"role": "user", "content": "weather?"}], "tools": TOOLS}
        if stream:
            chunks = list(c.chat.completions.create(**args, stream=True))
            calls: dict[int, dict[str, str]] = {}
            for ch in chunks:
                for tc in (ch.choices[0].delta.tool_calls or []) if ch.choices else []:
                    slot = calls.setdefault(tc.index, {"id": "", "name": "", "arguments": ""})
                    slot["id"] = tc.id or slot["id"]
                    slot["name"] = (tc.function.name if tc.function else None) or slot["name"]
                    slot["arguments"] += (tc.function.arguments if tc.function else None) or ""
            finish = [ch.choices[0].finish_reason for ch in chunks if ch.choices and ch.choices[0].finish_reason]
            call = calls[0]
        else:
            r = c.chat.completions.create(**args)
            tc = r.choices[0].message.tool_calls[0]  # type: ignore[index]
            call = {"id": tc.id, "name": tc.function.name, "arguments": tc.function.arguments}  # type: ignore[union-attr]
            finish = [r.choices[0].finish_reason]
    assert call["name"] == "get_weather" and call["id"]
    assert json.loads(call["arguments"]) == {"city": "Paris"}
    assert finish == ["tool_calls"]
    sent = up.requests[-1]["json"]
    if alias == "claude":
        assert sent["tools"][0]["input_schema"]["required"] == ["city"]
    else:
        assert sent["tools"] == TOOLS


def test_tool_result_round_trip_to_anthropic(gateway: Gateway, up: FakeUpstream) -> None:
    messages: list[Any] = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
    ]  # fmt: skip
    with client(gateway) as c:
        r = c.chat.completions.create(model="claude", messages=messages, tools=TOOLS)
    assert r.choices[0].message.content
    sent = up.requests[-1]["json"]
    assert sent["system"] == "be brief"
    assert sent["messages"][1]["content"][0] == {
        "type": "tool_use",
        "id": "call_1",
        "name": "get_weather",
        "input": {"city": "Paris"},
    }
    assert sent["messages"][2]["content"][0]["type"] == "tool_result"
    assert up.requests[-1]["headers"]["anthropic-version"] == "2023-06-01"


def test_unknown_fields_and_response_format_pass_through(gateway: Gateway, up: FakeUpstream) -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}
    with client(gateway) as c:
        c.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "hi"}],
            response_format=fmt,  # type: ignore[arg-type]
            seed=7,
            max_completion_tokens=99,
            extra_body={"brand_new_param": {"nested": [1, 2]}},
        )
    sent = up.requests[-1]["json"]
    assert sent["response_format"] == fmt
    assert sent["seed"] == 7 and sent["max_completion_tokens"] == 99
    assert sent["brand_new_param"] == {"nested": [1, 2]}
    assert "max_tokens" not in sent
    assert up.requests[-1]["headers"]["authorization"] == "Bearer sk-upstream-SECRET-openai"


def test_embeddings(gateway: Gateway, up: FakeUpstream) -> None:
    with client(gateway) as c:
        r = c.embeddings.create(model="embed", input=["alpha", "beta"])
    assert len(r.data) == 2 and len(r.data[0].embedding) == 8
    assert r.data[0].embedding != r.data[1].embedding
    t = only(gateway.traces())
    assert t.endpoint == "embeddings" and t.input_tokens and t.cost_usd is not None


def test_models_lists_aliases_the_key_may_use(gateway: Gateway) -> None:
    from keel.keys.auth import issue_key

    limited = issue_key(gateway.runtime.store, "t1", models=("sim",)).key
    with client(gateway) as c:
        assert {m.id for m in c.models.list()} == {"gpt-4o-mini", "claude", "sim", "embed"}
    with client(gateway, limited) as c:
        assert [m.id for m in c.models.list()] == ["sim"]
        with pytest.raises(openai.NotFoundError) as info:
            c.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}])
    assert "Allowed models: sim" in info.value.message


def test_bad_key_is_401(gateway: Gateway) -> None:
    with client(gateway, "sk-keel-not-a-key") as c, pytest.raises(openai.AuthenticationError) as info:
        c.chat.completions.create(model="sim", messages=[{"role": "user", "content": "x"}])
    assert info.value.code == "invalid_api_key"


def test_revoked_key_is_refused_within_a_second(gateway: Gateway) -> None:
    admin = {"authorization": f"Bearer {gateway.admin}"}
    created = httpx.post(gateway.url + "/api/keys", json={"tenant": "t1", "name": "doomed"}, headers=admin).json()
    with client(gateway, created["key"]) as c:
        c.chat.completions.create(model="sim", messages=[{"role": "user", "content": "x"}])  # now cached
        r = httpx.post(gateway.url + f"/api/keys/{created['id']}/revoke", headers=admin)
        assert r.status_code == 200 and r.json()["revoked_at"]
        revoked = time.monotonic()
        while True:
            try:
                c.chat.completions.create(model="sim", messages=[{"role": "user", "content": "x"}])
            except openai.AuthenticationError:
                break
            assert time.monotonic() - revoked < 1.0, "revoked key still accepted after 1 s"
            time.sleep(0.02)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": [{"role": "user", "content": "x"}]}, "model"),
        ({"model": "sim", "messages": []}, "messages"),
        ({"model": "sim", "messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role"),
        ({"model": "sim", "messages": [{"role": "user", "content": "x"}], "temperature": 9}, "temperature"),
        ({"model": "sim", "messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function"}]}, "tools[0].function.name"),
        ({"model": "sim", "messages": [{"role": "tool", "content": "x"}]}, "messages[0].tool_call_id"),
    ],
)  # fmt: skip
def test_malformed_body_is_400_naming_the_field(gateway: Gateway, body: dict[str, Any], param: str) -> None:
    r = httpx.post(
        gateway.base_url + "/chat/completions", json=body, headers={"authorization": f"Bearer {gateway.key}"}
    )
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["param"] == param and err["type"] == "invalid_request_error" and err["message"]


def test_invalid_json_is_400(gateway: Gateway) -> None:
    r = httpx.post(
        gateway.base_url + "/chat/completions", content=b"{nope", headers={"authorization": f"Bearer {gateway.key}"}
    )
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]["message"]


def test_unknown_alias_is_404(gateway: Gateway) -> None:
    with client(gateway) as c, pytest.raises(openai.NotFoundError) as info:
        c.chat.completions.create(model="gpt-9", messages=[{"role": "user", "content": "x"}])
    assert info.value.code == "model_not_found" and "gpt-4o-mini" in info.value.message


@pytest.mark.parametrize("stream", [False, True])
def test_upstream_500_is_an_openai_error_not_a_traceback(gateway: Gateway, up: FakeUpstream, stream: bool) -> None:
    up.script(Script(status=500), Script(status=500))  # the one retry of a 5xx fails too
    with client(gateway) as c, pytest.raises(openai.APIStatusError) as info:
        r = c.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}], stream=stream)
        if stream:
            list(r)  # type: ignore[call-overload]
    err = info.value
    assert err.status_code == 502
    assert isinstance(err.body, dict) and err.body["type"] == "upstream_error" and err.body["code"] == "server"
    assert "Traceback" not in str(err.body)
    t = only(gateway.traces())
    assert (t.status, t.error_kind, t.http_status, t.attempts) == ("error", "server", 502, 2)


def test_upstream_error_status_and_retry_after_are_passed_on(gateway: Gateway, up: FakeUpstream) -> None:
    up.script(Script(status=429, retry_after=7))
    r = httpx.post(
        gateway.base_url + "/chat/completions",
        json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]},
        headers={"authorization": f"Bearer {gateway.key}"},
    )
    assert r.status_code == 429 and r.headers["retry-after"] == "7"
    assert r.json()["error"]["code"] == "rate_limited"


def test_stream_cut_mid_answer_ends_with_an_error_event_never_success(gateway: Gateway, up: FakeUpstream) -> None:
    up.script(Script(text="one two three four five six", cut_after=3))
    with client(gateway) as c, pytest.raises(openai.APIError):
        list(c.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}], stream=True))
    t = only(gateway.traces())
    assert t.status == "partial" and t.error_kind in ("network", "protocol")


def test_attribution_headers_user_and_metadata(gateway: Gateway, up: FakeUpstream) -> None:
    with client(gateway) as c:
        c.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "x"}],
            user="end-user-9",
            metadata={"prompt_version": "v3"},
            store=True,
            extra_headers={"x-keel-feature": "search", "x-keel-session": "wf-42", "x-keel-tags": "team=ml,exp=a"},
        )
    t = only(gateway.traces())
    assert (t.user, t.feature, t.session) == ("end-user-9", "search", "wf-42")
    assert t.tags == {"prompt_version": "v3", "team": "ml", "exp": "a"}


def test_x_keel_user_header_when_no_user_field(gateway: Gateway) -> None:
    with client(gateway) as c:
        c.chat.completions.create(
            model="sim", messages=[{"role": "user", "content": "x"}], extra_headers={"x-keel-user": "u7"}
        )
    assert only(gateway.traces()).user == "u7"


def test_secrets_never_reach_traces(gateway: Gateway, up: FakeUpstream) -> None:
    up.script(
        Script(), Script(status=401, error_body={"error": {"message": "Incorrect API key provided: sk-upstr***enai"}})
    )
    with client(gateway) as c:
        c.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}])
        with pytest.raises(openai.APIStatusError) as info:
            c.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}])
    assert info.value.status_code == 502  # our provider credentials failed: not the caller's fault
    dump = repr(gateway.traces()) + repr(info.value.body)
    for secret in ("sk-upstream-SECRET-openai", "sk-ant-SECRET-anthropic", gateway.key, "sk-upstr***enai"):
        assert secret not in dump
    assert "providers.oai.api_key" in info.value.message


# ---- cost on known usage -----------------------------------------------------------------------

GPT4O_MINI = {"input": 0.15, "cached_input": 0.075, "output": 0.60}


@pytest.mark.parametrize("stream", [False, True])
def test_cost_openai_shaped_usage(gateway: Gateway, up: FakeUpstream, stream: bool) -> None:
    up.script(
        Script(usage={"prompt_tokens": 1000, "cached_tokens": 400, "completion_tokens": 500, "reasoning_tokens": 200})
    )
    with client(gateway) as c:
        r = c.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "x"}],
            stream=stream,
            stream_options={"include_usage": True} if stream else openai.NOT_GIVEN,
        )
        if stream:
            list(r)  # type: ignore[call-overload]
    t = only(gateway.traces())
    assert (t.input_tokens, t.cached_input_tokens, t.output_tokens, t.reasoning_tokens) == (1000, 400, 500, 200)
    expected = (600 * GPT4O_MINI["input"] + 400 * GPT4O_MINI["cached_input"] + 500 * GPT4O_MINI["output"]) / 1e6
    assert t.cost_usd == pytest.approx(expected)


@pytest.mark.parametrize("stream", [False, True])
def test_cost_anthropic_shaped_usage_with_cache_tokens(gateway: Gateway, up: FakeUpstream, stream: bool) -> None:
    # Anthropic reports input_tokens excluding cache reads/writes: 100 uncached + 1000 read + 2000 written.
    up.script(
        Script(
            usage={"prompt_tokens": 3100, "cached_tokens": 1000, "cache_creation_tokens": 2000, "completion_tokens": 50}
        )
    )
    with client(gateway) as c:
        r = c.chat.completions.create(model="claude", messages=[{"role": "user", "content": "x"}], stream=stream)
        if stream:
            list(r)  # type: ignore[call-overload]
    t = only(gateway.traces())
    assert (t.input_tokens, t.cached_input_tokens, t.cache_write_tokens, t.output_tokens) == (3100, 1000, 2000, 50)
    # claude-sonnet-4-5: input 3.00, cache read 0.30, cache write 3.75, output 15.00 per million
    expected = (100 * 3.00 + 1000 * 0.30 + 2000 * 3.75 + 50 * 15.00) / 1e6
    assert t.cost_usd == pytest.approx(expected)


def test_unpriced_model_has_null_cost_not_zero(make_gateway: Any, up: FakeUpstream, tmp_path: Any) -> None:
    from tests.conftest import base_config

    raw = base_config(up, f"sqlite:///{tmp_path}/k.db", tmp_path)
    raw["models"]["mystery"] = {"targets": [{"provider": "oai", "model": "mystery-model-1"}]}
    gw = make_gateway(raw)
    up.script(Script(model="mystery-model-1"))
    with client(gw) as c:
        c.chat.completions.create(model="mystery", messages=[{"role": "user", "content": "x"}])
    t = only(gw.traces())
    assert t.cost_usd is None and t.output_tokens is not None


def test_admin_api_requires_the_token_and_lists_traces(gateway: Gateway) -> None:
    assert httpx.get(gateway.url + "/api/traces").status_code == 401
    assert httpx.get(gateway.url + "/api/traces", headers={"authorization": "Bearer wrong"}).status_code == 401
    with client(gateway) as c:
        c.chat.completions.create(
            model="sim", messages=[{"role": "user", "content": "x"}], extra_headers={"x-keel-feature": "f1"}
        )
    gateway.traces()
    admin = {"authorization": f"Bearer {gateway.admin}"}
    listed = httpx.get(gateway.url + "/api/traces", params={"since": "1h", "feature": "f1"}, headers=admin).json()[
        "data"
    ]
    assert len(listed) == 1 and "request" not in listed[0]
    full = httpx.get(gateway.url + f"/api/traces/{listed[0]['id']}", headers=admin).json()
    assert full["request"]["messages"][0]["content"] == "x"
    assert httpx.get(gateway.url + "/api/traces/nope", headers=admin).status_code == 404
    tenants = httpx.get(gateway.url + "/api/tenants", headers=admin).json()["data"]
    assert [t["name"] for t in tenants] == ["t1"]
    keys = httpx.get(gateway.url + "/api/keys", headers=admin).json()["data"]
    assert keys and all("key_hash" not in k and "key" not in k for k in keys)


def test_health_and_readiness(gateway: Gateway) -> None:
    assert httpx.get(gateway.url + "/healthz").json() == {"status": "ok"}
    with client(gateway, "sk-keel-wrong") as c, pytest.raises(openai.AuthenticationError):
        c.chat.completions.create(model="sim", messages=[{"role": "user", "content": "x"}])
    ready = httpx.get(gateway.url + "/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    assert ready.json()["unauthenticated"] == 1 and gateway.traces() == []
