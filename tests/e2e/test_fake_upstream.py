"""The fake upstream, driven over real HTTP by plain clients (http.client, aiohttp), never Keel."""

from __future__ import annotations

import asyncio
import http.client
import json
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest

from keel.testing import FakeUpstream, Script

CHAT = "/v1/chat/completions"
MESSAGES = "/v1/messages"
HELLO = {"model": "gpt-test", "messages": [{"role": "user", "content": "hello there"}]}
CLAUDE = {
    "model": "claude-test",
    "max_tokens": 64,
    "system": "be brief",
    "messages": [{"role": "user", "content": [{"type": "text", "text": "hi claude"}]}],
}
TOOLS = [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}]


@pytest.fixture(scope="module")
def server() -> Iterator[FakeUpstream]:
    with FakeUpstream() as up:
        yield up


@pytest.fixture
def up(server: FakeUpstream) -> FakeUpstream:
    server.reset()
    return server


def post(up: FakeUpstream, path: str, body: dict[str, Any], timeout: float = 5.0) -> tuple[int, dict[str, str], bytes]:
    """One request on its own connection; returns status, lowercased headers and the raw body."""
    conn = http.client.HTTPConnection("127.0.0.1", int(up.url.rsplit(":", 1)[1]), timeout=timeout)
    try:
        conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
        response = conn.getresponse()
        headers = {k.lower(): v for k, v in response.getheaders()}
        try:
            data = response.read()
        except http.client.IncompleteRead as cut:  # the server closed mid-stream
            headers["x-test-incomplete"] = "1"
            data = cut.partial
        return response.status, headers, data
    finally:
        conn.close()


def events(raw: bytes) -> list[tuple[str | None, str]]:
    """SSE events as (event name, data) pairs."""
    out = []
    for block in raw.decode().split("\n\n"):
        if not block.strip():
            continue
        fields = dict(line.split(": ", 1) for line in block.split("\n"))
        out.append((fields.get("event"), fields["data"]))
    return out


def openai_text(frames: list[tuple[str | None, str]]) -> str:
    chunks = [json.loads(data) for _, data in frames if data != "[DONE]"]
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])


def test_default_openai_answer(up: FakeUpstream) -> None:
    status, headers, raw = post(up, CHAT, HELLO)
    body = json.loads(raw)
    assert status == 200
    assert headers["content-type"].startswith("application/json")
    assert body["object"] == "chat.completion"
    assert body["id"].startswith("chatcmpl-")
    assert body["model"] == "gpt-test"
    choice = body["choices"][0]
    assert choice["message"] == {
        "role": "assistant",
        "content": "echo: hello there",
        "refusal": None,
    }
    assert choice["finish_reason"] == "stop"
    assert body["usage"] == {
        "prompt_tokens": len("hello there") // 4 + 1,
        "completion_tokens": 3,
        "total_tokens": 6,
        "prompt_tokens_details": {"cached_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0},
    }


def test_openai_tool_call_and_overrides(up: FakeUpstream) -> None:
    up.script(Script(tool_call=True, model="other", usage={"prompt_tokens": 50, "cached_tokens": 20}))
    body = json.loads(post(up, CHAT, {**HELLO, "tools": TOOLS})[2])
    assert body["model"] == "other"
    assert body["choices"][0]["finish_reason"] == "tool_calls"
    (call,) = body["choices"][0]["message"]["tool_calls"]
    assert call["id"].startswith("call_")
    assert call["function"] == {"name": "weather", "arguments": '{"city": "Paris"}'}
    assert body["usage"]["prompt_tokens"] == 50
    assert body["usage"]["prompt_tokens_details"] == {"cached_tokens": 20}


def test_openai_stream_with_usage_ends_in_done(up: FakeUpstream) -> None:
    up.script(Script(text="one two three"))
    request = {**HELLO, "stream": True, "stream_options": {"include_usage": True}}
    status, headers, raw = post(up, CHAT, request)
    assert status == 200
    assert headers["content-type"].startswith("text/event-stream")
    frames = events(raw)
    assert frames[-1] == (None, "[DONE]")
    chunks = [json.loads(data) for _, data in frames[:-1]]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert [c["choices"][0]["delta"]["content"] for c in chunks[1:4]] == ["one ", "two ", "three"]
    assert chunks[4]["choices"][0]["finish_reason"] == "stop"
    assert chunks[5]["choices"] == []
    assert chunks[5]["usage"]["completion_tokens"] == 3
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)


