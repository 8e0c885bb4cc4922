"""Property-based fuzzing of every public route (issue 10, item 8), against one real gateway.

Routes are read from `create_app`: a route no family below covers fails `test_every_route_is_fuzzed`
by name, so a new endpoint cannot go unfuzzed. Per family, hypothesis sends structured-but-wrong
JSON (valid bodies with values swapped for wrong types, nulls, huge integers, NaN-ish strings,
nesting up to 50 levels, unicode and NUL; keys deleted or added), junk bytes, fuzzed query strings
and headers (x-keel-*, cookies, auth). Every answer must be below 500 and in the caller's format:
OpenAI's error object on /v1/*, Anthropic's on /v1/messages, the admin API's (OpenAI-shaped) on
/api/*, HTML or a redirect on /ui. A streamed 200 must not hide an internal error event. Afterwards
the process answers, the trace writer is healthy (/readyz 200) and no internal error was logged.

One server for the module (PostgreSQL, the strictest store: NUL, index sizes) with the fake
upstream; examples are bounded and derandomized, so a CI run is stable and takes well under a
minute. schemathesis runs against the admin API's OpenAPI document in test_openapi.py.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keel.api.app import create_app
from keel.keys.auth import issue_key
from keel.testing import FakeUpstream
from keel.testing.oidc import FakeIssuer, FakeUser
from tests.conftest import Gateway, base_config, until
from tests.served import serve, storage

EXAMPLES = 50  # per route taking input; x3 for the model routes' bodies, /3 for routes without input
EXPLORE = int(os.environ.get("KEEL_FUZZ_EXPLORE", "0"))  # N > 0: N times the examples, random seeds (a local hunt)
SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=not EXPLORE,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)


# ---- the server -------------------------------------------------------------------------------------


@dataclass(repr=False)
class Target:
    gw: Gateway
    client: httpx.Client
    session: str  # a dashboard session cookie
    trace_id: str  # a real trace, for /api/traces/{id} and the trace page
    key_id: str  # a sacrificial key, for revoke
    errors: list[logging.LogRecord] = field(default_factory=list)
    ids: dict[str, str] = field(default_factory=dict)  # a real file, batch and async job of the key's tenant

    def __repr__(self) -> str:
        return f"Target({self.gw.url})"


class _Errors(logging.Handler):
    def __init__(self, sink: list[logging.LogRecord]) -> None:
        super().__init__(logging.ERROR)
        self.sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        self.sink.append(record)


@pytest.fixture(scope="module")
def target(upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    tmp = tmp_path_factory.mktemp("fuzz")
    raw = base_config(upstream, "", tmp)
    raw["traces"]["blobs_url"] = f"file://{tmp}/blobs"  # uploaded files' bytes (PostgreSQL's default is ./.keel)
    raw["models"]["sim"]["slo"] = {"availability": 99.9, "p95_ms": 3000}  # /api/slo and /ui/slo compute one
    users = {"ann": FakeUser("pw", groups=("admins",))}  # /ui/sso/corp/... signs in at a real issuer
    corp = {"client_id": "keel", "tenant": "t1", "roles": {"admins": "admin"}}
    with (
        FakeIssuer(users, {"keel": None}) as idp,
        storage("postgres", tmp) as url,
        serve({**raw, "storage": {"url": url}, "sso": {"providers": {"corp": {**corp, "issuer": idp.url}}}}, tmp) as gw,
    ):
        store = gw.runtime.store
        store.create_tenant("fz")  # the tenant fuzzed admin calls may purge, limit or delete
        key_id = issue_key(store, "fz", name="sacrificial").row.id
        with httpx.Client(base_url=gw.url, timeout=30) as client:
            r = client.post(
                "/v1/chat/completions",
                json={"model": "sim", "messages": [{"role": "user", "content": "seed"}]},
                headers={"authorization": f"Bearer {gw.key}"},
            )
            assert r.status_code == 200, r.text
            ids = _seed_deferred(client, gw.key)
            admin = {"authorization": f"Bearer {gw.admin}"}
            for version in (PROMPT, {**PROMPT, "messages": [{"role": "user", "content": "v2 {{x}}"}]}):
                assert client.post("/api/prompts", json=version, headers=admin).status_code == 201
            rag = {"tenant": "t1", "name": "fzc", "model": "hash:64"}
            assert client.post("/api/rag/collections", json=rag, headers=admin).status_code == 201
            for doc in ("doc1", "dir/doc2"):
                put = {"tenant": "t1", "text": "hello world", "groups": ["g"]}
                stored = client.put(f"/api/rag/collections/fzc/documents/{doc}", json=put, headers=admin)
                assert stored.status_code in (200, 201, 202), stored.text
            docs = "/api/rag/collections/fzc/documents"

            def indexed() -> bool:
                data = client.get(docs, params={"tenant": "t1"}, headers=admin).json()["data"]
                return len(data) == 2 and all(d["status"] == "indexed" for d in data)

            # indexing imports numpy in a worker thread: done before hypothesis draws (it looks numpy up)
            assert until(indexed)
            login = client.post("/ui/login", data={"token": gw.admin, "next": "/ui"})
            assert login.status_code == 303
            session = login.cookies["keel_ui"]
            client.cookies.clear()
            errors: list[logging.LogRecord] = []
            handler = _Errors(errors)
            logging.getLogger("keel").addHandler(handler)
            logging.getLogger("uvicorn.error").addHandler(handler)
            try:
                yield Target(gw, client, session, r.headers["x-keel-trace-id"], key_id, errors, ids)
            finally:
                logging.getLogger("keel").removeHandler(handler)
                logging.getLogger("uvicorn.error").removeHandler(handler)


def _seed_deferred(client: httpx.Client, key: str) -> dict[str, str]:
    """A file, a batch, an async call's job and a stored response, for the routes that name them."""
    auth = {"authorization": f"Bearer {key}"}
    line = {
        "custom_id": "a",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": "sim", "messages": [USER]},
    }
    f = client.post(
        "/v1/files", files={"file": ("in.jsonl", json.dumps(line).encode())}, data={"purpose": "batch"}, headers=auth
    )
    assert f.status_code == 200, f.text
    b = client.post("/v1/batches", json={"input_file_id": f.json()["id"], "endpoint": "/v1/chat/completions",
                                         "completion_window": "24h"}, headers=auth)  # fmt: skip
    assert b.status_code == 200, b.text
    j = client.post(
        "/v1/chat/completions", json={"model": "sim", "messages": [USER]}, headers={**auth, "prefer": "respond-async"}
    )
    assert j.status_code == 202, j.text
    r = client.post("/v1/responses", json={"model": "sim", "input": "seed"}, headers=auth)  # a stored response
    assert r.status_code == 200, r.text
    return {
        "file_id": f.json()["id"],
        "batch_id": b.json()["id"],
        "job_id": j.json()["id"],
        "response_id": r.json()["id"],
    }


