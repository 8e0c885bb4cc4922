"""Prompts served by the gateway, end to end: the official openai SDK names a prompt (`extra_body`),
Keel renders the labelled version and calls its alias with its parameters; the fake upstream shows what
was sent. Labels move; missing variables and unknown prompts are OpenAI-shaped errors; pushes are
idempotent; a protected label refuses a tenant's key. On SQLite and PostgreSQL."""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest

from keel.testing import FakeUpstream
from tests.conftest import ADMIN, Gateway

ADMIN_AUTH = {"Authorization": f"Bearer {ADMIN}"}

V1: dict[str, Any] = {
    "name": "support",
    "messages": [
        {"role": "system", "content": 'You help {{ customer }} with {{product}}. Reply as JSON: {"a": 1}}'},
        {"role": "user", "content": "Question: {{ question }}"},
    ],
    "alias": "gpt-4o-mini",
    "params": {"temperature": 0.2, "max_tokens": 50, "seed": 7},
    "message": "first cut",
}
V2: dict[str, Any] = {
    **V1,
    "messages": [{"role": "system", "content": "v2 for {{customer}} / {{product}}: {{question}}"}],
    "message": "shorter",
}
VARS = {"customer": "Ada", "product": "Keel", "question": "{{customer}} how?"}


def client(gw: Gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.base_url, api_key=gw.key, max_retries=0, timeout=10)


def push(gw: Gateway, body: dict[str, Any], auth: dict[str, str] | None = None) -> httpx.Response:
    headers = auth or ADMIN_AUTH
    return httpx.post(gw.url + "/api/prompts", json={"tenant": "t1", **body} if auth is None else body, headers=headers)


def label(gw: Gateway, name: str, lbl: str, version: int, **extra: Any) -> httpx.Response:
    return httpx.put(
        f"{gw.url}/api/prompts/{name}/labels/{lbl}",
        json={"tenant": "t1", "version": version, **extra},
        headers=ADMIN_AUTH,
    )


def by_prompt(c: openai.OpenAI, prompt: dict[str, Any], **kw: Any) -> Any:
    return c.chat.completions.with_raw_response.create(
        model=kw.pop("model", "prompt"), messages=kw.pop("messages", []), extra_body={"prompt": prompt}, **kw
    )


def test_a_call_by_label_renders_the_labelled_version_and_follows_the_label(gateway: Gateway, up: FakeUpstream) -> None:
    first, second = push(gateway, V1), push(gateway, V2)
    assert (first.status_code, first.json()["version"], second.json()["version"]) == (201, 1, 2)
    assert label(gateway, "support", "production", 1).json()["version"] == 1

    with client(gateway) as c:
        raw = by_prompt(
            c, {"id": "support", "label": "production", "variables": VARS},
            messages=[{"role": "user", "content": "and one more turn"}], temperature=0.9,
        )  # fmt: skip
        assert raw.parse().choices[0].message.content.startswith("echo:")
        sent = up.requests[-1]["json"]
        assert sent["model"] == "gpt-4o-mini"  # the version's alias
        assert sent["messages"] == [
            {"role": "system", "content": 'You help Ada with Keel. Reply as JSON: {"a": 1}}'},
            {"role": "user", "content": "Question: {{customer}} how?"},  # a value is never rendered again
            {"role": "user", "content": "and one more turn"},  # the call's own messages follow
        ]
        assert (sent["temperature"], sent["max_tokens"], sent["seed"]) == (0.9, 50, 7)  # the call's own wins
        assert "prompt" not in sent
        assert raw.headers["x-keel-prompt-version"] == "support@1"

        assert label(gateway, "support", "production", 2).status_code == 200  # the label moves: later calls follow
        raw2 = by_prompt(c, {"id": "support", "label": "production", "variables": VARS})
        assert up.requests[-1]["json"]["messages"] == [
            {"role": "system", "content": "v2 for Ada / Keel: {{customer}} how?"}
        ]
        assert raw2.headers["x-keel-prompt-version"] == "support@2"
        by_number = by_prompt(c, {"id": "support", "version": 1, "variables": VARS}, model="sim")
        assert by_number.headers["x-keel-prompt-version"] == "support@1"

    traces = {t.id: t for t in gateway.traces()}
    t = traces[raw.headers["x-keel-trace-id"]]
    assert (t.prompt_version, t.alias) == ("support@1", "gpt-4o-mini")
    assert t.tags["keel.prompt"] == "support" and t.tags["keel.prompt_version"] == "1"
    assert t.tags["keel.prompt_label"] == "production" and json.loads(t.tags["keel.prompt_variables"]) == VARS
    t3 = traces[by_number.headers["x-keel-trace-id"]]
    assert (t3.prompt_version, t3.alias, t3.provider) == ("support@1", "sim", "sim")  # the call's model overrides
    assert "keel.prompt_label" not in t3.tags