def test_openai_stream_tool_call_without_usage(up: FakeUpstream) -> None:
    up.script(Script(tool_call=True))
    frames = events(post(up, CHAT, {**HELLO, "stream": True, "tools": TOOLS})[2])
    chunks = [json.loads(data) for _, data in frames[:-1]]
    deltas = [c["choices"][0]["delta"] for c in chunks]
    head = deltas[1]["tool_calls"][0]
    assert head["function"] == {"name": "weather", "arguments": ""}
    assert head["type"] == "function"
    pieces = [d["tool_calls"][0]["function"]["arguments"] for d in deltas[2:-1]]
    assert len(pieces) >= 2
    assert "".join(pieces) == '{"city": "Paris"}'
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
    assert all("usage" not in c for c in chunks)


def test_anthropic_message_and_usage(up: FakeUpstream) -> None:
    usage = {"prompt_tokens": 100, "cached_tokens": 30, "cache_creation_tokens": 10}
    up.script(Script(usage=usage))
    body = json.loads(post(up, MESSAGES, CLAUDE)[2])
    assert body["type"] == "message"
    assert body["id"].startswith("msg_")
    assert body["content"] == [{"type": "text", "text": "echo: hi claude"}]
    assert body["stop_reason"] == "end_turn"
    assert body["stop_sequence"] is None
    assert body["usage"] == {
        "input_tokens": 60,
        "output_tokens": 3,
        "cache_read_input_tokens": 30,
        "cache_creation_input_tokens": 10,
    }