# ---- values -------------------------------------------------------------------------------------------

NANISH = ["nan", "NaN", "inf", "-inf", "Infinity", "1e999", "-0", "0x10", "1_000", " 1 ", "", "null", "true"]
WEIRD_TEXT = ["\x00", "a\x00b", "\u202e", "\ufeff", "é", "日本", "\U0001f600", "\ud800", "keel.cache", "../../etc"]
HUGE_INTS = [2**31, 2**53 + 1, 2**63 - 1, 2**63, 2**64 - 1, -(2**63), -(2**63) - 1, 10**30, -1, 0]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from(HUGE_INTS),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=40),
    st.sampled_from(NANISH + WEIRD_TEXT),
)


def _nest(depth: int, leaf: Any, as_list: bool) -> Any:
    for _ in range(depth):
        leaf = [leaf] if as_list else {"k": leaf}
    return leaf


nested = st.builds(_nest, st.integers(1, 50), scalars, st.booleans())
# One value of each JSON type, and the edge values that broke Keel before: swapped in for a valid value,
# they hit "a field of the wrong type" far more often than an arbitrary value does.
swaps = st.one_of(
    st.sampled_from(
        [None, True, 0, -1, 1.5, "", "\x00", "a\x00b", "nan", [], {}, [None], [1], {"": None}, 2**63, 2**64 - 1]
    ),
    nested,
)
json_values = st.one_of(
    scalars,
    nested,
    st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
        max_leaves=12,
    ),
)
fuzz_text = st.one_of(st.text(max_size=60), st.sampled_from(NANISH + WEIRD_TEXT + [str(i) for i in HUGE_INTS]))
url_text = fuzz_text.map(lambda s: s.encode("utf-8", "replace").decode())  # URLs carry UTF-8: no lone surrogates
# Header values as bytes a server reads as a header (visible ASCII, space, tab, obs-text 0x80-0xff): others
# are refused by the HTTP parser before any Keel code runs, so they test uvicorn, not Keel.
_HEADER_OK = bytes([9, *range(32, 127), *range(128, 256)])
header_bytes = st.one_of(
    st.binary(max_size=80).map(lambda b: bytes(c for c in b if c in _HEADER_OK).strip()),
    fuzz_text.map(lambda s: bytes(c for c in s.encode("utf-8", "replace") if c in _HEADER_OK).strip()),
)
junk_body = st.one_of(
    st.binary(max_size=300),
    st.sampled_from([b"", b"{", b"[]", b"null", b"1", b'"x"', b"NaN", b"{}" * 50, b'{"model": NaN}', b"\xff\xfe"]),
)


