"""End to end over real HTTP: the official openai SDK's Responses calls → Keel's /v1/responses → the fake
upstream, answering as an OpenAI-compatible server or as Anthropic.

Every test runs on SQLite and PostgreSQL (the `gateway` fixture), since conversation state lives in
the store; most run against an OpenAI-served and an Anthropic-served alias.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest
from pydantic import BaseModel

from keel.keys.auth import issue_key
from keel.testing import FakeUpstream, Script
from tests.conftest import Gateway, base_config
from tests.e2e.nodeclients import node_dir

ALIASES = ["gpt-4o-mini", "claude"]
SERVED = {"gpt-4o-mini": "gpt-4o-mini", "claude": "claude-sonnet-4-5"}
WEATHER: Any = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    "strict": False,
}


def client(gw: Gateway, key: str | None = None) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.base_url, api_key=key or gw.key, max_retries=0, timeout=10)


def post(gw: Gateway, body: Any, key: str | None = None) -> httpx.Response:
    return httpx.post(gw.url + "/v1/responses", json=body, headers={"authorization": f"Bearer {key or gw.key}"})


def sent(up: FakeUpstream) -> Any:
    return up.requests[-1]["json"]


def conversation(body: Any, alias: str) -> list[tuple[str, Any]]:
    """(role, content) of what the upstream was sent, in OpenAI's shape or Anthropic's."""
    turns = [("system", body["system"])] if alias == "claude" and "system" in body else []
    return turns + [(m["role"], m.get("content")) for m in body["messages"]]


# ---- plain, both modes ------------------------------------------------------------------------


@pytest.mark.parametrize("alias", ALIASES)
def test_create_plain(gateway: Gateway, up: FakeUpstream, alias: str) -> None:
    with client(gateway) as c:
        raw = c.responses.with_raw_response.create(
            model=alias, input="hello there", instructions="be brief", max_output_tokens=50, metadata={"team": "a"}
        )
    r = raw.parse()
    assert r.output_text == "echo: hello there"
    assert (r.object, r.status, r.model, r.error) == ("response", "completed", SERVED[alias], None)
    assert r.id.startswith("resp_") and r.id == f"resp_{raw.headers['x-keel-trace-id']}"
    assert r.output[0].type == "message" and r.output[0].role == "assistant" and r.output[0].status == "completed"
    assert r.usage is not None and r.usage.output_tokens == 3 and r.usage.input_tokens > 0
    assert r.usage.total_tokens == r.usage.input_tokens + r.usage.output_tokens
    assert (r.instructions, r.max_output_tokens, r.metadata, r.store) == ("be brief", 50, {"team": "a"}, True)
    body = sent(up)
    assert conversation(body, alias) == [("system", "be brief"), ("user", "hello there")]
    assert body["max_tokens"] == 50
    assert raw.headers["x-keel-provider"] == ("ant" if alias == "claude" else "oai")
    t = gateway.traces()[0]
    assert (t.endpoint, t.tenant, t.status, t.alias, t.id) == (
        "responses",
        "t1",
        "ok",
        alias,
        raw.headers["x-keel-trace-id"],
    )
    assert t.output_tokens == 3 and t.cost_usd is not None and t.cost_usd > 0 and t.tags["team"] == "a"


@pytest.mark.parametrize("alias", ALIASES)
def test_stream(gateway: Gateway, up: FakeUpstream, alias: str) -> None:
    kinds: list[str] = []
    deltas: list[str] = []
    numbers: list[int] = []
    with client(gateway) as c, c.responses.stream(model=alias, input="hello there", instructions="be brief") as s:
        for event in s:
            kinds.append(event.type)
            numbers.append(event.sequence_number)
            if event.type == "response.output_text.delta":
                deltas.append(event.delta)
        final = s.get_final_response()
    assert "".join(deltas) == "echo: hello there" == final.output_text
    assert kinds[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert kinds[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert numbers == list(range(len(kinds)))
    assert final.status == "completed" and final.model == SERVED[alias]
    assert final.usage is not None and final.usage.output_tokens == 3 and final.usage.input_tokens > 0
    with client(gateway) as c:  # stored before `response.completed` went out
        assert c.responses.retrieve(final.id).output_text == "echo: hello there"
    t = gateway.traces()[0]
    assert t.stream and t.endpoint == "responses" and t.output_tokens == 3 and t.ttft_ms is not None


def test_raw_stream_is_well_formed_sse(gateway: Gateway, up: FakeUpstream) -> None:
    body = {"model": "gpt-4o-mini", "input": "hi", "stream": True}
    headers = {"authorization": f"Bearer {gateway.key}"}
    with httpx.stream("POST", gateway.url + "/v1/responses", json=body, headers=headers) as r:
        raw = r.read().decode()
        assert r.headers["content-type"].startswith("text/event-stream")
        assert r.headers["cache-control"] == "no-cache" and r.headers["x-accel-buffering"] == "no"
    frames = [frame.split("\n") for frame in raw.strip().split("\n\n")]
    assert all(f[0].startswith("event: response.") and f[1].startswith("data: {") for f in frames)
    assert frames[-1][0] == "event: response.completed"


# ---- tools, and the second turn by previous_response_id ---------------------------------------


@pytest.mark.parametrize("alias", ALIASES)
@pytest.mark.parametrize("stream", [False, True])
def test_tools_second_turn(gateway: Gateway, up: FakeUpstream, alias: str, stream: bool) -> None:
    up.script(Script(tool_call=True))
    with client(gateway) as c:
        first: Any
        if stream:
            with c.responses.stream(model=alias, input="weather in Paris?", tools=[WEATHER]) as s:
                kinds = [e.type for e in s]
                first = s.get_final_response()
            assert "response.function_call_arguments.delta" in kinds
            assert "response.function_call_arguments.done" in kinds
        else:
            first = c.responses.create(model=alias, input="weather in Paris?", tools=[WEATHER], tool_choice="auto")
        call = first.output[-1]
        assert call.type == "function_call" and call.name == "get_weather"
        assert call.arguments.replace(" ", "") == '{"city":"Paris"}' and call.call_id
        assert first.tools[0].name == "get_weather"
        tool_sent = sent(up)["tools"][0]
        assert tool_sent["name" if alias == "claude" else "function"] == (
            "get_weather" if alias == "claude" else {k: v for k, v in WEATHER.items() if k != "type"}
        )
        second = c.responses.create(
            model=alias,
            previous_response_id=first.id,
            input=[{"type": "function_call_output", "call_id": call.call_id, "output": "sunny, 21 C"}],
            tools=[WEATHER],
        )
    assert second.previous_response_id == first.id
    # the fake echoes the last user turn: Anthropic's carries the tool result
    assert second.output_text == ("echo: sunny, 21 C" if alias == "claude" else "echo: weather in Paris?")
    body = sent(up)
    if alias == "claude":
        assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]
        use, result = body["messages"][1]["content"][-1], body["messages"][2]["content"][0]
        assert (use["type"], use["id"], use["input"]) == ("tool_use", call.call_id, {"city": "Paris"})
        assert (result["type"], result["tool_use_id"], result["content"]) == (
            "tool_result",
            call.call_id,
            "sunny, 21 C",
        )
    else:
        assert [m["role"] for m in body["messages"]] == ["user", "assistant", "tool"]
        assert body["messages"][1]["tool_calls"][0]["id"] == call.call_id
        assert body["messages"][2] == {"role": "tool", "content": "sunny, 21 C", "tool_call_id": call.call_id}


def test_three_turns_keep_the_whole_conversation(gateway: Gateway, up: FakeUpstream) -> None:
    with client(gateway) as c:
        r1 = c.responses.create(model="gpt-4o-mini", input="one", instructions="first rules")
        r2 = c.responses.create(model="gpt-4o-mini", input="two", previous_response_id=r1.id)
        c.responses.create(model="gpt-4o-mini", input="three", previous_response_id=r2.id, instructions="new rules")
    assert conversation(sent(up), "gpt-4o-mini") == [
        ("system", "new rules"),  # instructions are never carried over
        ("user", "one"),
        ("assistant", "echo: one"),
        ("user", "two"),
        ("assistant", "echo: two"),
        ("user", "three"),
    ]


# ---- structured output --------------------------------------------------------------------------


class Weather(BaseModel):
    city: str
    celsius: int


@pytest.mark.parametrize("alias", ALIASES)
@pytest.mark.parametrize("stream", [False, True])
def test_parse_with_a_pydantic_model(gateway: Gateway, up: FakeUpstream, alias: str, stream: bool) -> None:
    up.script(Script(text='{"city": "Paris", "celsius": 21}'))
    with client(gateway) as c:
        if stream:
            with c.responses.stream(model=alias, input="weather in Paris?", text_format=Weather) as s:
                r = s.get_final_response()
        else:
            r = c.responses.parse(model=alias, input="weather in Paris?", text_format=Weather)
    assert r.output_parsed == Weather(city="Paris", celsius=21)
    assert r.text is not None and r.text.format.type == "json_schema"
    body = sent(up)
    if alias == "claude":  # the model's native structured output (the translation's, see test_translation.py)
        fmt = body["output_config"]["format"]
        assert fmt["type"] == "json_schema" and fmt["schema"]["required"] == ["city", "celsius"]
    else:
        fmt = body["response_format"]
        assert fmt["type"] == "json_schema" and fmt["json_schema"]["name"] == "Weather"
        assert fmt["json_schema"]["strict"] is True and fmt["json_schema"]["schema"]["required"] == ["city", "celsius"]


def test_parse_through_a_forced_answer_tool(make_gateway: Any, up: FakeUpstream, tmp_path: Any) -> None:
    """An Anthropic model without native structured output answers through a forced tool; the Response
    still carries the JSON as its text, not as a function call."""
    raw = base_config(up, f"sqlite:///{tmp_path}/keel.db", tmp_path)
    raw["models"]["claude-old"] = {"targets": [{"provider": "ant", "model": "claude-3-5-haiku-latest"}]}
    gw = make_gateway(raw)
    up.script(Script(arguments='{"city": "Paris", "celsius": 21}'))
    with client(gw) as c:
        r = c.responses.parse(model="claude-old", input="weather in Paris?", text_format=Weather)
    assert r.output_parsed == Weather(city="Paris", celsius=21)
    assert [o.type for o in r.output] == ["message"] and r.status == "completed"
    assert sent(up)["tool_choice"]["type"] == "tool"


# ---- stored responses: retrieve, input items, delete, tenants -----------------------------------


def test_retrieve_list_input_items_and_delete(gateway: Gateway, up: FakeUpstream) -> None:
    items: Any = [
        {"role": "developer", "content": "be brief"},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hello"}]},
    ]
    with client(gateway) as c:
        r = c.responses.create(model="gpt-4o-mini", input=items)
        got = c.responses.retrieve(r.id)
        assert got.model_dump() == r.model_dump()
        listed = c.responses.input_items.list(r.id, order="asc")
        assert [(i.type, i.role) for i in listed.data] == [("message", "developer"), ("message", "user")]  # type: ignore[union-attr]
        assert listed.data[1].content[0].text == "hello"  # type: ignore[union-attr]
        newest = c.responses.input_items.list(r.id, limit=1)
        assert newest.data[0].id == listed.data[1].id and newest.has_more
        c.responses.delete(r.id)
        with pytest.raises(openai.NotFoundError) as err:
            c.responses.retrieve(r.id)
        assert err.value.body["message"] == f"Response with id '{r.id}' not found."  # type: ignore[index]
        with pytest.raises(openai.NotFoundError):
            c.responses.delete(r.id)


def test_unknown_previous_response_is_404(gateway: Gateway, up: FakeUpstream) -> None:
    r = post(gateway, {"model": "gpt-4o-mini", "input": "hi", "previous_response_id": "resp_nope"})
    assert r.status_code == 404
    assert r.json()["error"] == {
        "message": "Previous response with id 'resp_nope' not found.",
        "type": "invalid_request_error",
        "param": "previous_response_id",
        "code": "previous_response_not_found",
    }
    assert up.requests == []


def test_store_false_keeps_nothing(gateway: Gateway, up: FakeUpstream) -> None:
    with client(gateway) as c:
        r = c.responses.create(model="gpt-4o-mini", input="hi", store=False)
        assert r.store is False and r.output_text == "echo: hi"
        with pytest.raises(openai.NotFoundError):
            c.responses.retrieve(r.id)
        with pytest.raises(openai.NotFoundError):
            c.responses.create(model="gpt-4o-mini", input="again", previous_response_id=r.id)


def test_another_tenant_sees_nothing(gateway: Gateway, up: FakeUpstream) -> None:
    gateway.runtime.store.create_tenant("t2")
    other = issue_key(gateway.runtime.store, "t2", name="other").key
    with client(gateway) as c:
        r = c.responses.create(model="gpt-4o-mini", input="secret plans")
    with client(gateway, other) as c2:
        with pytest.raises(openai.NotFoundError):
            c2.responses.retrieve(r.id)
        with pytest.raises(openai.NotFoundError):
            c2.responses.input_items.list(r.id)
        with pytest.raises(openai.NotFoundError):
            c2.responses.delete(r.id)
        with pytest.raises(openai.NotFoundError):
            c2.responses.create(model="gpt-4o-mini", input="continue", previous_response_id=r.id)
    with client(gateway) as c:
        assert c.responses.retrieve(r.id).output_text == "echo: secret plans"  # still there for its owner


def test_purge_and_retention_delete_stored_responses(gateway: Gateway, up: FakeUpstream) -> None:
    with client(gateway) as c:
        r = c.responses.create(model="gpt-4o-mini", input="hi", user="u1")
        kept = c.responses.create(model="gpt-4o-mini", input="hi", user="u2")
    admin = {"authorization": f"Bearer {gateway.admin}"}
    report = httpx.post(gateway.url + "/api/tenants/t1/purge", json={"user": "u1"}, headers=admin).json()["counts"]
    assert report["responses"] == 1
    store = gateway.runtime.store
    assert store.get_response("t1", r.id) is None and store.get_response("t1", kept.id) is not None
    assert store.delete_responses(limit=10, before=time.time() + 1) == 1  # what a sweep past its cut-off runs


# ---- refusals name the field --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": [{"role": "user", "content": "a"}, {"type": "web_search_call", "id": "x"}]}, "input[1].type"),
        ({"input": "a", "tools": [{"type": "web_search"}]}, "tools[0].type"),
        ({"input": "a", "text": {"format": {"type": "json_schema", "schema": {}}}}, "text.format.name"),
        ({"input": "a", "reasoning": {"effort": "huge"}}, "reasoning.effort"),
        ({"input": "a", "frobnicate": True}, "frobnicate"),
        ({"input": "a", "background": True}, "background"),
        ({"input": [{"type": "function_call_output", "output": "x"}]}, "input[0].call_id"),
        ({"input": 5}, "input"),
    ],
)
def test_refusals_name_the_field(gateway: Gateway, up: FakeUpstream, body: Any, param: str) -> None:
    r = post(gateway, {"model": "gpt-4o-mini", **body})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param and r.json()["error"]["type"] == "invalid_request_error"
    assert up.requests == []


def test_failure_mid_stream_is_response_failed(gateway: Gateway, up: FakeUpstream) -> None:
    up.script(Script(text="one two three four", cut_after=2), Script(status=500), Script(status=500))
    body = {"model": "gpt-4o-mini", "input": "hi", "stream": True}
    headers = {"authorization": f"Bearer {gateway.key}"}
    with httpx.stream("POST", gateway.url + "/v1/responses", json=body, headers=headers) as r:
        raw = r.read().decode()
    kinds = [frame.split("\n")[0].removeprefix("event: ") for frame in raw.strip().split("\n\n")]
    assert "response.output_text.delta" in kinds
    assert kinds[-2:] == ["error", "response.failed"] and "response.completed" not in kinds


# ---- pydantic-ai's default OpenAI model (the Responses API) ------------------------------------


@pytest.mark.parametrize("alias", ALIASES)
@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("chained", [False, True])
def test_pydantic_ai_agent_with_a_tool(
    gateway: Gateway, up: FakeUpstream, alias: str, stream: bool, chained: bool
) -> None:
    """`chained`: pydantic-ai's `openai_previous_response_id='auto'`, sending only what is new after
    the previous response, which Keel's store then supplies."""
    from pydantic_ai import Agent
    from pydantic_ai.models.openai import OpenAIResponsesModel
    from pydantic_ai.providers.openai import OpenAIProvider

    up.script(Script(tool_call=True), Script(text="It is sunny in Paris."))
    asked: list[str] = []

    def get_weather(city: str) -> str:
        """Weather in a city."""
        asked.append(city)
        return "sunny, 21 C"

    async def run() -> str:
        # the SDK client, closed here: no socket outlives this event loop
        async with openai.AsyncOpenAI(base_url=gateway.base_url, api_key=gateway.key, max_retries=0) as sdk:
            settings: Any = {"openai_previous_response_id": "auto"} if chained else {}
            model = OpenAIResponsesModel(alias, provider=OpenAIProvider(openai_client=sdk), settings=settings)
            agent = Agent(model, instructions="Be concise.", tools=[get_weather])
            if not stream:
                return (await agent.run("Weather in Paris?")).output
            async with agent.run_stream("Weather in Paris?") as result:
                return await result.get_output()

    assert asyncio.run(run()) == "It is sunny in Paris."
    assert asked == ["Paris"]
    first, second = (r["json"] for r in up.requests[-2:])
    assert conversation(first, alias)[0] == ("system", "Be concise.")
    if alias == "claude":
        blocks = [b for m in second["messages"] if isinstance(m["content"], list) for b in m["content"]]
        results = [b["content"] for b in blocks if b["type"] == "tool_result"]
    else:
        results = [m["content"] for m in second["messages"] if m["role"] == "tool"]
    assert results == ["sunny, 21 C"]
    rows = sorted(gateway.traces(), key=lambda t: t.started_at)
    assert [t.endpoint for t in rows] == ["responses", "responses"]
    assert ("previous_response_id" in rows[1].request) is chained