def test_prompt_errors_are_openai_shaped(gateway: Gateway, up: FakeUpstream) -> None:
    push(gateway, V1)
    label(gateway, "support", "production", 1)
    calls = len(up.requests)
    with client(gateway) as c:
        with pytest.raises(openai.BadRequestError) as missing:
            by_prompt(c, {"id": "support", "label": "production", "variables": {"customer": "Ada", "product": "K"}})
        err = missing.value.body
        assert isinstance(err, dict) and err["param"] == "prompt.variables.question"
        assert "question" in err["message"]
        with pytest.raises(openai.BadRequestError) as extra:
            by_prompt(c, {"id": "support", "version": 1, "variables": {**VARS, "mood": "sunny"}})
        assert isinstance(extra.value.body, dict) and extra.value.body["param"] == "prompt.variables.mood"
        with pytest.raises(openai.NotFoundError) as unknown:
            by_prompt(c, {"id": "nope", "variables": VARS})
        assert isinstance(unknown.value.body, dict) and unknown.value.body["param"] == "prompt.id"
        with pytest.raises(openai.NotFoundError) as no_label:
            by_prompt(c, {"id": "support", "label": "staging", "variables": VARS})
        assert isinstance(no_label.value.body, dict) and "production" in no_label.value.body["message"]
        with pytest.raises(openai.NotFoundError):
            by_prompt(c, {"id": "support", "version": 9, "variables": VARS})
    assert len(up.requests) == calls  # nothing reached the upstream
    other = httpx.post(gateway.url + "/api/prompts", json={"tenant": "t2", **V1}, headers=ADMIN_AUTH)
    assert other.status_code == 201  # another tenant's prompt of the same name is not t1's
    with client(gateway) as c, pytest.raises(openai.NotFoundError):
        by_prompt(c, {"id": "support", "version": 2, "variables": VARS})


def test_push_is_content_addressed_and_checked(gateway: Gateway) -> None:
    first = push(gateway, V1).json()
    again = push(gateway, {**V1, "message": "same content, other words"})
    assert again.status_code == 200 and again.json()["version"] == 1 and again.json()["created"] is False
    assert again.json()["hash"] == first["hash"]
    reordered = {k: V1[k] for k in reversed(list(V1))}
    assert push(gateway, reordered).json()["version"] == 1
    bad = push(gateway, {**V1, "messages": [{"role": "user", "content": "hi {{ user.name }}"}]})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "messages[0].content"
    bad = push(gateway, {**V1, "params": {"temperature": "hot"}})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "params.temperature"


def test_get_serves_a_version_with_an_etag_and_protected_labels_refuse_keys(gateway: Gateway) -> None:
    push(gateway, V1)
    push(gateway, V2)
    assert label(gateway, "support", "production", 1, protected=True).json()["protected"] is True
    key = {"Authorization": f"Bearer {gateway.key}"}
    shown = httpx.get(gateway.url + "/api/prompts/support", params={"label": "production"}, headers=key)
    assert shown.status_code == 200 and shown.json()["version"] == 1 and shown.json()["labels"] == ["production"]
    etag = shown.headers["etag"]
    same = httpx.get(
        gateway.url + "/api/prompts/support", params={"label": "production"}, headers={**key, "if-none-match": etag}
    )
    assert same.status_code == 304
    assert httpx.get(gateway.url + "/api/prompts/support", params={"version": 2}, headers=key).headers["etag"] != etag

    url = gateway.url + "/api/prompts/support/labels/"
    refused = httpx.put(url + "production", json={"version": 2}, headers=key)
    assert refused.status_code == 403 and "protected" in refused.json()["error"]["message"]
    assert httpx.put(url + "staging", json={"version": 2}, headers=key).json()["updated_by"].startswith("key:")
    assert httpx.put(url + "staging", json={"version": 2, "protected": True}, headers=key).status_code == 403
    assert httpx.put(url + "production", json={"version": 2, "tenant": "t1"}, headers=ADMIN_AUTH).status_code == 200
    assert httpx.put(url + "production", json={"version": 7, "tenant": "t1"}, headers=ADMIN_AUTH).status_code == 404
    assert httpx.get(gateway.url + "/api/prompts", headers={"Authorization": "Bearer nope"}).status_code == 401
    listed = httpx.get(gateway.url + "/api/prompts", headers=key).json()["data"]
    assert [(p["name"], p["latest"], p["labels"]) for p in listed] == [("support", 2, {"production": 2, "staging": 2})]
    # a key's own push lands in its tenant
    pushed = httpx.post(gateway.url + "/api/prompts", json={**V1, "name": "mine"}, headers=key)
    assert pushed.status_code == 201 and pushed.json()["tenant"] == "t1" and pushed.json()["author"].startswith("key:")


