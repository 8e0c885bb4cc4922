"""The OpenAI surface around chat, over real HTTP with the official `openai` SDK: token-array and base64
embeddings, legacy completions (passed through, or served as chat), `GET /v1/models/{id}`, moderations
and rerank passed to the targets that offer them, prefix-less and Azure-shaped routes, JSON errors for
unknown routes and methods, CORS, and the SSE headers proxies need.
"""

from __future__ import annotations

import base64
import struct
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from keel.keys.auth import issue_key
from keel.testing import FakeUpstream, Script
from tests.conftest import Gateway, base_config


def surface_config(up: FakeUpstream, tmp: Path, **server: Any) -> dict[str, Any]:
    raw = base_config(up, f"sqlite:///{tmp}/keel.db", tmp)
    raw["providers"]["tog"] = {
        "type": "together",
        "base_url": up.url + "/v1",
        "api_key": "sk-tog",
    }  # rerank, completions
    raw["providers"]["grq"] = {"type": "groq", "base_url": up.url + "/v1", "api_key": "sk-grq"}  # chat only
    raw["models"]["rerank"] = {"targets": [{"provider": "tog", "model": "rerank-2"}]}
    raw["models"]["moderation"] = {"targets": [{"provider": "oai", "model": "omni-moderation-latest"}]}
    raw["models"]["chat-only"] = {"targets": [{"provider": "grq", "model": "llama-3.1-8b"}]}
    if server:
        raw["server"] = server
    return raw


@pytest.fixture
def gw(make_gateway: Any, up: FakeUpstream, tmp_path: Path) -> Gateway:
    return make_gateway(surface_config(up, tmp_path))  # type: ignore[no-any-return]


def sdk(gw: Gateway, base: str | None = None) -> openai.OpenAI:
    return openai.OpenAI(base_url=base or gw.base_url, api_key=gw.key, max_retries=0, timeout=10)


def auth(gw: Gateway) -> dict[str, str]:
    return {"authorization": f"Bearer {gw.key}"}


# ---- embeddings: token arrays, base64 ------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "sent"), [([1, 2, 3], [[1, 2, 3]]), ([[1, 2, 3], [4, 5]], [[1, 2, 3], [4, 5]])], ids=["flat", "nested"]
)
def test_token_array_embeddings_reach_the_upstream(gw: Gateway, up: FakeUpstream, given: Any, sent: Any) -> None:
    with sdk(gw) as c:
        out = c.embeddings.create(model="embed", input=given)  # the SDK asks for base64 and decodes it
    assert up.requests[-1]["json"]["input"] == sent and up.requests[-1]["path"] == "/v1/embeddings"
    assert len(out.data) == len(sent) and all(len(d.embedding) == 8 for d in out.data)
    direct = [httpx.post(up.url + "/v1/embeddings", json={"model": "m", "input": [s]}).json() for s in sent]
    for got, want in zip(out.data, direct, strict=True):  # the same vector the upstream gives for that input
        assert got.embedding == pytest.approx(want["data"][0]["embedding"], abs=1e-6)


def test_base64_embeddings_decode_to_the_float_answer(gw: Gateway) -> None:
    def ask(fmt: str) -> Any:
        body = {"model": "embed", "input": ["a", "b"], "encoding_format": fmt}
        r = httpx.post(gw.base_url + "/embeddings", json=body, headers=auth(gw))
        assert r.status_code == 200, r.text
        return r.json()["data"]

    floats, packed = ask("float"), ask("base64")
    for f, b in zip(floats, packed, strict=True):
        raw = base64.b64decode(b["embedding"])
        assert list(struct.unpack(f"<{len(raw) // 4}f", raw)) == pytest.approx(f["embedding"], abs=1e-6)


