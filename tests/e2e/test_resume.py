"""Resume after commit, end to end: the official SDKs → Keel over real HTTP → two fake upstreams.

A stream that breaks (cut) or stalls (idle deadline) after content continues on the next target:
by a prefill where the target takes one (Anthropic; vLLM's `continue_final_message`; Mistral's
`prefix`), else by a restart whose repeat of the text already sent is skipped. The client gets the
whole answer once; a restart that diverges ends with the explicit error event, as before resume.
Upstream A (the session `up`) is the primary that breaks; upstream B (`b`) serves every fallback.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest

from keel.errors import ErrorKind, ProviderError
from keel.gateway.resume import Diverged, continuation
from keel.gateway.routing import estimate_prompt_tokens
from keel.providers.prices import PriceBook
from keel.testing import FakeUpstream, Script
from keel.types import ChatEvent, Finish, Start, Text, ToolCallDelta, Usage, UsageEvent
from keel.wire.openai_chat import parse_request
from tests.conftest import ADMIN, Gateway

PROMPT = "tell me something true"
ANSWER = "echo: " + PROMPT  # the fake's deterministic answer, one chunk per word: "echo: ", "tell ", "me ", ...
ASK: Any = [{"role": "user", "content": PROMPT}]
SENT = "echo: tell "  # what the client has when the primary is cut after 2 chunks
PRIMARY = "gpt-4o-mini"
FALLBACK_USAGE = {"prompt_tokens": 100, "completion_tokens": 7}


def config(a: FakeUpstream, b: FakeUpstream, tmp: Path) -> dict[str, Any]:
    def alias(fallback: str, model: str, **extra: Any) -> dict[str, Any]:
        return {"targets": [{"provider": "primary", "model": PRIMARY}, {"provider": fallback, "model": model}], **extra}

    return {
        "admin_token": ADMIN,
        "storage": {"url": f"sqlite:///{tmp}/keel.db"},
        "traces": {"spill_dir": str(tmp / "spill"), "flush_interval_ms": 10},
        "resilience": {"ttft_timeout_s": 1, "idle_timeout_s": 0.5, "total_timeout_s": 8, "backoff_ms": 10},
        "limits": {"defaults": [{"scope": ["tenant"], "tpm": 1_000_000}]},
        "providers": {
            "primary": {"type": "openai", "base_url": a.url + "/v1", "api_key": "sk-a"},
            "ant": {"type": "anthropic", "base_url": b.url + "/v1", "api_key": "sk-ant"},
            "vllm": {"type": "vllm", "base_url": b.url + "/v1"},
            "mistral": {"type": "mistral", "base_url": b.url + "/v1", "api_key": "sk-m"},
            "plain": {"type": "openai", "base_url": b.url + "/v1", "api_key": "sk-b"},
        },
        "models": {
            "to_ant": alias("ant", "claude-sonnet-4-5"),
            "to_vllm": alias("vllm", "llama-3.1-8b"),
            "to_mistral": alias("mistral", "mistral-small-latest"),
            "to_plain": alias("plain", "gpt-4o"),
            "off": alias("ant", "claude-sonnet-4-5", resume="off"),
            "to_alias": {"targets": [{"provider": "primary", "model": PRIMARY}], "fallbacks": ["small"]},
            "small": {"targets": [{"provider": "plain", "model": "gpt-4o-mini"}]},
        },
    }


@pytest.fixture
def gw(make_gateway: Any, up: FakeUpstream, b: FakeUpstream, tmp_path: Path) -> Gateway:
    return make_gateway(config(up, b, tmp_path))  # type: ignore[no-any-return]


@dataclass
class Streamed:
    text: str
    finishes: list[str]
    models: list[str]  # each chunk's `model`, in order
    error: openai.APIError | None
    headers: httpx.Headers


def stream(gw: Gateway, alias: str, **extra: Any) -> Streamed:
    """One streamed call through the openai SDK; an error event mid-stream is caught and returned."""
    text, finishes, models = [], [], []
    error = None
    with openai.OpenAI(base_url=gw.base_url, api_key=gw.key, max_retries=0, timeout=20) as c:
        raw = c.chat.completions.with_raw_response.create(model=alias, messages=ASK, stream=True, **extra)
        try:
            for ch in raw.parse():
                models.append(ch.model)
                if ch.choices:
                    text.append(ch.choices[0].delta.content or "")
                    finishes += [ch.choices[0].finish_reason] if ch.choices[0].finish_reason else []
        except openai.APIError as err:
            error = err
    return Streamed("".join(text), finishes, models, error, raw.headers)


def trace(gw: Gateway) -> Any:
    rows = gw.traces()
    assert len(rows) == 1, rows
    return rows[0]


def steps(t: Any) -> list[tuple[str, str, str | None]]:
    """The attempt log as (level, outcome, error kind, or how it resumed)."""
    return [(e["level"], e["outcome"], e.get("kind") or e.get("resumed")) for e in t.attempt_log]


def whole(s: Streamed) -> None:
    assert s.error is None, s.error
    assert (s.text, s.finishes) == (ANSWER, ["stop"])  # every word once, one finish, no error event


def primary_estimate() -> Usage:
    """What the cut primary attempt is billed: it sent no usage, so Keel estimates what it consumed."""
    request = parse_request({"model": "to_ant", "messages": ASK})
    return Usage(input_tokens=estimate_prompt_tokens(request), output_tokens=len(SENT) // 4 + 1)


# ---- a prefill-capable fallback continues the text ----------------------------------------------


def test_a_cut_stream_continues_on_an_anthropic_fallback_from_a_prefill(
    gw: Gateway, up: FakeUpstream, b: FakeUpstream
) -> None:
    up.script(Script(cut_after=2))
    b.script(Script(usage=FALLBACK_USAGE))
    s = stream(gw, "to_ant", stream_options={"include_usage": True})
    whole(s)
    (sent,) = b.requests
    assert sent["path"] == "/v1/messages"
    assert sent["json"]["messages"][-1] == {
        "role": "assistant",
        "content": SENT.rstrip(),
    }  # Anthropic refuses trailing space
    # Each chunk names the model that wrote it (item 13): the primary's, then the fallback's.
    assert s.models[0] == PRIMARY and s.models[-1] == "claude-sonnet-4-5"
    assert s.headers["x-keel-model"] == PRIMARY and s.headers["x-keel-alias"] == "to_ant"

    t = trace(gw)
    assert (t.status, t.fallback, t.attempts, t.tags["keel.resumed"]) == ("ok", "target", 2, "prefill")
    assert steps(t) == [("primary", "failed mid-stream", "network"), ("target", "ok", "prefill")]
    assert t.response["content"] == ANSWER
    # Both attempts are billed: the cut one (estimated) and the continuation (as reported).
    first, second = primary_estimate(), Usage(input_tokens=100, output_tokens=7)
    assert (t.input_tokens, t.output_tokens) == (first.input_tokens + 100, first.output_tokens + 7)
    prices = PriceBook.bundled()
    expected = prices.cost(PRIMARY, first) + prices.cost("claude-sonnet-4-5", second)
    assert t.cost_usd == pytest.approx(expected)
    billed = [(e["input_tokens"], e["output_tokens"], e["cost_usd"]) for e in t.attempt_log]
    assert billed == [
        (first.input_tokens, first.output_tokens, pytest.approx(prices.cost(PRIMARY, first))),
        (100, 7, pytest.approx(prices.cost("claude-sonnet-4-5", second))),
    ]
    # Limits settle the sum.
    used = httpx.get(
        gw.url + "/api/limits/usage", params={"tenant": "t1"}, headers={"authorization": f"Bearer {ADMIN}"}
    )
    assert {row["kind"]: row["used"] for row in used.json()["data"]}["tpm"] == t.input_tokens + t.output_tokens


def test_a_cut_stream_continues_on_a_vllm_fallback_with_continue_final_message(
    gw: Gateway, up: FakeUpstream, b: FakeUpstream
) -> None:
    up.script(Script(cut_after=2))
    whole(stream(gw, "to_vllm", max_tokens=50))
    (sent,) = b.requests
    body = sent["json"]
    assert (body["continue_final_message"], body["add_generation_prompt"]) == (True, False)
    assert body["max_tokens"] == 50 - len(SENT) // 4  # only what is left of the caller's cap
    assert body["messages"][-1] == {"role": "assistant", "content": SENT.rstrip()}  # no `prefix`: vLLM's own dialect
    assert trace(gw).tags["keel.resumed"] == "prefill"


def test_a_cut_stream_continues_on_a_mistral_fallback_with_a_prefix_message(
    gw: Gateway, up: FakeUpstream, b: FakeUpstream
) -> None:
    up.script(Script(cut_after=3))
    whole(stream(gw, "to_mistral"))
    (sent,) = b.requests
    assert sent["json"]["messages"][-1] == {"role": "assistant", "content": "echo: tell me", "prefix": True}
    assert "continue_final_message" not in sent["json"]


def test_a_stalled_stream_resumes_too(gw: Gateway, up: FakeUpstream, b: FakeUpstream) -> None:
    up.script(Script(stall_after=2))  # then silence past the 0.5 s idle deadline
    whole(stream(gw, "to_ant"))
    t = trace(gw)
    assert steps(t) == [("primary", "failed mid-stream", "timeout"), ("target", "ok", "prefill")]


def test_the_anthropic_sdk_gets_a_resumed_stream_whole(gw: Gateway, up: FakeUpstream, b: FakeUpstream) -> None:
    up.script(Script(cut_after=2))
    received: list[str] = []
    with anthropic.Anthropic(base_url=gw.url, api_key=gw.key, max_retries=0, timeout=20) as c:
        events = list(c.messages.create(model="to_ant", max_tokens=50, messages=ASK, stream=True))
    received = [e.delta.text for e in events if e.type == "content_block_delta" and e.delta.type == "text_delta"]
    assert "".join(received) == ANSWER
    assert events[-1].type == "message_stop"
    assert trace(gw).tags["keel.resumed"] == "prefill"


# ---- a fallback that takes no prefill restarts, and only what is new is forwarded -----------------


def test_a_fallback_without_prefill_restarts_and_its_repeat_is_skipped(
    gw: Gateway, up: FakeUpstream, b: FakeUpstream
) -> None:
    up.script(Script(cut_after=2))
    s = stream(gw, "to_plain")
    whole(s)
    (sent,) = b.requests
    assert sent["json"]["messages"] == ASK  # the original request, no prefill
    t = trace(gw)
    assert steps(t) == [("primary", "failed mid-stream", "network"), ("target", "ok", "restart")]
    assert s.models[-1] == "gpt-4o"


def test_a_fallback_that_refuses_the_prefill_is_restarted(gw: Gateway, up: FakeUpstream, b: FakeUpstream) -> None:
    up.script(Script(cut_after=2))
    b.script(Script(refuse_prefill=True))  # a 400 for the prefill; the restart after it is answered
    whole(stream(gw, "to_ant"))
    refused, restarted = b.requests
    assert refused["json"]["messages"][-1]["role"] == "assistant"
    assert restarted["json"]["messages"] == ASK
    t = trace(gw)
    assert steps(t) == [
        ("primary", "failed mid-stream", "network"),
        ("target", "error", "bad_request"),
        ("target", "ok", "restart"),
    ]
    assert t.tags["keel.resumed"] == "restart"


def test_a_restart_that_diverges_ends_with_the_error_event(gw: Gateway, up: FakeUpstream, b: FakeUpstream) -> None:
    up.script(Script(cut_after=2))
    b.script(Script(text="echo: tall tales"))  # starts the same, then writes something else
    s = stream(gw, "to_plain")
    assert s.text == SENT and not s.finishes  # nothing of the divergent answer reached the client
    assert isinstance(s.error, openai.APIError) and isinstance(s.error.body, dict)
    assert s.error.body["code"] == "network"  # what broke the stream, as without resume
    assert "did not repeat" in s.error.body["message"]
    t = trace(gw)
    assert (t.status, t.error_kind) == ("partial", "network")
    assert steps(t) == [("primary", "failed mid-stream", "network"), ("target", "diverged", "network")]


def test_a_fallback_alias_resumes_too(gw: Gateway, up: FakeUpstream, b: FakeUpstream) -> None:
    up.script(Script(cut_after=4))
    whole(stream(gw, "to_alias"))
    assert steps(trace(gw)) == [("primary", "failed mid-stream", "network"), ("alias:small", "ok", "restart")]


# ---- what is not resumed ------------------------------------------------------------------------


def test_resume_off_keeps_the_error_event(gw: Gateway, up: FakeUpstream, b: FakeUpstream) -> None:
    up.script(Script(cut_after=2))
    s = stream(gw, "off")
    assert s.text == SENT and isinstance(s.error, openai.APIError)
    assert not b.requests
    assert trace(gw).status == "partial"


def test_a_stream_that_used_its_max_tokens_is_not_resumed(gw: Gateway, up: FakeUpstream, b: FakeUpstream) -> None:
    up.script(Script(cut_after=2))  # "echo: tell ": as much as max_tokens=2 allows (a cut past the cap looks so)
    s = stream(gw, "to_ant", max_tokens=2)
    assert s.text == SENT and isinstance(s.error, openai.APIError)
    assert not b.requests


def test_a_stream_of_tool_calls_is_not_resumed(gw: Gateway, up: FakeUpstream, b: FakeUpstream) -> None:
    up.script(Script(tool_call=True, cut_after=2))
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    s = stream(gw, "to_ant", tools=tools)
    assert isinstance(s.error, openai.APIError)
    assert not b.requests  # half a tool call cannot be continued faithfully
    t = trace(gw)
    assert t.status == "partial" and "keel.resumed" not in t.tags


def test_a_stream_that_ends_after_its_finish_is_not_resumed(gw: Gateway, up: FakeUpstream, b: FakeUpstream) -> None:
    up.script(Script(no_done=True))  # every word and the finish arrive, then the body ends without [DONE]
    s = stream(gw, "to_ant")
    assert s.text == ANSWER and s.finishes == ["stop"]
    assert not b.requests  # the answer was whole: nothing to continue


# ---- the continuation filter, on its own --------------------------------------------------------

BROKE = ProviderError(ErrorKind.network, "upstream stream broke", provider="primary")


def after(events: list[ChatEvent], expect: str, strict: bool) -> list[ChatEvent]:
    async def source() -> AsyncIterator[ChatEvent]:
        for event in events:
            yield event

    async def run() -> list[ChatEvent]:
        return [e async for e in continuation(source(), expect, strict, BROKE, "backup/gpt-4o")]

    return asyncio.run(run())


def test_a_restart_is_forwarded_from_where_the_client_is_whatever_its_chunks() -> None:
    restart = [Start("r", "gpt-4o"), Text("ec"), Text("ho: te"), Text("ll me "), Text("more"), Finish("stop")]
    assert after(restart, SENT, strict=True) == [Text("me "), Text("more"), Finish("stop")]


@pytest.mark.parametrize(
    "restart",
    [
        [Text("echo: tall")],  # other words
        [Text("echo: "), Finish("stop")],  # shorter than what was sent
        [Text("echo: "), ToolCallDelta(0, "c1", "get_weather")],  # a tool call instead
        [Text("echo")],  # the stream ends before repeating all
    ],
)
def test_a_restart_that_does_not_repeat_the_text_sent_diverges(restart: list[ChatEvent]) -> None:
    with pytest.raises(Diverged) as info:
        after([Start("r", "gpt-4o"), *restart], SENT, strict=True)
    assert info.value.error_kind is ErrorKind.network and "did not repeat the 11 characters" in info.value.message


def test_a_prefill_continuation_skips_only_the_whitespace_the_client_has() -> None:
    assert after([Start("c", "claude"), Text(" me "), Text("too")], " ", strict=False) == [Text("me "), Text("too")]
    assert after([Text("me")], " ", strict=False) == [Text("me")]  # it did not bring the space back
    assert after([Text("  x")], "  ", strict=False) == [Text("x")]
    assert after([Text(" "), Text(" x")], "  ", strict=False) == [Text("x")]
    usage = UsageEvent(Usage(1, 2))
    assert after([ToolCallDelta(0, "c", "f"), usage], " ", strict=False) == [ToolCallDelta(0, "c", "f"), usage]