@pytest.mark.parametrize("stream", [False, True])
def test_reasoning_effort_thinks_on_anthropic_and_returns_reasoning_items(
    gateway: Gateway, up: FakeUpstream, stream: bool
) -> None:
    up.script(Script(text="Paris.", thinking="The capital of France."))
    args: Any = {"model": "claude", "input": "Capital of France?", "reasoning": {"effort": "medium"}}
    with client(gateway) as c:
        if stream:
            with c.responses.stream(**args) as s:
                kinds = [e.type for e in s]
                r = s.get_final_response()
            assert "response.reasoning_text.delta" in kinds and "response.reasoning_text.done" in kinds
        else:
            r = c.responses.create(**args)
    assert sent(up)["thinking"]["type"] == "enabled"
    assert [o.type for o in r.output] == ["reasoning", "message"] and r.output_text == "Paris."
    assert r.output[0].content[0].text == "The capital of France."  # type: ignore[union-attr,index]
    assert r.reasoning is not None and r.reasoning.effort == "medium"


# ---- the Vercel AI SDK's default OpenAI model (the Responses API), in Node --------------------------


@pytest.mark.timeout(400)  # the first Node test may install the packages (npm ci, at most 300 s)
@pytest.mark.parametrize("alias", ALIASES)
def test_vercel_ai_sdk(gateway: Gateway, up: FakeUpstream, alias: str) -> None:
    node = node_dir()
    up.script(
        Script(tool_call=True),
        Script(text="It is sunny in Paris."),
        Script(),
        Script(text='{"city": "Paris", "celsius": 21}'),
    )
    done = subprocess.run(
        ["node", str(node / "responses.mjs"), gateway.base_url, gateway.key, alias],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["loop"] == {"text": "It is sunny in Paris.", "steps": 2, "asked": ["Paris"]}
    assert out["stream"]["text"] == "echo: hello there" and out["stream"]["usage"]["outputTokens"] == 3
    assert out["object"] == {"city": "Paris", "celsius": 21}
    assert out["recall"] == "echo: what is my name?"
    second = up.requests[-1]["json"]
    assert [t.endpoint for t in gateway.traces()] == ["responses"] * 6
    last = max(gateway.traces(), key=lambda t: t.started_at)
    assert last.request["input"][1]["type"] == "item_reference"  # the SDK named its stored first answer
    turns = conversation(second, alias)
    assert turns[-2:] == [("assistant", "echo: my name is Ada"), ("user", "what is my name?")]


def test_item_references_name_stored_items(gateway: Gateway, up: FakeUpstream) -> None:
    """The AI SDK sends earlier assistant turns as `item_reference`s when responses are stored."""
    with client(gateway) as c:
        first = c.responses.create(model="gpt-4o-mini", input="my name is Ada")
        items: Any = [
            {"role": "user", "content": "my name is Ada"},
            {"type": "item_reference", "id": first.output[0].id},
            {"role": "user", "content": "what is my name?"},
        ]
        c.responses.create(model="gpt-4o-mini", input=items)
        assert conversation(sent(up), "gpt-4o-mini") == [
            ("user", "my name is Ada"),
            ("assistant", "echo: my name is Ada"),
            ("user", "what is my name?"),
        ]
        with pytest.raises(openai.NotFoundError):
            c.responses.create(model="gpt-4o-mini", input=[{"type": "item_reference", "id": "msg_nope_0"}])
    gateway.runtime.store.create_tenant("t2")
    other = issue_key(gateway.runtime.store, "t2", name="other").key
    with client(gateway, other) as c2, pytest.raises(openai.NotFoundError):
        c2.responses.create(model="gpt-4o-mini", input=[{"type": "item_reference", "id": first.output[0].id}])


def test_a_responses_call_replays_unless_it_continues_a_conversation(gateway: Gateway, up: FakeUpstream) -> None:
    admin = {"authorization": f"Bearer {gateway.admin}"}
    with client(gateway) as c:
        raw = c.responses.with_raw_response.create(model="gpt-4o-mini", input="hello", instructions="be brief")
        first = raw.parse()
        sent_first = sent(up)
        later = c.responses.with_raw_response.create(model="gpt-4o-mini", input="more", previous_response_id=first.id)
    gateway.traces()  # the writer has flushed both calls' traces
    r = httpx.post(f"{gateway.url}/api/traces/{raw.headers['x-keel-trace-id']}/replay", headers=admin, timeout=30)
    assert r.status_code == 200, r.text
    assert r.json()["replay"]["content"] == "echo: hello" and sent(up) == sent_first
    r = httpx.post(f"{gateway.url}/api/traces/{later.headers['x-keel-trace-id']}/replay", headers=admin, timeout=30)
    assert r.status_code == 400 and "continues a stored conversation" in r.json()["error"]["message"]


# ---- a target that speaks the Responses API itself (catalog type openai-responses) -----------------


@pytest.fixture
def resp_gw(make_gateway: Any, up: FakeUpstream, tmp_path: Path) -> Gateway:
    raw = base_config(up, f"sqlite:///{tmp_path}/keel.db", tmp_path)
    raw["providers"]["oair"] = {"type": "openai-responses", "base_url": up.url + "/v1", "api_key": "sk-up"}
    raw["models"]["resp"] = {"targets": [{"provider": "oair", "model": "gpt-5"}]}
    return make_gateway(raw)  # type: ignore[no-any-return]


@pytest.mark.parametrize("stream", [False, True])
def test_chat_clients_reach_a_responses_upstream(resp_gw: Gateway, up: FakeUpstream, stream: bool) -> None:
    up.script(Script(tool_call=True), Script(text="Sunny."))
    ask: Any = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "weather in Paris?"}]
    tools: Any = [{"type": "function", "function": {k: v for k, v in WEATHER.items() if k != "type"}}]
    with openai.OpenAI(base_url=resp_gw.base_url, api_key=resp_gw.key, max_retries=0, timeout=10) as c:
        if stream:
            usage: Any = {"include_usage": True}
            with c.chat.completions.stream(
                model="resp", messages=ask, tools=tools, max_tokens=99, stream_options=usage
            ) as s:
                first = s.get_final_completion()
        else:
            first = c.chat.completions.create(model="resp", messages=ask, tools=tools, max_tokens=99)
        call = first.choices[0].message.tool_calls[0]  # type: ignore[index]
        assert first.choices[0].finish_reason == "tool_calls" and call.function.name == "get_weather"  # type: ignore[union-attr]
        assert first.usage is not None and first.usage.completion_tokens > 0
        body = sent(up)
        assert up.requests[-1]["path"] == "/v1/responses" and body["store"] is False
        assert body["input"] == [
            {"type": "message", "role": "system", "content": "be brief"},
            {"type": "message", "role": "user", "content": "weather in Paris?"},
        ]
        assert body["max_output_tokens"] == 99 and body["tools"][0]["name"] == "get_weather"
        turn: Any = [
            *ask,
            first.choices[0].message.model_dump(exclude_none=True, exclude={"parsed"}),
            {"role": "tool", "tool_call_id": call.id, "content": "sunny"},
        ]
        second = c.chat.completions.create(model="resp", messages=turn, tools=tools)
    assert second.choices[0].message.content == "Sunny."
    items = sent(up)["input"]
    assert items[2] == {
        "type": "function_call",
        "call_id": call.id,
        "name": "get_weather",
        "arguments": call.function.arguments,
    }  # type: ignore[union-attr]
    assert items[3] == {"type": "function_call_output", "call_id": call.id, "output": "sunny"}