def test_another_process_sees_a_label_move_within_its_refresh(gateway: Gateway, up: FakeUpstream) -> None:
    """A label moved straight in the store (another gateway, or `keel prompts label`) is served after the
    refresh worker's next pass, with no admin write in this process."""
    from tests.conftest import until

    push(gateway, V1)
    push(gateway, V2)
    label(gateway, "support", "production", 1)
    store = gateway.runtime.store
    store.set_prompt_label("t1", "support", "production", 2, protected=None, by="elsewhere", now=0.0)
    with client(gateway) as c:

        def served_v2() -> bool:
            raw = by_prompt(c, {"id": "support", "label": "production", "variables": VARS})
            return bool(raw.headers["x-keel-prompt-version"] == "support@2")

        assert until(served_v2, timeout=10)


def test_keel_prompts_cli_pushes_files_idempotently_and_the_gateway_serves_them(
    gateway: Gateway, up: FakeUpstream, tmp_path: Any
) -> None:
    """`keel prompts push|list|show|diff|label` on the gateway's own store; the running gateway serves the
    label the CLI moved."""
    import os
    import subprocess
    import sys

    import yaml

    from tests.conftest import until

    def keel(*args: str, code: int = 0) -> str:
        env = {k: v for k, v in os.environ.items() if k != "KEEL_CONFIG"}
        done = subprocess.run(
            [sys.executable, "-m", "keel.cli.main", *args],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == code, done.stderr
        return done.stdout + done.stderr

    (tmp_path / "support.yaml").write_text(yaml.safe_dump({k: v for k, v in V1.items()}))
    (tmp_path / "two.yaml").write_text(yaml.safe_dump_all([V2, {**V1, "name": "other"}]))
    pushed = json.loads(keel("prompts", "push", "support.yaml", "two.yaml", "--tenant", "t1", "--json"))
    assert [(p["name"], p["version"], p["created"]) for p in pushed] == [
        ("support", 1, True), ("support", 2, True), ("other", 1, True)
    ]  # fmt: skip
    assert "support v1 (unchanged)" in keel("prompts", "push", "support.yaml", "--tenant", "t1")
    listed = json.loads(keel("prompts", "list", "--json"))
    assert [(r["name"], r["latest"]) for r in listed] == [("other", 1), ("support", 2)]
    assert "production → v1 (protected)" in keel(
        "prompts", "label", "support", "production", "v1", "--tenant", "t1", "--protect"
    )
    shown = json.loads(keel("prompts", "show", "support@production", "--tenant", "t1", "--json"))
    assert (shown["version"], shown["labels"]) == (1, ["production"])
    assert "Question: {{ question }}" in keel("prompts", "show", "support@1", "--tenant", "t1")
    diff = keel("prompts", "diff", "support", "v1", "v2", "--tenant", "t1")
    assert diff.startswith("--- support@v1\n+++ support@v2\n")
    assert "\n+- content: 'v2 for {{customer}} / {{product}}: {{question}}'" in diff
    assert "\n-- content: 'Question: {{ question }}'" in diff and "\n alias: gpt-4o-mini" in diff
    assert "no version 9" in keel("prompts", "label", "support", "production", "9", "--tenant", "t1", code=1)
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump({**V1, "messages": [{"role": "user", "content": "{{ a.b }}"}]}))
    assert "bad.yaml: messages[0].content:" in keel("prompts", "push", "bad.yaml", "--tenant", "t1", code=1)

    rolled = keel(
        "prompts", "rollout", "support", "--label", "production", "--to", "v2", "--weight", "10", "--tenant", "t1"
    )
    assert "support production: v1 stable, v2 10%" in rolled
    assert "v1 stable\n" in keel("prompts", "rollback", "support", "--label", "production", "--tenant", "t1")
    keel("prompts", "label", "support", "production", "2", "--tenant", "t1")
    with client(gateway) as c:
        assert until(
            lambda: (
                by_prompt(c, {"id": "support", "label": "production", "variables": VARS}).headers[
                    "x-keel-prompt-version"
                ]
                == "support@2"
            ),
            timeout=10,
        )


