"""The fake upstream's Gemini and Bedrock routes, checked by the official AWS SDK (boto3 signs the
requests and parses the event stream with its own code) and by plain HTTP."""

from __future__ import annotations

from typing import Any

import boto3
import httpx
import pytest
from botocore.exceptions import ClientError

from keel.testing import FakeUpstream, Script
from keel.testing.fake_cloud import AWS_KEYS

KEY_ID, SECRET = next(iter(AWS_KEYS.items()))
MODEL = "amazon.nova-pro-v1:0"
ASK: Any = [{"role": "user", "content": [{"text": "hello there"}]}]


def bedrock(up: FakeUpstream, secret: str = SECRET) -> Any:
    return boto3.client(
        "bedrock-runtime",
        endpoint_url=up.url,
        region_name="us-east-1",
        aws_access_key_id=KEY_ID,
        aws_secret_access_key=secret,
    )


def test_boto3_converse_is_answered(up: FakeUpstream) -> None:
    reply = bedrock(up).converse(modelId=MODEL, messages=ASK, system=[{"text": "be brief"}])
    assert reply["output"]["message"]["content"] == [{"text": "echo: hello there"}]
    assert reply["stopReason"] == "end_turn" and reply["usage"]["outputTokens"] == 3


def test_boto3_reads_the_fakes_event_stream(up: FakeUpstream) -> None:
    up.script(Script(tool_call=True))
    tools = {"tools": [{"toolSpec": {"name": "get_weather", "inputSchema": {"json": {"type": "object"}}}}]}
    events = list(bedrock(up).converse_stream(modelId=MODEL, messages=ASK, toolConfig=tools)["stream"])
    names = [next(iter(e)) for e in events]
    assert names[0] == "messageStart" and names[-3:] == ["contentBlockStop", "messageStop", "metadata"]
    arguments = "".join(e["contentBlockDelta"]["delta"]["toolUse"]["input"] for e in events if "contentBlockDelta" in e)
    assert arguments == '{"city": "Paris"}' and events[-2]["messageStop"]["stopReason"] == "tool_use"


def test_boto3_with_a_wrong_secret_gets_a_403(up: FakeUpstream) -> None:
    with pytest.raises(ClientError) as info:
        bedrock(up, secret="wrong").converse(modelId=MODEL, messages=ASK)
    assert info.value.response["Error"]["Code"] == "InvalidSignatureException"
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403


def test_boto3_sees_a_throttling_exception_by_name(up: FakeUpstream) -> None:
    up.script(*[Script(status=429)] * 5)  # boto3 retries throttling itself
    with pytest.raises(ClientError) as info:
        bedrock(up).converse(modelId=MODEL, messages=ASK)
    assert info.value.response["Error"]["Code"] == "ThrottlingException"


def test_an_unsigned_bedrock_request_is_refused(up: FakeUpstream) -> None:
    r = httpx.post(f"{up.url}/model/{MODEL}/converse", json={"messages": ASK})
    assert r.status_code == 403 and r.headers["x-amzn-errortype"] == "UnrecognizedClientException"


def test_gemini_streams_only_as_sse(up: FakeUpstream) -> None:
    body = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
    url = f"{up.url}/v1beta/models/gemini-2.5-flash:streamGenerateContent"
    assert httpx.post(url, json=body).status_code == 404
    r = httpx.post(url + "?alt=sse", json=body)
    assert r.headers["content-type"].startswith("text/event-stream") and '"finishReason": "STOP"' in r.text