def _paths(value: Any, at: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield at
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, (*at, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _paths(v, (*at, i))


def _replace(value: Any, path: tuple[Any, ...], new: Any, delete: bool) -> Any:
    if not path:
        return new
    head, rest = path[0], path[1:]
    copy = dict(value) if isinstance(value, dict) else list(value)
    if delete and not rest:
        del copy[head]
    else:
        copy[head] = _replace(value[head], rest, new, delete) if rest else new
    return copy


@st.composite
def mutated(draw: st.DrawFn, valid: Any) -> Any:
    """`valid` with 1-3 values replaced by fuzz values, deleted, or an unknown key added."""
    body = valid
    for _ in range(draw(st.integers(1, 3))):
        paths = list(_paths(body))
        path = draw(st.sampled_from(paths))
        op = draw(st.sampled_from(["swap", "swap", "swap", "replace", "delete", "add"]))
        if op == "delete" and path:
            body = _replace(body, path, None, delete=True)
        elif op == "add":
            parent = path if isinstance(_get(body, path), dict) else ()
            if isinstance(_get(body, parent), dict):
                body = _replace(body, (*parent, draw(st.text(max_size=12))), draw(json_values), delete=False)
        else:
            body = _replace(body, path, draw(swaps if op == "swap" else json_values), delete=False)
    return body


def _get(value: Any, path: tuple[Any, ...]) -> Any:
    for p in path:
        value = value[p]
    return value


def _dumps(body: Any) -> bytes:
    return json.dumps(body).encode()  # the standard library: integers beyond 64 bits, lone surrogates escaped


# ---- routes and their valid requests -----------------------------------------------------------------

USER = {"role": "user", "content": "hello there"}
CHAT = {
    "model": "gpt-4o-mini",
    "messages": [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": [{"type": "text", "text": "hi"}, {"type": "image_url", "image_url": {"url": "https://x/y.png"}}]},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "42"},
        USER,
    ],
    "max_tokens": 32,
    "temperature": 0.5,
    "stream": False,
    "stream_options": {"include_usage": True},
    "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
    "tool_choice": "auto",
    "user": "u1",
    "metadata": {"team": "ml"},
    "stop": ["\n\n"],
    "n": 1,
}  # fmt: skip
MESSAGES = {
    "model": "claude",
    "max_tokens": 32,
    "system": [{"type": "text", "text": "be brief", "cache_control": {"type": "ephemeral"}}],
    "messages": [
        {"role": "user", "content": [{"type": "text", "text": "hi"}]},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "f", "input": {"a": 1}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "42"}, {"type": "text", "text": "and?"}]},
    ],
    "tools": [{"name": "f", "input_schema": {"type": "object"}}],
    "tool_choice": {"type": "auto"},
    "metadata": {"user_id": "u1"},
    "stream": False,
    "temperature": 0.5,
    "top_k": 5,
    "stop_sequences": ["END"],
}  # fmt: skip
MODELS = ["gpt-4o-mini", "claude", "sim", "embed", "nope"]
PROMPT = {
    "tenant": "t1", "name": "fz", "alias": "sim", "params": {"temperature": 0.1, "max_tokens": 8}, "message": "m",
    "messages": [{"role": "system", "content": "be {{x}}"}, {"role": "user", "content": [{"type": "text", "text": "{{ x }}"}]}],
    "variables": {"type": "object", "properties": {"x": {"type": "string"}}}, "label": "production",
    "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
    "response_format": {"type": "json_object"},
}  # fmt: skip

TOOL = {
    "tenant": "t1", "name": "fz_tool", "kind": "http", "description": "d", "http": {"method": "POST", "url": "http://127.0.0.1:9/x"},
    "parameters": {"type": "object", "properties": {"amount": {"type": "number"}}},
    "policy": {"default": "allow", "rules": [{"when": "amount > 100", "action": "approve"}]}, "timeout_s": 1,
}  # fmt: skip


@dataclass(frozen=True)
class Route:
    method: str
    path: str  # with {params}
    family: str
    body: Any = None  # a valid JSON body to mutate; None: no JSON body
    query: tuple[str, ...] = ()  # parameters the route reads
    form: bool = False
    multipart: bool = False  # a file upload: multipart/form-data with `purpose` and `file`