def test_token_arrays_on_the_simulated_provider_and_bad_shapes(gw: Gateway) -> None:
    with sdk(gw) as c:
        out = c.embeddings.create(model="sim", input=[[1, 2], [3]])
        assert len(out.data) == 2 and out.data[0].embedding != out.data[1].embedding
        for bad in ([[1, "a"]], [[]], [-1], [[1, 2], "text"]):
            with pytest.raises(openai.BadRequestError) as e:
                c.embeddings.create(model="sim", input=bad)
            assert e.value.body["param"] == "input"  # type: ignore[index]


# ---- legacy completions ----------------------------------------------------------------------------


def test_completions_pass_through_to_a_target_that_offers_them(gw: Gateway, up: FakeUpstream) -> None:
    with sdk(gw) as c:
        out = c.completions.create(model="gpt-4o-mini", prompt="say hi", max_tokens=5)
        assert out.choices[0].text == "echo: say hi" and out.object == "text_completion"
        sent = up.requests[-1]
        assert sent["path"] == "/v1/completions" and sent["json"] == {
            "model": "gpt-4o-mini",
            "prompt": "say hi",
            "max_tokens": 5,
        }
        text = "".join(
            ch.choices[0].text for ch in c.completions.create(model="gpt-4o-mini", prompt="x y", stream=True)
        )
    assert text == "echo: x y"
    traces = sorted((t for t in gw.traces() if t.endpoint == "completions"), key=lambda t: t.started_at)
    assert len(traces) == 2 and all(t.provider == "oai" and t.status == "ok" for t in traces)
    assert traces[0].input_tokens == 2 and traces[0].output_tokens == 3 and traces[0].cost_usd  # the upstream's usage


def test_a_refused_forwarded_stream_is_an_error_status_not_a_200(gw: Gateway, up: FakeUpstream) -> None:
    up.script(Script(status=400, error_code="invalid_value"))
    with sdk(gw) as c, pytest.raises(openai.BadRequestError):
        list(c.completions.create(model="gpt-4o-mini", prompt="x", stream=True))
    t = next(t for t in gw.traces() if t.endpoint == "completions")
    assert t.status == "error" and t.http_status == 400


def test_completions_served_as_chat_where_the_target_has_none(gw: Gateway, up: FakeUpstream) -> None:
    with sdk(gw) as c:
        out = c.completions.create(model="chat-only", prompt="hello there", max_tokens=20, stop=["\n"])
        assert out.choices[0].text == "echo: hello there" and out.choices[0].finish_reason == "stop"
        assert out.id.startswith("cmpl-") and out.usage is not None and out.usage.completion_tokens == 3
        sent = up.requests[-1]
        assert sent["path"] == "/v1/chat/completions"
        assert sent["json"]["messages"] == [{"role": "user", "content": "hello there"}] and sent["json"]["stop"] == [
            "\n"
        ]
        chunks = list(
            c.completions.create(
                model="chat-only", prompt="hello there", stream=True, stream_options={"include_usage": True}
            )
        )
    assert "".join(ch.choices[0].text for ch in chunks if ch.choices) == "echo: hello there"
    assert all(ch.object == "text_completion" for ch in chunks)
    assert [ch.choices[0].finish_reason for ch in chunks if ch.choices][-1] == "stop"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 3


@pytest.mark.parametrize(
    ("field", "value"),
    [("echo", True), ("logprobs", 2), ("suffix", "end"), ("best_of", 3), ("prompt", ["a", "b"]), ("prompt", [1, 2])],
)
def test_completions_fields_chat_cannot_honour_are_refused(gw: Gateway, field: str, value: Any) -> None:
    body = {"model": "chat-only", "prompt": "hi", field: value}
    r = httpx.post(gw.base_url + "/completions", json=body, headers=auth(gw))
    assert r.status_code == 400 and r.json()["error"]["param"] == field, r.text


# ---- models, moderations, rerank ------------------------------------------------------------------


