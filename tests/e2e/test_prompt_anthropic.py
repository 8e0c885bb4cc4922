"""The prompt slot on Anthropic's /v1/messages: the official anthropic SDK names a prompt (`extra_body`),
Keel renders the version and calls its alias (an Anthropic one here: the system message goes out as
`system`); a missing variable is an Anthropic-shaped 400 naming it; an unknown prompt a 404."""

from __future__ import annotations

from typing import Any

import anthropic
import httpx
import pytest

from keel.testing import FakeUpstream
from tests.conftest import ADMIN, Gateway

PROMPT: dict[str, Any] = {
    "name": "brief",
    "messages": [{"role": "system", "content": "Be brief with {{who}}."}, {"role": "user", "content": "{{q}}"}],
    "alias": "claude",
    "params": {"max_tokens": 40},
}


def test_a_messages_call_by_prompt_renders_the_version(gateway: Gateway, up: FakeUpstream) -> None:
    pushed = httpx.post(
        gateway.url + "/api/prompts", json={"tenant": "t1", **PROMPT}, headers={"Authorization": f"Bearer {ADMIN}"}
    )
    assert pushed.status_code == 201
    ref = {"id": "brief", "version": 1, "variables": {"who": "Ada", "q": "why?"}}
    with anthropic.Anthropic(base_url=gateway.url, api_key=gateway.key, max_retries=0, timeout=10) as c:
        raw = c.messages.with_raw_response.create(
            model="prompt",
            max_tokens=30,
            messages=[{"role": "user", "content": "and then?"}],
            extra_body={"prompt": ref},
        )
        assert raw.parse().content[0].text.startswith("echo:")
        assert raw.headers["x-keel-prompt-version"] == "brief@1"
        sent = up.requests[-1]["json"]
        assert sent["model"] == "claude-sonnet-4-5" and sent["max_tokens"] == 30  # the call's own max_tokens wins
        assert sent["system"] == "Be brief with Ada."  # the version's system message, as Anthropic's `system`
        assert sent["messages"] == [
            {"role": "user", "content": [{"type": "text", "text": "why?"}, {"type": "text", "text": "and then?"}]}
        ]  # the rendered turn, then the call's own
        bare = httpx.post(
            gateway.url + "/v1/messages", json={"model": "prompt", "prompt": ref}, headers={"x-api-key": gateway.key}
        )
        assert bare.status_code == 200 and up.requests[-1]["json"]["max_tokens"] == 40  # no messages, the version's
        with pytest.raises(anthropic.BadRequestError) as missing:
            c.messages.create(
                model="prompt", max_tokens=30, messages=[], extra_body={"prompt": {**ref, "variables": {"who": "Ada"}}}
            )
        assert "'q'" in str(missing.value) and "prompt.variables.q" in str(missing.value)
        with pytest.raises(anthropic.NotFoundError):
            c.messages.create(model="prompt", max_tokens=30, messages=[], extra_body={"prompt": {"id": "nope"}})
    without = httpx.post(
        gateway.url + "/v1/messages", json={"model": "claude", "messages": []}, headers={"x-api-key": gateway.key}
    )
    assert without.status_code == 400  # without a prompt, Anthropic's own rules
