"""Translation between the OpenAI and Anthropic shapes, end to end over real HTTP with the official SDKs.

Each test asserts what the fake upstream received: the fields a client sent reach an upstream of its
own wire intact, are translated for the other wire, or are dropped and named in the trace's
`keel.dropped` tag; a field whose loss would change the answer is a 400 naming it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest
from pydantic import BaseModel

from keel.testing import FakeUpstream, Script
from keel.testing.fake_wire import SIGNATURE
from keel.wire.anthropic_messages import ANSWER_TOOL
from tests.conftest import Gateway, base_config

CITY = '{"name": "Paris", "population": 2100000}'
BETA = "interleaved-thinking-2025-05-14"
WEATHER: Any = {
    "name": "get_weather",
    "description": "Weather in a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


class City(BaseModel):
    name: str
    population: int


@pytest.fixture
def gw(make_gateway: Any, up: FakeUpstream, tmp_path: Path) -> Gateway:
    """The shared config on SQLite, plus an Anthropic alias whose model has no native structured output
    and an OpenAI-compatible alias on a server that takes top_k (vLLM)."""
    raw = base_config(up, f"sqlite:///{tmp_path}/keel.db", tmp_path)
    raw["providers"]["vllm"] = {"type": "vllm", "base_url": up.url + "/v1"}
    raw["models"]["claude-old"] = {"targets": [{"provider": "ant", "model": "claude-3-5-haiku-latest"}]}
    raw["models"]["local"] = {"targets": [{"provider": "vllm", "model": "qwen3"}]}
    return make_gateway(raw)  # type: ignore[no-any-return]


def oai(gw: Gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.base_url, api_key=gw.key, max_retries=0, timeout=10)


def ant(gw: Gateway) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gw.url, api_key=gw.key, max_retries=0, timeout=10)


def tags(gw: Gateway, trace_id: str | None = None) -> dict[str, Any]:
    """The tags of that trace; without an id, of the only one."""
    rows = gw.traces()
    if trace_id is None:
        assert len(rows) == 1
        return dict(rows[0].tags)
    return dict(next(t for t in rows if t.id == trace_id).tags)


ASK: Any = [{"role": "user", "content": "Which city, and how many people?"}]


# ---- OpenAI client -> Anthropic target ------------------------------------------------------------


def test_parse_on_a_model_with_native_structured_output(gw: Gateway, up: FakeUpstream) -> None:
    up.script(Script(text=CITY))
    with oai(gw) as c:
        done = c.chat.completions.parse(model="claude", messages=ASK, response_format=City)
    assert done.choices[0].message.parsed == City(name="Paris", population=2100000)
    sent = up.requests[-1]["json"]
    fmt = sent["output_config"]["format"]
    assert fmt["type"] == "json_schema" and fmt["schema"]["required"] == ["name", "population"]
    assert "tools" not in sent and "tool_choice" not in sent


def test_parse_on_a_model_without_it_forces_an_answer_tool(gw: Gateway, up: FakeUpstream) -> None:
    up.script(Script(arguments=CITY))
    with oai(gw) as c:
        done = c.chat.completions.parse(model="claude-old", messages=ASK, response_format=City)
    choice = done.choices[0]
    assert choice.message.parsed == City(name="Paris", population=2100000)
    assert choice.finish_reason == "stop" and not choice.message.tool_calls
    sent = up.requests[-1]["json"]
    assert "output_config" not in sent
    assert [t["name"] for t in sent["tools"]] == [ANSWER_TOOL]
    assert sent["tools"][0]["input_schema"]["properties"].keys() == {"name", "population"}
    assert sent["tool_choice"] == {"type": "tool", "name": ANSWER_TOOL}


def test_streamed_parse_through_the_answer_tool(gw: Gateway, up: FakeUpstream) -> None:
    up.script(Script(arguments=CITY))
    with oai(gw) as c, c.chat.completions.stream(model="claude-old", messages=ASK, response_format=City) as s:
        final = s.get_final_completion()
    assert final.choices[0].message.parsed == City(name="Paris", population=2100000)
    assert up.requests[-1]["json"]["stream"] is True


def test_json_object_mode_forces_a_tool_with_a_permissive_schema(gw: Gateway, up: FakeUpstream) -> None:
    up.script(Script(arguments='{"ok": true}'))
    with oai(gw) as c:
        done = c.chat.completions.create(model="claude", messages=ASK, response_format={"type": "json_object"})
    assert json.loads(done.choices[0].message.content or "") == {"ok": True}
    tool = up.requests[-1]["json"]["tools"][0]
    assert tool["name"] == ANSWER_TOOL and tool["input_schema"]["type"] == "object"


def test_reasoning_effort_becomes_thinking_and_comes_back_as_reasoning_content(gw: Gateway, up: FakeUpstream) -> None:
    up.script(Script(text="Paris.", thinking="The capital of France."))
    with oai(gw) as c:
        done = c.chat.completions.create(model="claude", messages=ASK, reasoning_effort="medium")
    sent = up.requests[-1]["json"]
    assert sent["thinking"] == {"type": "enabled", "budget_tokens": 4096}
    assert sent["max_tokens"] == 4096 + 4096  # the default answer room plus the budget
    message = done.choices[0].message
    assert message.content == "Paris."
    assert (message.model_extra or {})["reasoning_content"] == "The capital of France."

    up.script(Script(text="Paris.", thinking="The capital of France."))
    with oai(gw) as c:
        stream = c.chat.completions.create(
            model="claude", messages=ASK, reasoning_effort="low", max_tokens=3000, stream=True
        )
        deltas = [ch.choices[0].delta for ch in stream if ch.choices]
    assert up.requests[-1]["json"]["thinking"] == {"type": "enabled", "budget_tokens": 1024}
    thought = "".join((d.model_extra or {}).get("reasoning_content") or "" for d in deltas)
    assert thought == "The capital of France."
    assert "".join(d.content or "" for d in deltas) == "Paris."


def test_openai_parts_and_options_are_carried_and_the_rest_dropped_and_recorded(gw: Gateway, up: FakeUpstream) -> None:
    pdf = "data:application/pdf;base64,JVBERi0xLjQK"
    content: Any = [
        {"type": "text", "text": "Compare these."},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
        {"type": "file", "file": {"filename": "a.pdf", "file_data": pdf}},
    ]
    tool: Any = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}
    with oai(gw) as c:
        raw = c.chat.completions.with_raw_response.create(
            model="claude",
            messages=[{"role": "user", "content": content}],
            tools=[tool],
            parallel_tool_calls=False,
            stop=["END"],
            seed=7,
            presence_penalty=0.5,
            extra_body={"top_k": 20},
        )
    sent = up.requests[-1]["json"]
    blocks = sent["messages"][0]["content"]
    assert blocks[1] == {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.png"}}
    assert blocks[2]["source"] == {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}
    document = {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0xLjQK"}
    assert blocks[3] == {"type": "document", "source": document}
    assert sent["tool_choice"] == {"type": "auto", "disable_parallel_tool_use": True}
    assert (sent["stop_sequences"], sent["top_k"]) == (["END"], 20)
    assert "seed" not in sent and "presence_penalty" not in sent
    assert tags(gw, raw.headers["x-keel-trace-id"])["keel.dropped"] == "presence_penalty, seed"


def test_openai_fields_whose_loss_changes_the_answer_are_refused(gw: Gateway, up: FakeUpstream) -> None:
    with oai(gw) as c, pytest.raises(openai.BadRequestError) as info:
        c.chat.completions.create(model="claude", messages=ASK, logprobs=True, top_logprobs=2)
    assert "logprobs" in str(info.value)
    assert not up.requests  # nothing was sent


# ---- Anthropic client -> Anthropic target ----------------------------------------------------------


def test_messages_parse_thinking_top_k_and_betas_reach_anthropic_intact(gw: Gateway, up: FakeUpstream) -> None:
    up.script(Script(text=CITY, thinking="Paris it is."))
    thinking: Any = {"type": "enabled", "budget_tokens": 2048}
    with ant(gw) as c:
        message = c.messages.parse(
            model="claude",
            max_tokens=4000,
            messages=ASK,
            output_format=City,
            thinking=thinking,
            metadata={"user_id": "u-1"},
            service_tier="auto",
            extra_headers={"anthropic-beta": BETA},
            extra_body={"top_k": 5},
        )
    assert message.parsed_output == City(name="Paris", population=2100000)
    assert message.content[0].type == "thinking" and message.content[0].signature == SIGNATURE
    request = up.requests[-1]
    sent = request["json"]
    assert sent["thinking"] == thinking and sent["top_k"] == 5
    assert sent["output_config"]["format"]["type"] == "json_schema"
    assert sent["output_config"]["format"]["schema"]["required"] == ["name", "population"]
    assert sent["metadata"] == {"user_id": "u-1"} and sent["service_tier"] == "auto"
    assert request["headers"]["anthropic-beta"] == BETA
    assert "keel.dropped" not in tags(gw)


def test_streamed_thinking_comes_back_signed(gw: Gateway, up: FakeUpstream) -> None:
    up.script(Script(text="Paris.", thinking="Capital of France."))
    thinking: Any = {"type": "enabled", "budget_tokens": 1024}
    with ant(gw) as c, c.messages.stream(model="claude", max_tokens=2048, messages=ASK, thinking=thinking) as s:
        final = s.get_final_message()
    first = final.content[0]
    assert first.type == "thinking"
    assert (first.thinking, first.signature) == ("Capital of France.", SIGNATURE)
    assert final.content[1].type == "text" and final.content[1].text == "Paris."


def conversation() -> Any:
    """A turn that thought and called a tool, and a tool result that reports an error."""
    thought = {"type": "thinking", "thinking": "Need the weather.", "signature": "sig-1"}
    call = {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}
    result = {"type": "tool_result", "tool_use_id": "toolu_1", "content": "service down", "is_error": True}
    return [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": [thought, call]},
        {"role": "user", "content": [result]},
    ]


def test_thinking_blocks_and_tool_errors_go_back_to_anthropic_as_they_were(gw: Gateway, up: FakeUpstream) -> None:
    thinking: Any = {"type": "enabled", "budget_tokens": 1024}
    with ant(gw) as c:
        c.messages.create(model="claude", max_tokens=2048, messages=conversation(), tools=[WEATHER], thinking=thinking)
    assert up.requests[-1]["json"]["messages"] == conversation()


# ---- Anthropic client -> OpenAI-compatible target --------------------------------------------------


def test_a_strict_openai_upstream_gets_only_openai_fields(gw: Gateway, up: FakeUpstream) -> None:
    up.script(Script(strict=True, text=CITY))
    with ant(gw) as c:
        message = c.messages.parse(
            model="gpt-4o-mini",
            max_tokens=4000,
            messages=conversation(),
            tools=[WEATHER],
            output_format=City,
            thinking={"type": "enabled", "budget_tokens": 20000},
            service_tier="auto",
            extra_headers={"anthropic-beta": BETA},
            extra_body={"top_k": 5},
        )
    assert message.parsed_output == City(name="Paris", population=2100000)
    request = up.requests[-1]
    sent = request["json"]
    assert sent["reasoning_effort"] == "high"  # OpenAI takes reasoning_effort (catalog quirk)
    fmt = sent["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["schema"]["required"] == ["name", "population"]
    for field in ("thinking", "top_k", "output_config", "service_tier", "metadata"):
        assert field not in sent
    assert "anthropic-beta" not in request["headers"]
    tool_message = sent["messages"][-1]
    assert tool_message == {"role": "tool", "content": "[tool error] service down", "tool_call_id": "toolu_1"}
    assert "thinking" not in sent["messages"][1]
    dropped = tags(gw)["keel.dropped"]
    assert dropped == "anthropic-beta, messages[].thinking, service_tier, top_k"


def test_top_k_reaches_servers_that_take_it(gw: Gateway, up: FakeUpstream) -> None:
    with ant(gw) as c:
        c.messages.create(model="local", max_tokens=64, messages=ASK, extra_body={"top_k": 5})
        c.messages.create(
            model="local", max_tokens=64, messages=ASK, thinking={"type": "enabled", "budget_tokens": 1024}
        )
    with_top_k, with_thinking = (r["json"] for r in up.requests[-2:])
    assert with_top_k["top_k"] == 5
    assert "reasoning_effort" not in with_thinking and "thinking" not in with_thinking  # vLLM: no quirk


def test_anthropic_fields_whose_loss_changes_the_answer_are_refused(gw: Gateway, up: FakeUpstream) -> None:
    server: Any = {"type": "url", "url": "https://mcp.example.com/sse", "name": "docs"}
    with ant(gw) as c, pytest.raises(anthropic.BadRequestError) as info:
        c.messages.create(model="gpt-4o-mini", max_tokens=64, messages=ASK, extra_body={"mcp_servers": [server]})
    assert "mcp_servers" in str(info.value)
    assert not up.requests