def test_model_by_id(gw: Gateway) -> None:
    with sdk(gw) as c:
        m = c.models.retrieve("gpt-4o-mini")
        assert (m.id, m.object) == ("gpt-4o-mini", "model")
        with pytest.raises(openai.NotFoundError) as e:
            c.models.retrieve("nope")
        assert e.value.body["code"] == "model_not_found"  # type: ignore[index]
    narrow = issue_key(gw.runtime.store, "t1", name="narrow", models=("claude",)).key
    with openai.OpenAI(base_url=gw.base_url, api_key=narrow, max_retries=0) as c:
        assert c.models.retrieve("claude").id == "claude"
        with pytest.raises(openai.NotFoundError):
            c.models.retrieve("gpt-4o-mini")  # exists, but not for this key: the same 404


def test_moderations_pass_through(gw: Gateway, up: FakeUpstream) -> None:
    with sdk(gw) as c:
        out = c.moderations.create(model="moderation", input=["I will kill the process", "hello"])
        assert [r.flagged for r in out.results] == [True, False]
        assert up.requests[-1]["path"] == "/v1/moderations"
        assert up.requests[-1]["headers"]["authorization"] == "Bearer sk-upstream-SECRET-openai"
        with pytest.raises(openai.BadRequestError) as e:
            c.moderations.create(model="claude", input="hi")  # Anthropic offers no moderations
    assert e.value.body["param"] == "model" and "moderations" in e.value.body["message"]  # type: ignore[index]


def test_rerank_pass_through(gw: Gateway, up: FakeUpstream) -> None:
    body = {"model": "rerank", "query": "red apple", "documents": ["green pear", "a red apple", "red car"], "top_n": 2}
    r = httpx.post(gw.base_url + "/rerank", json=body, headers=auth(gw))
    assert r.status_code == 200, r.text
    assert [x["index"] for x in r.json()["results"]] == [1, 2]
    assert up.requests[-1]["json"]["model"] == "rerank-2" and up.requests[-1]["path"] == "/v1/rerank"
    assert r.headers["x-keel-provider"] == "tog"
    refused = httpx.post(gw.base_url + "/rerank", json=body | {"model": "gpt-4o-mini"}, headers=auth(gw))
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "model"
    unknown = httpx.post(gw.base_url + "/rerank", json=body | {"model": "nope"}, headers=auth(gw))
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "model_not_found"


def test_forwarded_upstream_errors_come_back_in_openai_format(gw: Gateway, up: FakeUpstream) -> None:
    up.script(Script(status=400, error_code="invalid_value"))
    with sdk(gw) as c, pytest.raises(openai.BadRequestError):
        c.moderations.create(model="moderation", input="x")
    t = next(t for t in gw.traces() if t.endpoint == "moderations")
    assert t.status == "error" and t.provider == "oai"


# ---- route shapes ----------------------------------------------------------------------------------


def test_routes_without_the_v1_prefix(gw: Gateway, up: FakeUpstream) -> None:
    with sdk(gw, base=gw.url) as c:
        chat = c.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
        assert chat.choices[0].message.content == "echo: hi"
        assert len(c.embeddings.create(model="embed", input="x").data) == 1
        assert {"gpt-4o-mini", "claude", "rerank"} <= {m.id for m in c.models.list()}
        assert c.models.retrieve("claude").id == "claude"


@pytest.mark.parametrize("stream", [False, True])
def test_azure_deployment_shape(gw: Gateway, up: FakeUpstream, stream: bool) -> None:
    with openai.AzureOpenAI(azure_endpoint=gw.url, api_key=gw.key, api_version="2024-10-21", max_retries=0) as c:
        messages: Any = [{"role": "user", "content": "hi"}]
        if stream:
            text = "".join(
                ch.choices[0].delta.content or ""
                for ch in c.chat.completions.create(model="chat-only", messages=messages, stream=True)
                if ch.choices
            )
        else:
            text = c.chat.completions.create(model="chat-only", messages=messages).choices[0].message.content or ""
        assert text == "echo: hi"
        assert up.requests[-1]["json"]["model"] == "llama-3.1-8b"  # the deployment named the alias
        assert len(c.embeddings.create(model="embed", input="x").data) == 1
    assert up.requests[-1]["path"] == "/v1/embeddings"