ROUTES = [
    Route("POST", "/v1/chat/completions", "openai", CHAT),
    Route("POST", "/v1/embeddings", "openai", {"model": "embed", "input": ["a", "b"], "encoding_format": "base64"}),
    Route("GET", "/v1/models", "openai"),
    Route("GET", "/v1/models/{model:path}", "openai"),
    Route("POST", "/v1/responses", "openai", {"model": "sim", "input": [{"role": "user", "content": "hi"}], "instructions": "be brief",
                                              "max_output_tokens": 20, "text": {"format": {"type": "text"}}, "store": True}),
    Route("GET", "/v1/responses/{response_id}", "openai"),
    Route("GET", "/v1/responses/{response_id}/input_items", "openai", query=("after", "limit", "order")),
    Route("DELETE", "/v1/responses/{response_id}", "openai"),
    Route("POST", "/v1/completions", "openai", {"model": "sim", "prompt": "hi", "max_tokens": 5, "stream": False, "stop": ["x"]}),
    Route("POST", "/v1/moderations", "openai", {"model": "gpt-4o-mini", "input": ["hi", "kill"]}),
    Route("POST", "/v1/rerank", "openai", {"model": "gpt-4o-mini", "query": "q", "documents": ["a", "b"], "top_n": 1}),
    Route("POST", "/openai/deployments/{deployment}/chat/completions", "openai", CHAT),
    Route("POST", "/v1/messages", "anthropic", MESSAGES),
    Route("POST", "/v1/messages/count_tokens", "anthropic", {"model": "claude", "system": "s", "messages": [USER]}),
    Route("GET", "/api/tenants", "admin"),
    Route("POST", "/api/tenants", "admin", {"name": "fz-new", "regions": ["us"]}),
    Route("PATCH", "/api/tenants/{name}", "admin", {"regions": ["us", "eu"]}),
    Route("POST", "/api/tenants/{name}/purge", "admin", {"user": "u1", "revoke_keys": False, "delete_tenant": False}),
    Route("DELETE", "/api/tenants/{name}/users/{user}", "admin"),
    Route("POST", "/api/retention/sweep", "admin"),
    Route("GET", "/api/keys", "admin", query=("tenant",)),
    Route("POST", "/api/keys", "admin", {"tenant": "fz", "name": "k", "user": "u", "models": ["sim"], "priority": 1, "max_priority": 2, "team": "fzt"}),
    Route("POST", "/api/keys/{key_id}/revoke", "admin"),
    Route("GET", "/api/traces", "admin", query=("since", "until", "limit", "tenant", "user", "feature", "alias", "status")),
    Route("GET", "/api/traces/{trace_id}", "admin"),
    Route("POST", "/api/traces/{trace_id}/replay", "admin", {"alias": "sim"}),
    Route("GET", "/api/usage", "admin", query=("by", "since", "until", "grain", "tenant", "limit")),
    Route("GET", "/api/targets", "admin"),
    Route("GET", "/api/limits", "admin"),
    Route("GET", "/api/limits/usage", "admin", query=("tenant", "key", "user", "feature", "alias", "team")),
    Route("PUT", "/api/limits/{scope}/{subject}", "admin", {"limits": {"rpm": 1000, "daily_usd": 5.5}, "on_store_error": "open"}),
    Route("DELETE", "/api/limits/{scope}/{subject}", "admin"),
    Route("POST", "/v1/files", "openai", multipart=True),
    Route("GET", "/v1/files", "openai", query=("after", "limit", "purpose")),
    Route("GET", "/v1/files/{file_id}", "openai"),
    Route("GET", "/v1/files/{file_id}/content", "openai"),
    Route("DELETE", "/v1/files/{file_id}", "openai"),
    Route("POST", "/v1/batches", "openai", {"input_file_id": "{file_id}", "endpoint": "/v1/chat/completions",
                                            "completion_window": "24h", "metadata": {"run": "1"}}),
    Route("GET", "/v1/batches", "openai", query=("after", "limit")),
    Route("GET", "/v1/batches/{batch_id}", "openai"),
    Route("POST", "/v1/batches/{batch_id}/cancel", "openai"),
    Route("GET", "/v1/jobs/{job_id}", "openai"),
    Route("GET", "/api/jobs", "admin", query=("state", "kind", "tenant", "queue", "limit", "before")),
    Route("GET", "/api/jobs/{job_id}", "admin"),
    Route("POST", "/api/jobs/{job_id}/cancel", "admin"),
    Route("POST", "/api/jobs/{job_id}/retry", "admin"),
    Route("GET", "/api/prompts", "admin", query=("tenant",)),
    Route("POST", "/api/prompts", "admin", PROMPT),
    Route("GET", "/api/prompts/{name}", "admin", query=("tenant", "version", "label")),
    Route("GET", "/api/prompts/{name}/versions", "admin", query=("tenant",)),
    Route("PUT", "/api/prompts/{name}/labels/{label}", "admin", {"tenant": "t1", "version": 1, "protected": False, "rollout": [{"version": 2, "weight": 10}]}),
    Route("POST", "/v1/chat/completions", "openai", {"model": "prompt", "messages": [USER], "prompt": {"id": "fz", "label": "production", "variables": {"x": "1"}}, "user": "u1"}),
    Route("POST", "/api/prompts/{name}/rollouts", "admin", {"tenant": "t1", "label": "production", "to": 2, "weight": 10, "guards": ["error_rate<0.02", "feedback>=0.5"],
                                                            "steps": [50], "every": "1h", "window": "5m", "min_calls": 5}),
    Route("GET", "/api/prompts/{name}/rollouts", "admin", query=("tenant",)),
    Route("POST", "/api/prompts/{name}/labels/{label}/rollback", "admin", query=("tenant",)),
    Route("GET", "/api/prompts/{name}/history", "admin", query=("tenant", "label", "limit")),
    Route("POST", "/api/feedback", "openai", {"trace_id": "0" * 30, "score": 0.5, "comment": "fine", "user": "u1"}),
    Route("GET", "/api/feedback", "admin", query=("by", "since", "until", "tenant")),
    Route("POST", "/v1/messages", "anthropic", {"model": "prompt", "max_tokens": 8, "messages": [], "prompt": {"id": "fz", "version": 1, "variables": {"x": "1"}}}),
    Route("GET", "/ui/login", "dashboard", query=("next",)),
    Route("POST", "/ui/login", "dashboard", form=True),
    Route("POST", "/ui/logout", "dashboard"),
    Route("GET", "/ui", "dashboard", query=("window", "tenant")),
    Route("GET", "/ui/traces", "dashboard", query=("window", "tenant", "user", "feature", "alias", "status", "limit")),
    Route("GET", "/ui/traces/{trace_id}", "dashboard"),
    Route("GET", "/ui/jobs", "dashboard", query=("state", "kind", "tenant", "queue", "limit", "before")),
    Route("GET", "/ui/evals", "dashboard"),
    Route("GET", "/ui/evals/{run_id}", "dashboard", query=("baseline",)),
    Route("POST", "/api/evals/runs", "admin", {"tenant": "t1", "key_id": "k", "repeat": 1, "concurrency": 2, "suite": {
        "prompts": ["{{q}}"], "providers": ["sim"], "tests": [{"vars": {"q": "x"}, "assert": [{"type": "contains", "value": "x"}]}]}}),
    Route("GET", "/api/evals/runs", "admin", query=("tenant", "suite", "label", "limit")),
    Route("GET", "/api/evals/runs/{run_id}", "admin", query=("results",)),
    Route("GET", "/api/evals/runs/{run_id}/compare", "admin", query=("baseline", "max_regressions", "min_pass_rate", "alpha")),
    Route("GET", "/ui/prompts", "dashboard", query=("tenant",)),
    Route("GET", "/ui/prompts/{tenant}/{name}", "dashboard", query=("diff",)),
    Route("GET", "/api/audit", "admin", query=("since", "until", "tenant", "actor", "action", "target", "after", "limit")),
    Route("GET", "/ui/approvals", "dashboard", query=("tenant", "call", "result")),
    Route("POST", "/ui/approvals/{call_id}/{action}", "dashboard"),
    Route("GET", "/api/audit", "admin", query=("since", "until", "tenant", "after", "limit")),
    Route("GET", "/api/audit/verify", "admin"),
    Route("GET", "/api/audit/export", "admin", query=("since", "until", "tenant", "actor", "action", "target", "format")),
    Route("GET", "/api/agents/tools", "admin", query=("tenant",)),
    Route("POST", "/api/agents/tools", "admin", TOOL),
    Route("GET", "/api/agents/tools/{name}", "admin", query=("tenant",)),
    Route("DELETE", "/api/agents/tools/{name}", "admin", query=("tenant",)),
    Route("GET", "/api/agents", "admin", query=("tenant",)),
    Route("POST", "/api/agents", "admin", {"tenant": "t1", "name": "fz", "model": "sim", "tools": [], "max_steps": 2, "system": "s", "roles": ["viewer"], "description": ""}),
    Route("GET", "/api/agents/{name}", "admin", query=("tenant",)),
    Route("PUT", "/api/agents/{name}", "admin", {"tenant": "t1", "model": "sim", "tools": [], "max_steps": 2, "roles": []}),
    Route("DELETE", "/api/agents/{name}", "admin", query=("tenant",)),
    Route("GET", "/api/agents/secrets", "admin", query=("tenant",)),
    Route("PUT", "/api/agents/secrets/{name}", "admin", {"tenant": "t1", "value": "v"}),
    Route("DELETE", "/api/agents/secrets/{name}", "admin", query=("tenant",)),
    Route("POST", "/api/agents/runs", "openai", {"model": "sim", "input": "hi", "tools": [], "max_steps": 2, "max_seconds": 30}),
    Route("GET", "/api/agents/runs", "openai", query=("tenant", "state", "limit")),
    Route("GET", "/api/agents/runs/{run_id}", "openai"),
    Route("GET", "/api/approvals", "admin", query=("tenant", "state")),
    Route("POST", "/api/approvals/{call_id}/approve", "admin", query=("exp", "sig")),
    Route("POST", "/api/approvals/{call_id}/deny", "admin", query=("exp", "sig")),
    Route("GET", "/api/approvals/{call_id}/approve", "admin", query=("exp", "sig")),  # a signed link's page
    Route("GET", "/api/approvals/{call_id}/deny", "admin", query=("exp", "sig")),
    Route("POST", "/mcp", "mcp", {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "fz_tool", "arguments": {"amount": 1}}}),
    Route("GET", "/api/slo", "admin"),
    Route("GET", "/ui/slo", "dashboard"),
    Route("GET", "/ui/keys", "dashboard", query=("tenant", "state", "revoked")),
    Route("POST", "/ui/keys", "dashboard", form=True),
    Route("GET", "/ui/keys/{key_id}/revoke", "dashboard"),
    Route("POST", "/ui/keys/{key_id}/revoke", "dashboard", form=True),
    Route("GET", "/ui/audit", "dashboard", query=("since", "until", "actor", "action", "tenant", "after")),
    Route("GET", "/ui/audit/export", "dashboard", query=("since", "until", "actor", "action", "tenant")),
    Route("GET", "/ui/users", "dashboard", query=("tenant", "done")),
    Route("POST", "/ui/users", "dashboard", form=True),
    Route("POST", "/ui/users/{user_id}/role", "dashboard", form=True),
    Route("POST", "/ui/users/{user_id}/disable", "dashboard", form=True),
    Route("GET", "/ui/teams", "dashboard", query=("tenant", "done")),
    Route("POST", "/ui/teams", "dashboard", form=True),
    Route("GET", "/ui/roles", "dashboard"),
    Route("GET", "/ui/sso/{provider}/login", "sso", query=("next",)),
    Route("GET", "/ui/sso/{provider}/callback", "sso", query=("code", "state", "error")),
    Route("GET", "/api/whoami", "admin"),
    Route("GET", "/api/evals/online-rules", "admin"),
    Route("POST", "/api/evals/online-rules", "admin", {"name": "fz", "rate": 0.1, "feature": "f", "delay_s": 0,
        "scorers": [{"type": "icontains", "value": "x", "metric": "m"}]}),
    Route("GET", "/api/evals/online-rules/{name}", "admin"),
    Route("DELETE", "/api/evals/online-rules/{name}", "admin"),
    Route("GET", "/api/evals/online-scores", "admin", query=("since", "until", "by", "rule", "scorer", "feature", "alias", "tenant", "limit")),
    Route("POST", "/api/rag/collections", "admin", {"tenant": "t1", "name": "fz-new", "model": "hash:64",
        "chunking": {"max_tokens": 64, "overlap": 8}, "freshness": {"half_life_days": 30, "exclude_expired": False}}),
    Route("GET", "/api/rag/collections", "admin", query=("tenant",)),
    Route("GET", "/api/rag/collections/{collection}", "admin", query=("tenant",)),
    Route("DELETE", "/api/rag/collections/{collection}", "admin", query=("tenant",)),
    Route("POST", "/api/rag/collections/{collection}/rechunk", "admin", {"tenant": "t1", "chunking": {"max_tokens": 32}}),
    Route("PUT", "/api/rag/collections/{collection}/rerank", "admin", {"tenant": "t1", "model": "sim", "top_n": 5,
        "weight": 0.5, "timeout_s": 2}),
    Route("DELETE", "/api/rag/collections/{collection}/rerank", "admin", query=("tenant",)),
    Route("GET", "/api/rag/collections/{collection}/documents", "admin", query=("tenant", "status", "after", "limit")),
    Route("PUT", "/api/rag/collections/{collection}/documents/{id:path}", "admin", {"tenant": "t1", "text": "# H\n\nhello",
        "title": "t", "metadata": {"lang": "en", "year": 2024}, "users": ["u1"], "groups": ["g"], "valid_until": 4102444800}),
    Route("GET", "/api/rag/collections/{collection}/documents/{id:path}", "admin", query=("tenant",)),
    Route("DELETE", "/api/rag/collections/{collection}/documents/{id:path}", "admin", query=("tenant",)),
    Route("POST", "/api/rag/collections/{collection}/search", "admin", {"tenant": "t1", "query": "hello", "top_k": 3,
        "mode": "hybrid", "filters": {"lang": "en", "year": {"$gte": 2020}}, "user": "u1", "groups": ["g"],
        "freshness": {"half_life_days": 30, "exclude_expired": True}, "rerank": {"model": "sim", "top_n": 3, "timeout_s": 2}}),
    Route("GET", "/api/users", "admin", query=("tenant",)),
    Route("POST", "/api/users", "admin", {"tenant": "t1", "id": "fz-user", "roles": ["developer"], "email": "a@b.c", "name": "n"}),
    Route("GET", "/api/users/{user_id}", "admin"),
    Route("PATCH", "/api/users/{user_id}", "admin", {"roles": ["viewer"], "team": None, "disabled": False, "email": "x@y.z", "name": "n"}),
    Route("DELETE", "/api/users/{user_id}", "admin"),
    Route("GET", "/api/teams", "admin", query=("tenant",)),
    Route("POST", "/api/teams", "admin", {"tenant": "t1", "name": "fz-team"}),
    Route("DELETE", "/api/teams/{name}", "admin", query=("tenant",)),
    Route("GET", "/api/tokens", "admin", query=("user",)),
    Route("POST", "/api/tokens", "admin", {"user": "fz-user", "name": "ci", "scopes": ["keys.read"], "expires_in": 3600}),
    Route("POST", "/api/tokens/{token_id}/revoke", "admin"),
    Route("GET", "/api/openapi.json", "probe"),  # public, like the probes
    Route("GET", "/healthz", "probe"),
    Route("GET", "/readyz", "probe"),
    Route("GET", "/metrics", "probe"),
]  # fmt: skip


