"""The Anthropic surface around /v1/messages, over real HTTP with the official `anthropic` SDK: token
counting (the provider's own on an Anthropic target, else Keel's estimate), `message_start` usage and
`ping` events in streams, 529 `overloaded_error` for an overloaded upstream, Anthropic-shaped errors
for unknown routes, and the SSE headers proxies need.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest

from keel.testing import FakeUpstream, Script
from tests.conftest import Gateway, base_config

USER: Any = [{"role": "user", "content": "hello there, how many tokens is this?"}]
TOOLS: Any = [{"name": "get_weather", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}]


def config(up: FakeUpstream, tmp: Path, **server: Any) -> dict[str, Any]:
    raw = base_config(up, f"sqlite:///{tmp}/keel.db", tmp)
    raw["server"] = server
    return raw


@pytest.fixture
def gw(make_gateway: Any, up: FakeUpstream, tmp_path: Path) -> Gateway:
    return make_gateway(config(up, tmp_path))  # type: ignore[no-any-return]


def client(gw: Gateway) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gw.url, api_key=gw.key, max_retries=0, timeout=10)


def frames(raw: str) -> list[tuple[str, Any]]:
    out = []
    for frame in raw.strip().split("\n\n"):
        head, _, data = frame.partition("\n")
        out.append((head.removeprefix("event: "), json.loads(data.removeprefix("data: "))))
    return out


# ---- count_tokens ------------------------------------------------------------------------------------


def test_count_tokens_asks_an_anthropic_target(gw: Gateway, up: FakeUpstream) -> None:
    with client(gw) as c:
        raw = c.messages.with_raw_response.count_tokens(model="claude", system="be brief", messages=USER, tools=TOOLS)
    sent = up.requests[-1]
    assert sent["path"] == "/v1/messages/count_tokens" and sent["json"]["model"] == "claude-sonnet-4-5"
    assert sent["json"]["system"] == "be brief" and sent["json"]["tools"] == TOOLS
    assert sent["headers"]["x-api-key"] == "sk-ant-SECRET-anthropic" and sent["headers"]["anthropic-version"]
    expected = len(json.dumps(["be brief", USER, TOOLS])) // 3  # the fake's own count
    assert raw.parse().input_tokens == expected and raw.headers["x-keel-token-count"] == "provider"


def test_count_tokens_estimates_elsewhere(gw: Gateway, up: FakeUpstream) -> None:
    before = len(up.requests)
    with client(gw) as c:
        raw = c.messages.with_raw_response.count_tokens(model="gpt-4o-mini", messages=USER)
        long = c.messages.count_tokens(model="gpt-4o-mini", messages=[{"role": "user", "content": "word " * 400}])
    assert len(up.requests) == before  # nothing asked upstream
    assert raw.headers["x-keel-token-count"] == "estimated" and 0 < raw.parse().input_tokens < 40
    assert 450 < long.input_tokens < 550  # characters / 4, plus framing


def test_count_tokens_errors_in_anthropic_format(gw: Gateway) -> None:
    with client(gw) as c:
        with pytest.raises(anthropic.NotFoundError) as e:
            c.messages.count_tokens(model="nope", messages=USER)
        assert e.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]
        with pytest.raises(anthropic.BadRequestError) as bad:
            c.messages.count_tokens(model="claude", messages=[])
    assert "messages" in bad.value.body["error"]["message"]  # type: ignore[index]


# ---- streams: message_start usage, ping --------------------------------------------------------------


@pytest.mark.parametrize("alias", ["claude", "gpt-4o-mini"])
def test_stream_starts_with_usage_and_a_ping(gw: Gateway, up: FakeUpstream, alias: str) -> None:
    up.script(Script(usage={"prompt_tokens": 77}))
    body = {"model": alias, "max_tokens": 50, "stream": True, "messages": USER}
    with httpx.stream("POST", gw.url + "/v1/messages", json=body, headers={"x-api-key": gw.key}) as r:
        raw = r.read().decode()
    assert r.headers["cache-control"] == "no-cache" and r.headers["x-accel-buffering"] == "no"
    events = frames(raw)
    assert [e for e, _ in events[:2]] == ["message_start", "ping"]
    start = events[0][1]["message"]["usage"]
    assert start["input_tokens"] > 0 and start["output_tokens"] == 0
    final = next(d for e, d in events if e == "message_delta")
    assert final["usage"]["output_tokens"] > 0 and final["usage"]["input_tokens"] > 0  # the exact counts end it
    if alias == "claude":  # the upstream's own count, known from its message_start
        assert start["input_tokens"] == final["usage"]["input_tokens"]


def test_idle_stream_sends_pings(make_gateway: Any, up: FakeUpstream, tmp_path: Path) -> None:
    gw: Gateway = make_gateway(config(up, tmp_path, sse_ping_s=0.05))
    up.script(Script(chunk_delay=0.4))
    body = {"model": "claude", "max_tokens": 50, "stream": True, "messages": USER}
    with httpx.stream("POST", gw.url + "/v1/messages", json=body, headers={"x-api-key": gw.key}) as r:
        kinds = [e for e, _ in frames(r.read().decode())]
    first_text = kinds.index("content_block_delta")
    assert kinds[:2] == ["message_start", "ping"] and kinds[-1] == "message_stop"
    assert kinds[first_text:].count("ping") >= 3, kinds  # more while the upstream is slow between chunks
    up.script(Script(chunk_delay=0.2))
    with client(gw) as c, c.messages.stream(model="claude", max_tokens=50, messages=USER) as s:
        final = s.get_final_message()  # the SDK takes the pings in its stride
    assert final.content[0].type == "text" and final.content[0].text.startswith("echo: hello")


# ---- overloaded: 529 to Anthropic clients, 503 to OpenAI clients ----------------------------------


@pytest.mark.parametrize("stream", [False, True])
def test_overloaded_upstream_is_529_for_anthropic_clients(gw: Gateway, up: FakeUpstream, stream: bool) -> None:
    up.script(*[Script(status=529)] * 5)
    with client(gw) as c, pytest.raises(anthropic.APIStatusError) as e:
        if stream:
            with c.messages.stream(model="claude", max_tokens=50, messages=USER) as s:
                s.get_final_message()
        else:
            c.messages.create(model="claude", max_tokens=50, messages=USER)
    assert e.value.status_code == 529 and isinstance(e.value, anthropic.InternalServerError)
    assert e.value.body["error"]["type"] == "overloaded_error"  # type: ignore[index]
    up.reset()
    up.script(*[Script(status=529)] * 5)
    with (
        openai.OpenAI(base_url=gw.base_url, api_key=gw.key, max_retries=0) as o,
        pytest.raises(openai.APIStatusError) as oe,
    ):
        o.chat.completions.create(model="claude", messages=[{"role": "user", "content": "hi"}])
    assert oe.value.status_code == 503
    up.reset()


def test_other_errors_keep_their_status(gw: Gateway, up: FakeUpstream) -> None:
    up.script(*[Script(status=500)] * 5)
    with client(gw) as c, pytest.raises(anthropic.APIStatusError) as e:
        c.messages.create(model="claude", max_tokens=50, messages=USER)
    assert e.value.status_code != 529
    up.reset()


# ---- routes ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "status"), [("POST", "/v1/messages/nope", 404), ("GET", "/v1/messages", 405)]
)
def test_unknown_routes_under_messages_answer_anthropic_json(gw: Gateway, method: str, path: str, status: int) -> None:
    r = httpx.request(method, gw.url + path, headers={"x-api-key": gw.key})
    assert r.status_code == status and r.headers["content-type"] == "application/json"
    body = r.json()
    kind = "not_found_error" if status == 404 else "invalid_request_error"
    assert body["type"] == "error" and body["error"]["type"] == kind
    assert path in body["error"]["message"]


def test_messages_without_the_v1_prefix(gw: Gateway) -> None:
    body = {"model": "claude", "max_tokens": 50, "messages": USER}
    r = httpx.post(gw.url + "/messages", json=body, headers={"x-api-key": gw.key})
    assert r.status_code == 200 and r.json()["content"][0]["text"].startswith("echo: hello")