@pytest.mark.parametrize("stream", [False, True])
def test_responses_and_anthropic_clients_reach_a_responses_upstream(
    resp_gw: Gateway, up: FakeUpstream, stream: bool
) -> None:
    up.script(Script(text="Paris.", thinking="France's capital."))
    with client(resp_gw) as c:
        args: Any = {"model": "resp", "input": "Capital of France?", "reasoning": {"effort": "low"}}
        if stream:
            with c.responses.stream(**args) as s:
                r = s.get_final_response()
        else:
            r = c.responses.create(**args)
    assert r.output_text == "Paris." and [o.type for o in r.output] == ["reasoning", "message"]
    assert sent(up)["reasoning"] == {"effort": "low"}
    with anthropic.Anthropic(base_url=resp_gw.url, api_key=resp_gw.key, max_retries=0, timeout=10) as a:
        m = a.messages.create(model="resp", max_tokens=50, messages=[{"role": "user", "content": "hi"}])
    assert m.content[-1].type == "text" and m.content[-1].text == "echo: hi"
    assert sent(up)["max_output_tokens"] == 50


def test_stop_cannot_reach_a_responses_upstream(resp_gw: Gateway, up: FakeUpstream) -> None:
    c = openai.OpenAI(base_url=resp_gw.base_url, api_key=resp_gw.key, max_retries=0, timeout=10)
    with c, pytest.raises(openai.BadRequestError) as err:
        c.chat.completions.create(model="resp", messages=[{"role": "user", "content": "hi"}], stop=["x"])
    assert err.value.body["param"] == "stop"  # type: ignore[index]
    assert up.requests == []