def test_keel_client_renders_a_fetched_version_as_the_gateway_does(gateway: Gateway, up: FakeUpstream) -> None:
    from keel.client.prompts import TemplateError, render

    schema = {"type": "object", "properties": {"customer": {"type": "string"}}, "required": ["customer"]}
    push(gateway, {**V1, "variables": schema})
    key = {"Authorization": f"Bearer {gateway.key}"}
    version = httpx.get(gateway.url + "/api/prompts/support", params={"version": 1}, headers=key).json()
    turn = [{"role": "user", "content": "more"}]
    call = render(version, VARS, messages=turn)
    with client(gateway) as c:
        c.chat.completions.create(**call)
        mine = up.requests[-1]["json"]
        by_prompt(c, {"id": "support", "version": 1, "variables": VARS}, messages=turn)
        theirs = up.requests[-1]["json"]
        with pytest.raises(openai.BadRequestError) as typed:
            by_prompt(c, {"id": "support", "version": 1, "variables": {**VARS, "customer": 3}})
    assert mine == theirs
    assert isinstance(typed.value.body, dict) and typed.value.body["param"] == "prompt.variables.customer"
    with pytest.raises(TemplateError) as bad:
        render(version, {**VARS, "customer": 3})
    assert bad.value.where == "variables.customer"


def test_a_rollout_splits_users_stickily_and_ends_on_rollback(gateway: Gateway, up: FakeUpstream) -> None:
    push(gateway, V1)
    push(gateway, V2)
    started = label(gateway, "support", "production", 1, rollout=[{"version": 2, "weight": 50}])
    assert started.json()["rollout"] == [{"version": 2, "weight": 50.0}]
    bad = label(gateway, "support", "production", 1, rollout=[{"version": 2, "weight": 101}])
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "rollout[0].weight"
    assert label(gateway, "support", "production", 1, rollout=[{"version": 9, "weight": 5}]).status_code == 404
    ref = {"id": "support", "label": "production", "variables": VARS}
    seen: dict[str, set[str]] = {}
    trace_ids = []
    with client(gateway) as c:
        for i in range(24):
            for _ in range(2):  # a user's later call keeps the variant
                raw = by_prompt(c, ref, user=f"user-{i}")
                seen.setdefault(f"user-{i}", set()).add(raw.headers["x-keel-prompt-version"])
                trace_ids.append(raw.headers["x-keel-trace-id"])
        assert all(len(v) == 1 for v in seen.values()), seen
        assert {v for vs in seen.values() for v in vs} == {"support@1", "support@2"}  # both variants served
        session = c.chat.completions.with_raw_response.create(
            model="prompt", messages=[], extra_body={"prompt": ref}, extra_headers={"x-keel-session": "s-1"}
        )
        assert session.headers["x-keel-prompt-version"] in ("support@1", "support@2")

        assert label(gateway, "support", "production", 1).json()["rollout"] == []  # rollback: a plain label
        after = {by_prompt(c, ref, user=f"user-{i}").headers["x-keel-prompt-version"] for i in range(24)}
        assert after == {"support@1"}
    traces = {t.id: t for t in gateway.traces()}
    for tid in trace_ids:
        t = traces[tid]
        assert t.tags["keel.prompt_variant"] == ("rollout" if t.prompt_version == "support@2" else "stable")
    # usage per prompt version (the rollups' dimension) matches the traces
    rows = httpx.get(gateway.url + "/api/usage", params={"by": "prompt_version"}, headers=ADMIN_AUTH).json()["data"]
    counted: dict[str, int] = {}
    for t in traces.values():
        counted[t.prompt_version] = counted.get(t.prompt_version, 0) + 1
    assert {r["prompt_version"]: r["calls"] for r in rows} == counted


def test_a_streamed_call_by_prompt_renders_and_names_its_version(gateway: Gateway, up: FakeUpstream) -> None:
    push(gateway, V1)
    with (
        client(gateway) as c,
        c.chat.completions.with_streaming_response.create(
            model="prompt",
            messages=[],
            stream=True,
            stream_options={"include_usage": True},
            extra_body={"prompt": {"id": "support", "version": 1, "variables": VARS}},
        ) as raw,
    ):
        assert raw.headers["x-keel-prompt-version"] == "support@1"
        text = "".join(chunk.choices[0].delta.content or "" for chunk in raw.parse() if chunk.choices)
    sent = up.requests[-1]["json"]
    assert sent["stream"] is True and sent["messages"][1] == {"role": "user", "content": "Question: {{customer}} how?"}
    assert text.startswith("echo:")