def test_anthropic_stream_event_order(up: FakeUpstream) -> None:
    status, headers, raw = post(up, MESSAGES, {**CLAUDE, "stream": True})
    assert status == 200
    assert headers["content-type"].startswith("text/event-stream")
    frames = events(raw)
    names = [name for name, _ in frames]
    assert names == [
        "message_start",
        "content_block_start",
        "ping",
        *["content_block_delta"] * 3,
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    payloads = [json.loads(data) for _, data in frames]
    assert all(p["type"] == name for p, name in zip(payloads, names, strict=True))
    assert payloads[0]["message"]["usage"]["input_tokens"] == len("be briefhi claude") // 4 + 1
    assert "".join(p["delta"]["text"] for p in payloads[3:6]) == "echo: hi claude"
    assert payloads[7]["delta"]["stop_reason"] == "end_turn"
    assert payloads[7]["usage"]["output_tokens"] == 3


def test_anthropic_stream_tool_use(up: FakeUpstream) -> None:
    up.script(Script(tool_call=True))
    tools = [{"name": "lookup", "input_schema": {"type": "object"}}]
    payloads = [json.loads(d) for _, d in events(post(up, MESSAGES, {**CLAUDE, "stream": True, "tools": tools})[2])]
    block = payloads[1]["content_block"]
    assert block["type"] == "tool_use"
    assert block["name"] == "lookup"
    assert block["id"].startswith("toolu_")
    parts = [p["delta"]["partial_json"] for p in payloads if p["type"] == "content_block_delta"]
    assert len(parts) >= 2
    assert json.loads("".join(parts)) == {"city": "Paris"}
    assert payloads[-2]["delta"]["stop_reason"] == "tool_use"


def test_embeddings_and_models(up: FakeUpstream) -> None:
    body = json.loads(post(up, "/v1/embeddings", {"model": "emb", "input": ["a", "b", "a"]})[2])
    assert body["object"] == "list"
    vectors = [item["embedding"] for item in body["data"]]
    assert [item["index"] for item in body["data"]] == [0, 1, 2]
    assert all(len(v) == 8 and all(isinstance(x, float) for x in v) for v in vectors)
    assert vectors[0] == vectors[2] != vectors[1]
    assert body["usage"]["prompt_tokens"] == body["usage"]["total_tokens"]
    single = json.loads(post(up, "/v1/embeddings", {"model": "emb", "input": "a"})[2])
    assert single["data"][0]["embedding"] == vectors[0]
    with urllib.request.urlopen(up.url + "/v1/models", timeout=5) as response:
        models = json.loads(response.read())
    assert models["object"] == "list"
    assert len(models["data"]) == 1


def test_error_status_and_retry_after(up: FakeUpstream) -> None:
    up.script(Script(status=429, retry_after=2), Script(status=529, retry_after=0.5))
    status, headers, raw = post(up, CHAT, {**HELLO, "stream": True})
    assert status == 429
    assert headers["retry-after"] == "2"
    error = json.loads(raw)["error"]
    assert error["code"] == "rate_limit_exceeded"
    assert set(error) == {"message", "type", "param", "code"}
    status, headers, raw = post(up, MESSAGES, CLAUDE)
    assert status == 529
    assert headers["retry-after"] == "0.5"
    assert json.loads(raw)["error"]["type"] == "overloaded_error"
    assert post(up, CHAT, HELLO)[0] == 200  # the queue is empty again: default script


def test_error_code_and_custom_body(up: FakeUpstream) -> None:
    up.script(
        Script(status=400, error_code="context_length_exceeded"),
        Script(status=500, error_body={"x": 1}),
    )
    error = json.loads(post(up, CHAT, HELLO)[2])["error"]
    assert (error["type"], error["code"], error["param"]) == (
        "invalid_request_error",
        "context_length_exceeded",
        "messages",
    )
    assert json.loads(post(up, MESSAGES, CLAUDE)[2]) == {"x": 1}


def test_delay_and_ttft(up: FakeUpstream) -> None:
    up.script(Script(delay=0.3), Script(ttft=0.3))
    started = time.monotonic()
    assert post(up, CHAT, HELLO)[0] == 200
    assert time.monotonic() - started >= 0.3
    started = time.monotonic()
    assert openai_text(events(post(up, CHAT, {**HELLO, "stream": True})[2])) == "echo: hello there"
    assert time.monotonic() - started >= 0.3


def test_cut_after(up: FakeUpstream) -> None:
    up.script(Script(text="a b c d", cut_after=2), Script(cut_after=1))
    status, headers, raw = post(up, CHAT, {**HELLO, "stream": True})
    assert status == 200
    assert headers.get("x-test-incomplete") == "1"
    frames = events(raw)
    assert openai_text(frames) == "a b "
    assert (None, "[DONE]") not in frames
    _, headers, raw = post(up, MESSAGES, {**CLAUDE, "stream": True})
    assert headers.get("x-test-incomplete") == "1"
    names = [name for name, _ in events(raw)]
    assert names == ["message_start", "content_block_start", "ping", "content_block_delta"]


def test_malformed_at(up: FakeUpstream) -> None:
    up.script(Script(text="a b c", malformed_at=1))
    frames = events(post(up, CHAT, {**HELLO, "stream": True})[2])
    assert frames[-1] == (None, "[DONE]")
    bad = frames[2][1]
    with pytest.raises(json.JSONDecodeError):
        json.loads(bad)
    for _, data in [*frames[:2], *frames[3:-1]]:
        json.loads(data)


def test_no_done(up: FakeUpstream) -> None:
    up.script(Script(no_done=True), Script(no_done=True))
    _, headers, raw = post(up, CHAT, {**HELLO, "stream": True})
    frames = events(raw)
    assert "x-test-incomplete" not in headers
    assert openai_text(frames) == "echo: hello there"
    assert (None, "[DONE]") not in frames
    _, headers, raw = post(up, MESSAGES, {**CLAUDE, "stream": True})
    names = [name for name, _ in events(raw)]
    assert "x-test-incomplete" not in headers
    assert names[-1] == "message_delta"


def test_malformed_at_several_chunks(up: FakeUpstream) -> None:
    up.script(Script(text="a b c", malformed_at=(0, 2)))
    frames = events(post(up, CHAT, {**HELLO, "stream": True})[2])
    bad = [data for _, data in frames[1:-2] if not data.startswith('{"id')]
    assert len(bad) == 2 and frames[-1] == (None, "[DONE]")


def test_end_after_ends_the_body_cleanly_before_the_finish(up: FakeUpstream) -> None:
    up.script(Script(text="a b c", end_after=2), Script(text="a b c", end_after=1))
    _, headers, raw = post(up, CHAT, {**HELLO, "stream": True})
    frames = events(raw)
    assert "x-test-incomplete" not in headers
    assert openai_text(frames) == "a b "
    assert not any('"finish_reason": "stop"' in data for _, data in frames) and (None, "[DONE]") not in frames
    _, headers, raw = post(up, MESSAGES, {**CLAUDE, "stream": True})
    assert "x-test-incomplete" not in headers
    assert [name for name, _ in events(raw)] == ["message_start", "content_block_start", "ping", "content_block_delta"]


def test_error_in_200(up: FakeUpstream) -> None:
    up.script(*[Script(error_in_200=529)] * 4)
    status, _, raw = post(up, CHAT, HELLO)
    assert status == 200 and json.loads(raw)["error"]["code"] == "overloaded"
    status, _, raw = post(up, CHAT, {**HELLO, "stream": True})
    assert status == 200 and [json.loads(data)["error"]["code"] for _, data in events(raw)] == ["overloaded"]
    status, _, raw = post(up, MESSAGES, CLAUDE)
    assert status == 200 and json.loads(raw)["error"]["type"] == "overloaded_error"
    status, _, raw = post(up, MESSAGES, {**CLAUDE, "stream": True})
    ((name, data),) = events(raw)
    assert status == 200 and name == "error" and json.loads(data)["type"] == "error"


def test_error_in_200_after_some_content(up: FakeUpstream) -> None:
    up.script(Script(text="a b c", error_in_200=500, error_after=2, error_body={"error": {"message": "x"}}))
    frames = events(post(up, CHAT, {**HELLO, "stream": True})[2])
    assert openai_text(frames[:-1]) == "a b " and json.loads(frames[-1][1]) == {"error": {"message": "x"}}


def test_body_override(up: FakeUpstream) -> None:
    up.script(Script(body_override={"id": "x", "choices": []}), Script(body_override=b"not json"))
    status, _, raw = post(up, CHAT, HELLO)
    assert status == 200 and json.loads(raw) == {"id": "x", "choices": []}
    assert post(up, CHAT, HELLO)[2] == b"not json"


def test_bad_usage_is_merged_into_the_usage_as_sent(up: FakeUpstream) -> None:
    up.script(
        Script(bad_usage={"prompt_tokens": -5, "completion_tokens": 1e30}),
        Script(bad_usage={"output_tokens": "12"}),
        Script(bad_usage={"output_tokens": "12"}),
    )
    usage = json.loads(post(up, CHAT, HELLO)[2])["usage"]
    assert (usage["prompt_tokens"], usage["completion_tokens"]) == (-5, 1e30)
    assert json.loads(post(up, MESSAGES, CLAUDE)[2])["usage"]["output_tokens"] == "12"
    frames = events(post(up, MESSAGES, {**CLAUDE, "stream": True})[2])
    assert [json.loads(d)["usage"]["output_tokens"] for name, d in frames if name == "message_delta"] == ["12"]


def test_echo_headers_quotes_the_request_headers_in_the_error(up: FakeUpstream) -> None:
    up.script(Script(status=400, echo_headers=True))
    conn = http.client.HTTPConnection("127.0.0.1", int(up.url.rsplit(":", 1)[1]), timeout=5)
    conn.request("POST", CHAT, json.dumps(HELLO), {"Authorization": "Bearer sk-secret-123"})
    response = conn.getresponse()
    message = json.loads(response.read())["error"]["message"]
    conn.close()
    assert response.status == 400 and "Authorization: Bearer sk-secret-123" in message


def test_reset(up: FakeUpstream) -> None:
    up.script(Script(reset=True))
    with pytest.raises(ConnectionError):
        post(up, CHAT, HELLO)
    assert post(up, CHAT, HELLO)[0] == 200


def test_hang_times_out_without_blocking_others(up: FakeUpstream) -> None:
    up.script(Script(hang=True))
    with pytest.raises(TimeoutError):
        post(up, CHAT, HELLO, timeout=0.3)
    assert post(up, CHAT, HELLO)[0] == 200
    assert len(up.requests) == 2


def test_concurrent_requests_keep_their_own_scripts(up: FakeUpstream) -> None:
    async def run() -> tuple[int, int, int]:
        timeout = aiohttp.ClientTimeout(total=5)
        async with aiohttp.ClientSession(timeout=timeout) as session:

            async def one() -> int:
                async with session.post(up.url + CHAT, json={**HELLO, "stream": True}) as response:
                    body = await response.read()
                    return len(events(body)) if response.status == 200 else response.status

            return await asyncio.gather(one(), one(), one())

    up.script(Script(chunk_delay=0.05), Script(status=503), Script())
    slow, error, plain = asyncio.run(run())
    assert sorted([slow, error, plain]) == [6, 6, 503]


def test_request_recording_and_reset(up: FakeUpstream) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", int(up.url.rsplit(":", 1)[1]), timeout=5)
    conn.request("POST", CHAT, json.dumps(HELLO), {"Authorization": "Bearer sk-x", "X-Custom": "1"})
    conn.getresponse().read()
    conn.close()
    (recorded,) = up.requests
    assert recorded["path"] == CHAT
    assert recorded["json"] == HELLO
    assert recorded["headers"]["authorization"] == "Bearer sk-x"
    assert recorded["headers"]["x-custom"] == "1"
    up.script(Script(status=500))
    up.reset()
    assert up.requests == []
    assert post(up, CHAT, HELLO)[0] == 200


def test_stop_closes_hanging_connections_promptly() -> None:
    up = FakeUpstream()
    up.start()
    port = int(up.url.rsplit(":", 1)[1])
    up.script(Script(hang=True))
    outcome: list[object] = []

    def client() -> None:
        try:
            outcome.append(post(up, CHAT, HELLO, timeout=10))
        except (OSError, http.client.HTTPException) as exc:
            outcome.append(exc)

    thread = threading.Thread(target=client)
    thread.start()
    while not up.requests:
        time.sleep(0.01)
    started = time.monotonic()
    up.stop()
    thread.join(5)
    assert time.monotonic() - started < 3
    assert isinstance(outcome[0], (ConnectionError, http.client.RemoteDisconnected))
    with (
        pytest.raises(ConnectionRefusedError),
        socket.create_connection(("127.0.0.1", port), timeout=1),
    ):
        pass


# ---- assistant prefills, stalls, large bodies -----------------------------------------------------


def anthropic_text(frames: list[tuple[str | None, str]]) -> str:
    deltas = [json.loads(data)["delta"] for name, data in frames if name == "content_block_delta"]
    return "".join(d.get("text", "") for d in deltas)


def test_a_prefill_is_continued_in_each_dialect(up: FakeUpstream) -> None:
    prefill = {"role": "assistant", "content": "echo: hello"}
    marked = {**HELLO, "stream": True, "messages": [*HELLO["messages"], {**prefill, "prefix": True}]}
    assert openai_text(events(post(up, CHAT, marked)[2])) == " there"
    vllm = {**HELLO, "messages": [*HELLO["messages"], prefill], "continue_final_message": True}
    assert post(up, CHAT, {**vllm, "add_generation_prompt": False})[2].count(b" there") == 1
    assert post(up, CHAT, vllm)[0] == 400  # vLLM refuses both flags at once
    plain = {**HELLO, "messages": [*HELLO["messages"], prefill]}
    assert json.loads(post(up, CHAT, plain)[2])["choices"][0]["message"]["content"] == "echo: hello there"
    claude = {**CLAUDE, "stream": True, "messages": [*CLAUDE["messages"], {"role": "assistant", "content": "echo: hi"}]}
    assert anthropic_text(events(post(up, MESSAGES, claude)[2])) == " claude"


def test_a_prefill_is_refused_like_the_real_servers(up: FakeUpstream) -> None:
    trailing = {**CLAUDE, "messages": [*CLAUDE["messages"], {"role": "assistant", "content": "echo: "}]}
    status, _, raw = post(up, MESSAGES, trailing)
    assert status == 400 and b"final assistant content cannot end with trailing whitespace" in raw
    up.script(Script(refuse_prefill=True), Script(refuse_prefill=True))
    assert (
        post(up, MESSAGES, {**trailing, "messages": [*CLAUDE["messages"], {"role": "assistant", "content": "e"}]})[0]
        == 400
    )
    assert post(up, CHAT, HELLO)[0] == 200  # no prefill: nothing to refuse


def test_stall_after_sends_then_goes_silent(up: FakeUpstream) -> None:
    up.script(Script(text="a b c", stall_after=2))
    with pytest.raises(TimeoutError):
        post(up, CHAT, {**HELLO, "stream": True}, timeout=0.5)
    assert len(up.requests) == 1


def test_large_bodies_can_be_kept_out_of_the_record() -> None:
    with FakeUpstream(max_recorded_bytes=100) as fake:
        post(fake, CHAT, HELLO)
        post(fake, CHAT, {**HELLO, "user": "x" * 200})
        small, large = fake.requests
    assert small["json"] == HELLO and large["json"] is None and large["size"] > 200
    assert large["at"] >= small["at"]