def test_a_conversation_with_a_deleted_turn_is_404_not_a_shorter_history(gateway: Gateway, up: FakeUpstream) -> None:
    with client(gateway) as c:
        a = c.responses.create(model="gpt-4o-mini", input="one")
        b = c.responses.create(model="gpt-4o-mini", input="two", previous_response_id=a.id)
        last = c.responses.create(model="gpt-4o-mini", input="three", previous_response_id=b.id)
        c.responses.delete(b.id)
        with pytest.raises(openai.NotFoundError) as err:
            c.responses.create(model="gpt-4o-mini", input="four", previous_response_id=last.id)
    assert err.value.body["message"] == f"Previous response with id '{b.id}' not found."  # type: ignore[index]


def test_an_unreadable_store_is_a_503_to_retry(make_gateway: Any, up: FakeUpstream, tmp_path: Path) -> None:
    import sqlite3

    gw = make_gateway(base_config(up, f"sqlite:///{tmp_path}/keel.db", tmp_path))
    with client(gw) as c:
        first = c.responses.create(model="gpt-4o-mini", input="hi")
        with sqlite3.connect(tmp_path / "keel.db") as db:  # the table goes from under the gateway
            db.execute("DROP TABLE responses")
        r = post(gw, {"model": "gpt-4o-mini", "input": "more", "previous_response_id": first.id})
        assert r.status_code == 503 and r.headers["retry-after"] == "1"
        assert r.json()["error"]["code"] == "service_unavailable"
        assert (
            httpx.get(f"{gw.base_url}/responses/{first.id}", headers={"authorization": f"Bearer {gw.key}"}).status_code
            == 503
        )
        assert c.responses.create(model="gpt-4o-mini", input="still served").output_text == "echo: still served"


def test_a_gateway_configured_to_keep_no_responses(make_gateway: Any, up: FakeUpstream, tmp_path: Path) -> None:
    raw = base_config(up, f"sqlite:///{tmp_path}/keel.db", tmp_path) | {"responses": {"store": False}}
    gw = make_gateway(raw)
    with client(gw) as c:
        r = c.responses.create(model="gpt-4o-mini", input="hi")  # `store` defaults to true: Keel says false
        assert r.store is False and r.output_text == "echo: hi"
        with pytest.raises(openai.NotFoundError):
            c.responses.retrieve(r.id)
    refused = post(gw, {"model": "gpt-4o-mini", "input": "more", "previous_response_id": r.id})
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "previous_response_id"
    assert "responses.store: false" in refused.json()["error"]["message"]
    assert gw.runtime.store.response_chain("t1", r.id) == []
