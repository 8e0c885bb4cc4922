"""Node clients driving Keel over real HTTP: the official openai Node SDK and the Vercel AI SDK
(`ai` + `@ai-sdk/openai`), run by `node` from the scripts in tests/e2e/node/, against the fake upstream.

Their packages are pinned by tests/e2e/node/package-lock.json and installed once (`npm ci`, bounded by
a timeout) into a cache directory named after the lock's hash (KEEL_NODE_CACHE, else
~/.cache/keel/node-clients); node or npm missing is a failure, never a skip.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from keel.testing import FakeUpstream, Script
from tests.conftest import Gateway, base_config
from tests.e2e.nodeclients import RUN_TIMEOUT_S, node_dir

pytestmark = pytest.mark.timeout(400)  # the first test may install the packages (npm ci, at most 300 s)


@pytest.fixture(scope="session")
def node() -> Path:
    return node_dir()


@pytest.fixture
def gw(make_gateway: Any, up: FakeUpstream, tmp_path: Path) -> Gateway:
    return make_gateway(base_config(up, f"sqlite:///{tmp_path}/keel.db", tmp_path))  # type: ignore[no-any-return]


def run(node: Path, gw: Gateway, script: str, case: str, model: str, *args: str) -> Any:
    env = {**os.environ, "KEEL_BASE_URL": gw.base_url, "KEEL_KEY": gw.key, "KEEL_MODEL": model}
    env["NODE_NO_WARNINGS"] = "1"
    done = subprocess.run(
        ["node", script, case, *args], cwd=node, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT_S
    )
    assert done.returncode == 0, f"node {script} {case} failed:\n{done.stdout}\n{done.stderr}"
    return json.loads(done.stdout.strip().splitlines()[-1])


def requests_to(up: FakeUpstream, path: str) -> list[Any]:
    return [r for r in up.requests if r["path"] == path]


# ---- the openai Node SDK ---------------------------------------------------------------------------

CHAT = "/v1/chat/completions"
NODE_ECHO = "echo: hello from node"


@pytest.mark.parametrize("model", ["gpt-4o-mini", "claude"])
def test_openai_node_chat(node: Path, gw: Gateway, up: FakeUpstream, model: str) -> None:
    out = run(node, gw, "openai_sdk.mjs", "chat", model)
    assert (out["content"], out["finish"]) == (NODE_ECHO, "stop")
    assert out["usage"]["completion_tokens"] == 4 and out["usage"]["prompt_tokens"] > 0
    sent = up.requests[-1]
    assert sent["path"] == (CHAT if model == "gpt-4o-mini" else "/v1/messages")
    assert [t.status for t in gw.traces()] == ["ok"]


@pytest.mark.parametrize("model", ["gpt-4o-mini", "claude"])
def test_openai_node_stream_with_usage(node: Path, gw: Gateway, up: FakeUpstream, model: str) -> None:
    out = run(node, gw, "openai_sdk.mjs", "stream", model)
    assert (out["content"], out["finish"]) == (NODE_ECHO, "stop")
    assert out["usage"]["completion_tokens"] == 4
    assert up.requests[-1]["json"]["stream"] is True


@pytest.mark.parametrize("model", ["gpt-4o-mini", "claude"])
def test_openai_node_tool_call_and_second_turn(node: Path, gw: Gateway, up: FakeUpstream, model: str) -> None:
    up.script(Script(tool_call=True), Script(text="21 degrees in Paris"))
    out = run(node, gw, "openai_sdk.mjs", "tools", model)
    assert (out["finish"], out["name"], out["arguments"]) == ("tool_calls", "get_weather", {"city": "Paris"})
    assert out["content"] == "21 degrees in Paris"
    assert "temp" in json.dumps(up.requests[-1]["json"])  # the tool's result reached the upstream


def test_openai_node_embeddings_in_base64(node: Path, gw: Gateway, up: FakeUpstream) -> None:
    out = run(node, gw, "openai_sdk.mjs", "embed", "embed")
    assert out["count"] == 2 and out["dims"] > 0
    assert all(isinstance(x, float) for x in out["first"])
    assert up.requests[-1]["json"].get("encoding_format") in (None, "float")  # Keel asks for floats, encodes itself


def test_openai_node_unknown_alias_is_a_404_the_sdk_names(node: Path, gw: Gateway) -> None:
    out = run(node, gw, "openai_sdk.mjs", "error", "gpt-4o-mini")
    assert (out["status"], out["name"]) == (404, "NotFoundError")


# ---- the Vercel AI SDK, chat completions (`openai.chat(model)`) ----------------------------------

AI_ECHO = "echo: hello from the ai sdk"


@pytest.mark.parametrize("model", ["gpt-4o-mini", "claude"])
def test_ai_sdk_generate_text(node: Path, gw: Gateway, up: FakeUpstream, model: str) -> None:
    out = run(node, gw, "ai_sdk.mjs", "generate", model)
    assert (out["text"], out["finish"]) == (AI_ECHO, "stop")
    assert out["usage"]["outputTokens"] == 6 and out["usage"]["inputTokens"] > 0


@pytest.mark.parametrize("model", ["gpt-4o-mini", "claude"])
def test_ai_sdk_stream_text(node: Path, gw: Gateway, up: FakeUpstream, model: str) -> None:
    out = run(node, gw, "ai_sdk.mjs", "stream", model)
    assert (out["text"], out["finish"]) == (AI_ECHO, "stop")
    assert out["usage"]["outputTokens"] == 6


@pytest.mark.parametrize("model", ["gpt-4o-mini", "claude"])
def test_ai_sdk_tool_loop(node: Path, gw: Gateway, up: FakeUpstream, model: str) -> None:
    up.script(Script(tool_call=True), Script(text="21 degrees in Paris"))
    out = run(node, gw, "ai_sdk.mjs", "tools", model)
    assert out["calls"] == [{"city": "Paris"}]
    assert (out["text"], out["steps"], out["finish"]) == ("21 degrees in Paris", 2, "stop")


@pytest.mark.parametrize("model", ["gpt-4o-mini", "claude"])
def test_ai_sdk_structured_output(node: Path, gw: Gateway, up: FakeUpstream, model: str) -> None:
    up.script(Script(text='{"city": "Paris"}', arguments='{"city": "Paris"}'))
    out = run(node, gw, "ai_sdk.mjs", "object", model)
    assert out["output"] == {"city": "Paris"}
    sent = up.requests[-1]["json"]
    if model == "gpt-4o-mini":
        assert sent["response_format"]["type"] == "json_schema"
    else:  # claude-sonnet-4-5 has native structured output
        assert sent["output_config"]["format"]["type"] == "json_schema"


def test_ai_sdk_embed_many(node: Path, gw: Gateway, up: FakeUpstream) -> None:
    out = run(node, gw, "ai_sdk.mjs", "embed", "embed")
    assert out["count"] == 2 and out["dims"] > 0


# ---- the Vercel AI SDK's default model, `openai(model)`: the Responses API -------------------------


@pytest.mark.parametrize("model", ["gpt-4o-mini", "claude"])
@pytest.mark.parametrize("case", ["generate", "stream"])
def test_ai_sdk_default_model_on_the_responses_api(
    node: Path, gw: Gateway, up: FakeUpstream, model: str, case: str
) -> None:
    out = run(node, gw, "ai_sdk.mjs", case, model, "responses")
    assert (out["text"], out["finish"]) == (AI_ECHO, "stop")
    assert out["usage"]["outputTokens"] == 6
    assert [t.status for t in gw.traces()] == ["ok"]
