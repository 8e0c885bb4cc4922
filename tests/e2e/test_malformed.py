"""Malformed input is a 4xx in the caller's format naming the field, never a 500 or 502 (issue 10,
items 8 and 12), over real HTTP against one gateway per store with the fake upstream.

Each example below failed on the old code: a 500 from a content part the token estimate could not
read, a role that was a list, a tool call whose arguments were an object (502 from the Anthropic
adapter), `n: true` taken for 1, `max_tokens` 2^63 passed on, a key priority SQLite could not store,
NUL in names PostgreSQL refuses, `since=nan`, a non-ASCII session cookie, client-set `keel.*` tags.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from keel.testing import FakeUpstream
from tests.conftest import Gateway, base_config
from tests.served import serve, storage

USER = {"role": "user", "content": "hi"}


def _dumps(body: Any) -> bytes:
    return json.dumps(body).encode()  # the standard library's: integers beyond 64 bits, as clients may send


CALL = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def gw(
    request: pytest.FixtureRequest, upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    tmp = tmp_path_factory.mktemp(request.param)
    with storage(request.param, tmp) as url, serve(base_config(upstream, url, tmp), tmp) as gateway:
        yield gateway


@pytest.fixture
def client(gw: Gateway) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gw.url, timeout=20) as c:
        yield c


def _openai_error(r: httpx.Response, param: str | None) -> dict[str, Any]:
    assert 400 <= r.status_code < 500, (r.status_code, r.text)
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, body
    assert body["error"]["param"] == param, body
    return body["error"]  # type: ignore[no-any-return]


# ---- POST /v1/chat/completions -------------------------------------------------------------------

CHAT_CASES = [
    ({"messages": [{"role": "user", "content": [1, 2]}]}, "messages[0].content[0]"),
    ({"messages": [{"role": "user", "content": [None]}]}, "messages[0].content[0]"),
    ({"messages": [{"role": "user", "content": ["text"]}]}, "messages[0].content[0]"),
    ({"messages": [{"role": "user", "content": [{"type": 5}]}]}, "messages[0].content[0]"),
    ({"messages": [{"role": "user", "content": [{"type": "text", "text": None}]}]}, "messages[0].content[0].text"),
    ({"messages": [{"role": "user", "content": [{"type": "text", "text": 7}]}]}, "messages[0].content[0].text"),
    (
        {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": 3}]}]},
        "messages[0].content[0].image_url",
    ),
    ({"messages": [{"role": "user", "content": 12}]}, "messages[0].content"),
    ({"messages": [{"role": ["user"], "content": "x"}]}, "messages[0].role"),
    ({"messages": [{"role": {"a": 1}, "content": "x"}]}, "messages[0].role"),
    ({"messages": [{"role": "user", "content": "x", "name": 5}]}, "messages[0].name"),
    ({"messages": [{"role": "user", "content": "x", "name": ["a"]}]}, "messages[0].name"),
    ({"messages": [USER, {"role": "assistant", "content": None, "tool_calls": {"a": 1}}]}, "messages[1].tool_calls"),
    ({"messages": [USER, {"role": "assistant", "tool_calls": [5]}]}, "messages[1].tool_calls[0].function"),
    (
        {"messages": [USER, {"role": "assistant", "tool_calls": [{**CALL, "function": {"name": 5}}]}]},
        "messages[1].tool_calls[0].function.name",
    ),
    (
        {"messages": [USER, {"role": "assistant", "tool_calls": [{**CALL, "function": {"name": ["f"]}}]}]},
        "messages[1].tool_calls[0].function.name",
    ),
    (
        {
            "messages": [
                USER,
                {"role": "assistant", "tool_calls": [{**CALL, "function": {"name": "f", "arguments": {"x": 1}}}]},
            ]
        },
        "messages[1].tool_calls[0].function.arguments",
    ),
    ({"messages": [USER, {"role": "assistant", "tool_calls": [{**CALL, "id": 9}]}]}, "messages[1].tool_calls[0].id"),
    ({"messages": [{"role": "tool", "content": "x", "tool_call_id": 5}]}, "messages[0].tool_call_id"),
    ({"n": True}, "n"),
    ({"n": 2}, "n"),
    ({"n": "1"}, "n"),
    ({"max_tokens": 2**63}, "max_tokens"),
    ({"max_tokens": 10**30}, "max_tokens"),
    ({"max_tokens": True}, "max_tokens"),
    ({"max_completion_tokens": 2**64 - 1}, "max_completion_tokens"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": []}}]}, "tools[0].function.parameters"),
    ({"tools": [{"type": "function", "function": {"name": "f", "description": 3}}]}, "tools[0].function.description"),
    ({"tools": [{"type": "function", "function": {"name": ""}}]}, "tools[0].function.name"),
    ({"tool_choice": ["auto"]}, "tool_choice"),
    ({"temperature": "0.5"}, "temperature"),
    ({"metadata": {"keel.cache": "hit"}}, "metadata"),
]


@pytest.mark.parametrize("alias", ["gpt-4o-mini", "claude", "sim"])
@pytest.mark.parametrize(("change", "param"), CHAT_CASES)
def test_chat_field_errors_name_the_field(
    client: httpx.Client, gw: Gateway, upstream: FakeUpstream, alias: str, change: dict[str, Any], param: str
) -> None:
    before = len(upstream.requests)
    body = {"model": alias, "messages": [USER], **change}
    r = client.post("/v1/chat/completions", content=_dumps(body), headers={"authorization": f"Bearer {gw.key}"})
    _openai_error(r, param)
    assert r.status_code == 400
    assert len(upstream.requests) == before  # refused at the edge, before any provider saw it


# Bodies that are odd but valid: every target must serve or refuse them with a 4xx, never fail inside.
ODD_BUT_VALID = [
    {"user": "a\x00b"},
    {"metadata": {"team": {"deep": [1, 2, {"x": None}]}, "n": 18446744073709551615}},
    {
        "messages": [
            {"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "", "format": "wav"}}]}
        ]
    },
    {"messages": [{"role": "user", "content": ""}]},
    {"messages": [{"role": "user", "content": []}]},
    {"messages": [USER, {"role": "assistant", "content": None, "tool_calls": [{**CALL, "function": {"name": "f"}}]}]},
    {"messages": [{"role": "user", "content": "x\x00y\ufffd"}], "stop": ["\x00"]},
    {"some_new_param": 2**64 - 1, "another": [[[[]]]]},
    {"tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": {"type": "function"}},
    {"max_tokens": 10_000_000},
]


@pytest.mark.parametrize("alias", ["gpt-4o-mini", "claude", "sim"])
@pytest.mark.parametrize("change", ODD_BUT_VALID)
def test_odd_but_valid_bodies_never_fail_inside(
    client: httpx.Client, gw: Gateway, alias: str, change: dict[str, Any]
) -> None:
    body = {"model": alias, "messages": [USER], **change}
    r = client.post("/v1/chat/completions", content=_dumps(body), headers={"authorization": f"Bearer {gw.key}"})
    assert r.status_code < 500, r.text
    if r.status_code != 200:
        _openai_error(r, r.json()["error"]["param"])


# ---- POST /v1/messages (Anthropic's format) --------------------------------------------------------

MESSAGES_CASES = [
    ({"messages": [{"role": "user", "content": [1]}]}, "messages.0.content.0.type"),
    ({"messages": [{"role": ["user"], "content": "x"}]}, "messages.0.role"),
    ({"max_tokens": 2**63}, "max_tokens"),
    ({"max_tokens": True}, "max_tokens"),
    (
        {"messages": [{"role": "assistant", "content": [{"type": "tool_use", "id": "a", "name": 5, "input": {}}]}]},
        "messages.0.content.0.name",
    ),
    (
        {"messages": [{"role": "assistant", "content": [{"type": "tool_use", "id": "a", "name": "f", "input": []}]}]},
        "messages.0.content.0.input",
    ),
    ({"metadata": {"user_id": "u", "keel.tenant": "other"}}, "metadata.keel.tenant"),
]


@pytest.mark.parametrize(("change", "param"), MESSAGES_CASES)
def test_messages_errors_are_anthropic_shaped(
    client: httpx.Client, gw: Gateway, change: dict[str, Any], param: str
) -> None:
    body = {"model": "claude", "max_tokens": 16, "messages": [USER], **change}
    r = client.post("/v1/messages", content=_dumps(body), headers={"x-api-key": gw.key})
    assert r.status_code == 400, r.text
    data = r.json()
    assert data["type"] == "error" and data["error"]["type"] == "invalid_request_error", data
    message = data["error"]["message"]
    assert message.startswith(f"{param}:") or message.startswith(f"'{param}'"), data  # the field, first


# ---- reserved and bounded tags ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "header",
    [
        "keel.cache=hit",
        "team=ml, keel.tenant=other",
        ",".join(f"t{i}=v" for i in range(33)),
        "k" * 65 + "=v",
        "k=" + "v" * 257,
    ],
)
def test_x_keel_tags_reserved_and_bounded(client: httpx.Client, gw: Gateway, header: str) -> None:
    body = {"model": "sim", "messages": [USER]}
    r = client.post(
        "/v1/chat/completions", json=body, headers={"authorization": f"Bearer {gw.key}", "x-keel-tags": header}
    )
    error = _openai_error(r, "x-keel-tags")
    assert r.status_code == 400
    if "keel." in header:
        assert "keel." in error["message"]


def test_client_tags_are_still_recorded(client: httpx.Client, gw: Gateway) -> None:
    headers = {"authorization": f"Bearer {gw.key}", "x-keel-tags": "team=ml,exp=" + "v" * 256}
    body = {"model": "sim", "messages": [USER], "metadata": {"owner": "ana", "keelish": "fine"}}
    r = client.post("/v1/chat/completions", json=body, headers=headers)
    assert r.status_code == 200, r.text
    trace_id = r.headers["x-keel-trace-id"]
    rows = [t for t in gw.traces() if t.id == trace_id]
    assert (
        rows and rows[0].tags["team"] == "ml" and rows[0].tags["owner"] == "ana" and rows[0].tags["keelish"] == "fine"
    )


# ---- the admin API -----------------------------------------------------------------------------------

ADMIN_CASES = [
    ("POST", "/api/tenants", {"name": ["x"]}, "name"),
    ("POST", "/api/tenants", {"name": "a\x00b"}, "name"),
    ("POST", "/api/tenants", {"name": "x" * 257}, "name"),
    ("POST", "/api/tenants", {"name": "ok-name", "regions": ["us\x00"]}, "regions"),
    ("POST", "/api/keys", {"tenant": "t1", "priority": 2**63}, "priority"),
    ("POST", "/api/keys", {"tenant": "t1", "max_priority": -(2**40)}, "max_priority"),
    ("POST", "/api/keys", {"tenant": "t1", "priority": True}, "priority"),
    ("POST", "/api/keys", {"tenant": "t1", "name": ["x"]}, "name"),
    ("POST", "/api/keys", {"tenant": "t1", "name": "a\x00"}, "name"),
    ("POST", "/api/keys", {"tenant": "t1", "user": 5}, "user"),
    ("POST", "/api/keys", {"tenant": ["t1"]}, "tenant"),
    ("POST", "/api/keys", {"tenant": "t1", "models": ["a\x00"]}, "models"),
    ("PATCH", "/api/tenants/t1", {"regions": [5]}, "regions"),
    ("POST", "/api/tenants/t1/purge", {"user": "a\x00"}, "user"),
    ("POST", "/api/tenants/t1/purge", {"user": 5}, "user"),
    ("DELETE", "/api/tenants/t1/users/a%00", None, "user"),
    ("PUT", "/api/limits/tenant/t%00", {"limits": {"rpm": 5}}, "subject"),
    ("GET", "/api/traces/%00abc", None, "trace_id"),
    ("GET", "/api/traces?user=a%00", None, "user"),
    ("GET", "/api/keys?tenant=%00", None, "tenant"),
    ("GET", "/api/limits/usage?tenant=t%00", None, "tenant"),
    ("PATCH", "/api/tenants/t%001", {"regions": None}, "name"),
]


@pytest.mark.parametrize(("method", "path", "body", "param"), ADMIN_CASES)
def test_admin_field_errors_name_the_field(
    client: httpx.Client, gw: Gateway, method: str, path: str, body: Any, param: str
) -> None:
    content = None if body is None else _dumps(body)
    r = client.request(method, path, content=content, headers={"authorization": f"Bearer {gw.admin}"})
    _openai_error(r, param)
    assert r.status_code == 400


@pytest.mark.parametrize("route", ["/api/usage", "/api/traces"])
@pytest.mark.parametrize(
    ("query", "param"),
    [
        ("since=nan", "since"),
        ("since=inf", "since"),
        ("since=-inf", "since"),
        ("since=1e999", "since"),
        ("since=nanh", "since"),
        ("since=1e308d", "since"),
        ("until=infinity", "until"),
        ("since=1h&until=NaN", "until"),
    ],
)
def test_usage_and_trace_windows_are_finite(
    client: httpx.Client, gw: Gateway, route: str, query: str, param: str
) -> None:
    r = client.get(f"{route}?{query}", headers={"authorization": f"Bearer {gw.admin}"})
    _openai_error(r, param)


# ---- the dashboard ---------------------------------------------------------------------------------


@pytest.mark.parametrize("cookie", ["keel_ui=é".encode(), b"keel_ui=\xff\xfe", "keel_ui=1.2.ü".encode()])
def test_non_ascii_session_cookie_is_a_redirect_to_login(client: httpx.Client, cookie: bytes) -> None:
    for path in ("/ui", "/ui/traces", "/ui/traces/abc"):
        r = client.get(path, headers={"cookie": cookie})
        assert r.status_code == 303, (path, r.status_code, r.text[:200])
        assert r.headers["location"].startswith("/ui/login")


@pytest.mark.parametrize("path", ["/ui/traces?user=%00", "/ui/traces/%00", "/ui?tenant=a%00", "/ui/traces?since=nan"])
def test_dashboard_bad_parameters_are_400_pages(client: httpx.Client, gw: Gateway, path: str) -> None:
    login = client.post("/ui/login", data={"token": gw.admin, "next": "/ui"})
    assert login.status_code == 303
    r = client.get(path)
    assert r.status_code == 400, (r.status_code, r.text[:300])
    assert r.headers["content-type"].startswith("text/html")
