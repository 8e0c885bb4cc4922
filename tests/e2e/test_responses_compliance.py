"""The Open Responses compliance cases (openresponses.org/compliance), run against Keel over HTTP.

The official runner (bin/compliance-test.ts in github.com/openresponses/openresponses) is TypeScript
under bun, validating with zod schemas generated from the spec's OpenAPI document; its repository
cannot be fetched here. Here its seven cases (same request bodies, same semantic checks; the
newer suite's opt-in file_search and web_search cases need hosted tools, which Keel refuses) validate Keel's answers with
`openresponses-types`, pydantic models generated from the same document (spec 2026-04-24): every
final Response as a `ResponseResource`, every streamed event as one of the spec's streaming events.
Each case runs on an OpenAI-served and an Anthropic-served alias, with the fake upstream answering.
"""

from __future__ import annotations

from typing import Any

import httpx
import openresponses_types as spec
import orjson
import pytest
from pydantic import TypeAdapter

from keel.testing import FakeUpstream, Script
from tests.conftest import Gateway

EVENT: TypeAdapter[Any] = TypeAdapter(
    spec.ResponseCreatedStreamingEvent
    | spec.ResponseQueuedStreamingEvent
    | spec.ResponseInProgressStreamingEvent
    | spec.ResponseCompletedStreamingEvent
    | spec.ResponseFailedStreamingEvent
    | spec.ResponseIncompleteStreamingEvent
    | spec.ResponseOutputItemAddedStreamingEvent
    | spec.ResponseOutputItemDoneStreamingEvent
    | spec.ResponseContentPartAddedStreamingEvent
    | spec.ResponseContentPartDoneStreamingEvent
    | spec.ResponseOutputTextDeltaStreamingEvent
    | spec.ResponseOutputTextDoneStreamingEvent
    | spec.ResponseFunctionCallArgumentsDeltaStreamingEvent
    | spec.ResponseFunctionCallArgumentsDoneStreamingEvent
    | spec.ErrorStreamingEvent
)
WEATHER: Any = {
    "type": "function",
    "name": "get_weather",
    "description": "Get the current weather for a location",
    "parameters": {
        "type": "object",
        "properties": {"location": {"type": "string", "description": "The city and state, e.g. San Francisco, CA"}},
        "required": ["location"],
    },
}
IMAGE = "https://www.google.com/images/branding/googlelogo/2x/googlelogo_color_272x92dp.png"  # Keel never fetches it


def user(text: str) -> Any:
    return {"type": "message", "role": "user", "content": text}


CASES: dict[str, tuple[Any, bool]] = {  # id: (body, streamed)
    "basic-response": ({"input": [user("Say hello in exactly 3 words.")]}, False),
    "streaming-response": ({"input": [user("Count from 1 to 5.")]}, True),
    "system-prompt": (
        {
            "input": [
                {"type": "message", "role": "system", "content": "You are a pirate. Always respond in pirate speak."},
                user("Say hello."),
            ]
        },
        False,
    ),
    "tool-calling": ({"input": [user("What's the weather like in San Francisco?")], "tools": [WEATHER]}, False),
    "tool-calling-streaming": (
        {"input": [user("What's the weather like in San Francisco?")], "tools": [WEATHER]},
        True,
    ),
    "image-input": (
        {
            "input": [
                {
                    "type": "message",
                    "role": "user",
                    "content": [
                        {"type": "input_text", "text": "What do you see in this image? Answer in one sentence."},
                        {"type": "input_image", "image_url": IMAGE},
                    ],
                }
            ]
        },
        False,
    ),
    "multi-turn": (
        {
            "input": [
                user("My name is Alice."),
                {
                    "type": "message",
                    "role": "assistant",
                    "content": "Hello Alice! Nice to meet you. How can I help you today?",
                },
                user("What is my name?"),
            ]
        },
        False,
    ),
}


def events_of(raw: str) -> list[Any]:
    out = []
    for frame in raw.strip().split("\n\n"):
        data = next(line[5:].strip() for line in frame.split("\n") if line.startswith("data:"))
        out.append(orjson.loads(data))
    return out


@pytest.mark.parametrize("alias", ["gpt-4o-mini", "claude"])
@pytest.mark.parametrize("case", list(CASES))
def test_open_responses_compliance_case(gateway: Gateway, up: FakeUpstream, alias: str, case: str) -> None:
    body, streamed = CASES[case]
    if "tools" in body:
        up.script(Script(tool_call=True))
    request = {"model": alias, **body, "stream": streamed}
    headers = {"authorization": f"Bearer {gateway.key}"}
    with httpx.stream("POST", gateway.url + "/v1/responses", json=request, headers=headers, timeout=10) as r:
        raw = r.read().decode()
        assert r.status_code == 200, raw
    if streamed:
        events = events_of(raw)
        assert events, "No streaming events received"
        for event in events:
            EVENT.validate_python(event)  # the spec's schema for each event
        final = next(e["response"] for e in events if e["type"] in ("response.completed", "response.failed"))
    else:
        final = orjson.loads(raw)
    response = spec.ResponseResource.model_validate(final)
    assert response.output, "Response has no output items"
    if "tools" in body:
        assert any(item.type == "function_call" for item in response.output)  # type: ignore[union-attr]
        if streamed:
            kinds = [e["type"] for e in events]
            assert any(
                e["type"] == "response.output_item.added" and e["item"]["type"] == "function_call" for e in events
            )
            assert "response.function_call_arguments.delta" in kinds
            assert "response.function_call_arguments.done" in kinds
            assert any(
                e["type"] == "response.output_item.done" and e["item"]["type"] == "function_call" for e in events
            )
    else:
        assert response.status == "completed"