def test_every_route_is_fuzzed(target: Target) -> None:
    app = create_app(target.gw.runtime).app
    served = {(m, r.path) for r in app.routes for m in (getattr(r, "methods", None) or ()) if m != "HEAD"}
    fuzzed = {(r.method, r.path) for r in ROUTES}
    # A mirror (`/chat/completions` beside `/v1/chat/completions`, Azure's embeddings and completions paths)
    # calls an endpoint fuzzed at another path: the same code, so it needs no family of its own.
    endpoint = {
        (m, r.path): getattr(r, "endpoint", None) for r in app.routes for m in (getattr(r, "methods", None) or ())
    }
    covered = {endpoint[f] for f in fuzzed if f in endpoint}
    served = {s for s in served if s in fuzzed or endpoint[s] not in covered}
    missing = sorted(served - fuzzed)
    assert not missing, f"routes with no fuzz family (add them to ROUTES in {Path(__file__).name}): {missing}"
    assert not fuzzed - served, f"ROUTES names routes the app does not serve: {sorted(fuzzed - served)}"


# ---- one request ------------------------------------------------------------------------------------


@dataclass
class Sent:
    route: Route
    method: str
    url: str
    headers: list[tuple[bytes, bytes]]
    body: bytes | None


def _param_values(t: Target, name: str) -> st.SearchStrategy[str]:
    known = {
        "name": ["fz", "missing"],
        "key_id": [t.key_id, "key_missing"],
        "trace_id": [t.trace_id, "0" * 30],
        "scope": ["tenant", "key", "team"],
        "subject": ["fz", t.key_id],
        "model:path": ["gpt-4o-mini", "claude", "nope"],
        "deployment": ["gpt-4o-mini", "sim", "nope"],
        **{k: [v, v[:-1] + "0"] for k, v in t.ids.items()},
        "label": ["production", "staging"],
        "tenant": ["t1", "fz"],
        "collection": ["fzc", "missing"],
        "id:path": ["doc1", "dir/doc2", "missing"],
        "user_id": ["fz-user", "missing"],
        "token_id": ["pat_missing"],
        "provider": ["corp", "missing"],
        "call_id": ["run_0:call_0", "missing"],
        "action": ["approve", "deny", "other"],
        "user": ["u1", "missing"],
    }[name]
    return st.one_of(st.sampled_from(known), url_text.filter(lambda s: s and "/" not in s and s not in (".", "..")))