def test_azure_api_key_header_is_the_virtual_key(gw: Gateway) -> None:
    body = {"messages": [{"role": "user", "content": "hi"}]}
    url = gw.url + "/openai/deployments/gpt-4o-mini/chat/completions?api-version=2024-10-21"
    assert httpx.post(url, json=body, headers={"api-key": gw.key}).status_code == 200
    bad = httpx.post(url, json=body, headers={"api-key": "sk-wrong"})
    assert bad.status_code == 401 and bad.json()["error"]["code"] == "invalid_api_key"


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("POST", "/v1/nope", 404),
        ("GET", "/nope", 404),
        ("GET", "/v1/chat/completions", 405),
        ("DELETE", "/v1/embeddings", 405),
        ("PUT", "/chat/completions", 405),
        ("POST", "/v1/models", 405),
    ],
)
def test_unknown_routes_and_methods_answer_openai_json(gw: Gateway, method: str, path: str, status: int) -> None:
    r = httpx.request(method, gw.url + path, headers=auth(gw))
    assert r.status_code == status and r.headers["content-type"] == "application/json"
    error = r.json()["error"]
    assert path in error["message"] and error["type"] == "invalid_request_error"
    if status == 405:
        assert r.headers["allow"] and error["code"] == "method_not_allowed"


def test_sse_responses_carry_the_proxy_headers(gw: Gateway) -> None:
    body = {"model": "gpt-4o-mini", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    with httpx.stream("POST", gw.base_url + "/chat/completions", json=body, headers=auth(gw)) as r:
        r.read()
    assert r.headers["cache-control"] == "no-cache" and r.headers["x-accel-buffering"] == "no"


# ---- CORS ------------------------------------------------------------------------------------------


def test_cors_is_off_by_default(gw: Gateway) -> None:
    r = httpx.options(
        gw.base_url + "/chat/completions",
        headers={"origin": "https://app.example", "access-control-request-method": "POST"},
    )
    assert "access-control-allow-origin" not in r.headers and r.status_code == 405


def test_cors_when_configured(make_gateway: Any, up: FakeUpstream, tmp_path: Path) -> None:
    cors = {"origins": ["https://app.example"], "credentials": True}
    gw: Gateway = make_gateway(surface_config(up, tmp_path, cors=cors))
    preflight = {"origin": "https://app.example", "access-control-request-method": "POST"}
    preflight["access-control-request-headers"] = "authorization, content-type"
    r = httpx.options(gw.base_url + "/chat/completions", headers=preflight)  # no key: answered before auth
    assert r.status_code == 200, r.text
    assert r.headers["access-control-allow-origin"] == "https://app.example"
    assert r.headers["access-control-allow-credentials"] == "true"
    assert "POST" in r.headers["access-control-allow-methods"]
    refused = httpx.options(gw.base_url + "/chat/completions", headers=preflight | {"origin": "https://evil.example"})
    assert refused.status_code == 400 and "access-control-allow-origin" not in refused.headers
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    answer = httpx.post(
        gw.base_url + "/chat/completions", json=body, headers=auth(gw) | {"origin": "https://app.example"}
    )
    assert answer.status_code == 200 and answer.headers["access-control-allow-origin"] == "https://app.example"
    assert "x-keel-trace-id" in answer.headers["access-control-expose-headers"]


def test_cors_config_refuses_wildcard_with_credentials(tmp_path: Path, up: FakeUpstream) -> None:
    import yaml

    from keel import config as keel_config
    from keel.errors import ConfigError

    raw = surface_config(up, tmp_path, cors={"origins": ["*"], "credentials": True})
    (tmp_path / "keel.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError) as e:
        keel_config.load(tmp_path / "keel.yaml", env={})
    assert "server.cors" in str(e.value) and "credentials" in str(e.value)