@st.composite
def requests(draw: st.DrawFn, t: Target, route: Route) -> Sent:
    path = route.path
    for name in (
        "name",
        "key_id",
        "trace_id",
        "scope",
        "subject",
        "model:path",
        "deployment",
        "file_id",
        "batch_id",
        "job_id",
        "response_id",
        "label",
        "tenant",
        "collection",
        "id:path",
        "user_id",
        "token_id",
        "provider",
        "call_id",
        "action",
        "user",
    ):
        if "{" + name + "}" in path:
            value = draw(_param_values(t, name))
            path = path.replace("{" + name + "}", quote(value, safe=""))
    names = st.sampled_from([*route.query, "since", "limit", "x", "\x00"]) if route.query else url_text
    query = draw(st.lists(st.tuples(names, url_text), max_size=4))
    url = str(httpx.URL(path, params=query)) if query else path
    headers = draw(_headers(t, route))
    body: bytes | None = None
    if route.multipart:
        body = draw(_upload())
        headers.append((b"content-type", b"multipart/form-data; boundary=" + BOUNDARY))
    elif route.form:
        token = draw(st.one_of(st.just(t.gw.admin), url_text))
        fields = draw(st.lists(st.tuples(st.sampled_from(["token", "next", "x"]), url_text), max_size=3))
        body = str(httpx.QueryParams([("token", token), *fields])).encode()
        headers.append((b"content-type", b"application/x-www-form-urlencoded"))
    elif route.body is not None or route.method in ("POST", "PUT", "PATCH"):
        kinds = ["mutated", "mutated", "mutated", "junk", "valid"] if route.body is not None else ["junk", "none"]
        kind = draw(st.sampled_from(kinds))
        valid = _with_ids(route.body, t.ids)
        if kind == "valid":
            body = _dumps(valid)
        elif kind == "mutated":
            body = _dumps(draw(mutated(valid)))
        elif kind == "junk":
            body = draw(junk_body)
    return Sent(route, route.method, url, headers, body)


BOUNDARY = b"keel-fuzz-boundary"


def _with_ids(body: Any, ids: dict[str, str]) -> Any:
    """`body` with "{file_id}"-style placeholders replaced by the real ids."""
    text = json.dumps(body)
    for name, value in ids.items():
        text = text.replace(json.dumps("{" + name + "}"), json.dumps(value))
    return json.loads(text)


@st.composite
def _upload(draw: st.DrawFn) -> bytes:
    """A multipart upload: a valid, mutated or junk JSONL line as the file, a good or odd purpose and name;
    or junk bytes altogether."""
    if draw(st.integers(0, 4)) == 0:
        return draw(junk_body)
    line = {"custom_id": "c1", "method": "POST", "url": "/v1/chat/completions", "body": CHAT}
    kind = draw(st.sampled_from(["valid", "mutated", "mutated", "junk"]))
    content = _dumps(line) if kind == "valid" else _dumps(draw(mutated(line))) if kind == "mutated" else draw(junk_body)
    purpose = draw(st.one_of(st.just("batch"), st.text(max_size=20))).encode("utf-8", "replace")
    name = draw(st.one_of(st.just("in.jsonl"), st.text(max_size=30))).encode("utf-8", "replace").replace(b'"', b"")
    b = b"--" + BOUNDARY
    return (
        b + b'\r\nContent-Disposition: form-data; name="purpose"\r\n\r\n' + purpose + b"\r\n"
        + b + b'\r\nContent-Disposition: form-data; name="file"; filename="' + name + b'"\r\n'
        + b"Content-Type: application/jsonl\r\n\r\n" + content + b"\r\n" + b + b"--\r\n"
    )  # fmt: skip


@st.composite
def _headers(draw: st.DrawFn, t: Target, route: Route) -> list[tuple[bytes, bytes]]:
    admin = route.family in ("admin", "probe")
    good = t.gw.admin if admin else t.gw.key
    auth = draw(st.sampled_from(["good"] * 8 + ["none", "junk"]))
    headers: list[tuple[bytes, bytes]] = []
    if auth == "good":
        name = b"x-api-key" if route.family == "anthropic" and draw(st.booleans()) else b"authorization"
        headers.append((name, good.encode() if name == b"x-api-key" else b"Bearer " + good.encode()))
    elif auth == "junk":
        headers.append((b"authorization", draw(header_bytes)))
    if route.family == "dashboard":
        cookie = draw(st.one_of(st.just(t.session.encode()), header_bytes))
        headers.append((b"cookie", b"keel_ui=" + cookie))
    names = [
        b"x-keel-user", b"x-keel-feature", b"x-keel-session", b"x-keel-tags", b"x-keel-priority", b"x-keel-tier",
        b"x-keel-prompt-version", b"x-keel-cache-control", b"traceparent", b"tracestate", b"x-keel-timeout",
        b"content-type", b"cookie", b"x-forwarded-for", b"prefer", b"x-keel-async", b"x-keel-webhook-url",
        b"idempotency-key",
    ]  # fmt: skip
    if draw(st.integers(0, 2)) == 0:  # a third of the requests: a bad header would mask the body's faults
        for name, value in draw(st.lists(st.tuples(st.sampled_from(names), header_bytes), min_size=1, max_size=3)):
            headers.append((name, value))
    return headers


# ---- what every answer must be ----------------------------------------------------------------------


def _check(sent: Sent, r: httpx.Response) -> None:
    where = f"{sent.method} {sent.url} body={sent.body[:300] if sent.body else None!r} headers={sent.headers!r}"
    status = r.status_code
    if status == 504 and _asked_timeout(sent):
        status = 400  # the caller's own x-keel-timeout ran out: their deadline, not a failure
    assert status < 500, f"{status} for {where}: {r.text[:500]}"
    family, ctype = sent.route.family, r.headers.get("content-type", "")
    if family == "mcp":  # past our key check (401 in our format), the MCP SDK answers in its own forms
        if status == 401:
            assert set(r.json()) == {"error"}, where
        elif ctype.startswith("application/json"):
            r.json()
        return
    if family in ("dashboard", "sso"):
        _check_page(sent, r, where)
        return
    if ctype.startswith("text/event-stream"):
        assert "Internal gateway error" not in r.text, f"stream hid an internal error for {where}: {r.text[-500:]}"
        return
    if status < 400:
        if ctype.startswith(("application/x-ndjson", "text/csv")):
            _export(r, where)
        elif family != "probe" or sent.route.path != "/metrics":
            r.json()
        return
    body = r.json()
    if family == "anthropic":
        assert body.get("type") == "error" and set(body["error"]) == {"type", "message"}, (where, body)
    else:
        assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, (where, body)


def _export(r: httpx.Response, where: str) -> None:
    """The audit export: JSONL (an object a line) or CSV (its header first)."""
    if r.headers["content-type"].startswith("text/csv"):
        assert r.text.startswith("seq,at,"), where
    else:
        # split on "\n" only: a JSON string may hold U+2028 or U+0085 raw, which str.splitlines() splits on
        assert all(isinstance(json.loads(line), dict) for line in r.text.split("\n") if line), where


def _check_page(sent: Sent, r: httpx.Response, where: str) -> None:
    """HTML or a redirect within the dashboard; SSO sign-in also starts at the (loopback) issuer."""
    status, ctype = r.status_code, r.headers.get("content-type", "")
    download = status == 200 and sent.route.path == "/ui/audit/export" and ctype == "application/x-ndjson"
    assert status in (303, 307) or ctype.startswith("text/html") or download, f"{status} {ctype} for {where}"
    if status in (303, 307):
        allowed = ("/ui", "http://127.0.0.1:") if sent.route.family == "sso" else ("/ui",)
        assert r.headers["location"].startswith(allowed), where


def _asked_timeout(sent: Sent) -> bool:
    for name, value in sent.headers:
        if name == b"x-keel-timeout":
            try:
                return float(value) > 0
            except ValueError:
                return False
    return False


def _send(t: Target, sent: Sent) -> httpx.Response:
    return t.client.request(sent.method, sent.url, content=sent.body, headers=sent.headers)


STATS: Counter[tuple[str, str, int]] = Counter()  # (method, route, status): KEEL_FUZZ_STATS=1 prints them


def _budget(route: Route) -> int:
    """Examples per route: the model routes carry the richest bodies; a route without input needs few."""
    if route.family in ("openai", "anthropic") and route.body is not None:
        return 3 * EXAMPLES
    return EXAMPLES if route.body is not None or route.query or route.form or "{" in route.path else EXAMPLES // 3


# The gateway under test runs in this process: its background threads (jitter, sampling) draw from the
# global `random` while Hypothesis draws an example, which Hypothesis reads as a strategy using `random`
@pytest.mark.filterwarnings("ignore:Do not use the `random` module inside strategies")
@pytest.mark.parametrize("route", ROUTES, ids=[f"{r.method} {r.path}" for r in ROUTES])
def test_fuzz(target: Target, route: Route) -> None:
    @settings(SETTINGS, max_examples=_budget(route) * max(1, EXPLORE))
    @given(data=st.data())
    def run(data: st.DataObject) -> None:
        sent = data.draw(requests(target, route))
        target.client.cookies.clear()
        response = _send(target, sent)
        STATS[(sent.route.method, sent.route.path, response.status_code)] += 1
        _check(sent, response)

    run()


def test_zz_alive_after_fuzzing(target: Target) -> None:
    """Last in the module: the process answers, the trace writer is healthy, nothing failed inside."""
    c = target.client
    assert c.get("/healthz").status_code == 200
    r = c.post(
        "/v1/chat/completions",
        json={"model": "sim", "messages": [USER]},
        headers={"authorization": f"Bearer {target.gw.key}"},
    )
    assert r.status_code == 200
    writer = target.gw.runtime.writer
    deadline = time.monotonic() + 10
    while writer.depth and time.monotonic() < deadline:
        time.sleep(0.02)
    ready = c.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["trace_writer"] == "ok" and ready.json()["trace_writer_restarts"] == 0, ready.text
    if os.environ.get("KEEL_FUZZ_STATS"):
        for (method, path, status), n in sorted(STATS.items()):
            print(f"{method} {path} {status}: {n}")
    internal = [f"{e.name}: {e.getMessage()}" for e in target.errors]
    assert not internal, internal[:5]
