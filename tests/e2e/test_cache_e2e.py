"""The response cache over real HTTP: the openai SDK → Keel → the fake upstream, on every exact backend.

Each test asks questions that carry a fresh nonce, so tests sharing the real Redis never see each
other's entries. "Served from the cache" is checked where it matters: the upstream saw no request.
"""

from __future__ import annotations

import secrets
import time
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from keel.keys.auth import issue_key
from keel.testing import FakeUpstream, Script
from tests.conftest import Gateway, base_config

CACHE = {"enabled": True, "ttl_s": 60, "stale_s": 60}


@pytest.fixture(params=["memory", "sqlite", "redis"])
def cache_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "memory":
        return "memory://"
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/cache.db"
    return str(request.getfixturevalue("redis_url"))


@pytest.fixture
def nonce() -> str:
    return secrets.token_hex(6)


def cache_config(up: FakeUpstream, tmp: Path, url: str, **cache: Any) -> dict[str, Any]:
    raw = base_config(up, f"sqlite:///{tmp}/keel.db", tmp)
    raw["cache"] = {**CACHE, "url": url, **cache}
    models = raw["models"]
    models["twin"] = {"targets": [{"provider": "oai", "model": "gpt-4o-mini"}]}  # same target, another alias
    models["degraded"] = {"targets": [{"provider": "oai", "model": "gpt-4o"}], "fallbacks": ["gpt-4o-mini"]}
    models["static"] = {"targets": [{"provider": "oai", "model": "gpt-4o-mini"}], "static_answer": "sorry"}
    raw["resilience"] = {"backoff_ms": 1, "retries_per_target": 0}
    return raw


@pytest.fixture
def gw(make_gateway: Any, up: FakeUpstream, tmp_path: Path, cache_url: str) -> Gateway:
    return make_gateway(cache_config(up, tmp_path, cache_url))  # type: ignore[no-any-return]


def ask(
    gw: Gateway,
    question: str,
    *,
    key: str | None = None,
    model: str = "gpt-4o-mini",
    system: str | None = None,
    history: list[dict[str, Any]] | None = None,
    stream: bool = False,
    control: str | None = None,
    **params: Any,
) -> tuple[str, httpx.Headers]:
    messages: list[Any] = [{"role": "system", "content": system}] if system else []
    messages += [*(history or []), {"role": "user", "content": question}]
    params.setdefault("temperature", 0)
    headers = {"x-keel-cache-control": control} if control else {}
    with openai.OpenAI(base_url=gw.base_url, api_key=key or gw.key, max_retries=0, timeout=10) as c:
        raw = c.chat.completions.with_raw_response.create(
            model=model, messages=messages, stream=stream, extra_headers=headers, **params
        )
        if not stream:
            return raw.parse().choices[0].message.content or "", raw.headers
        text = "".join(ch.choices[0].delta.content or "" for ch in raw.parse() if ch.choices)
        return text, raw.headers


def settle(gw: Gateway) -> None:
    """Answers are written after the reply ends: wait for the writes in flight."""
    stage = gw.runtime.cache_stage
    assert stage is not None
    deadline = time.monotonic() + 5
    while stage._pending and time.monotonic() < deadline:
        time.sleep(0.01)


def second_tenant(gw: Gateway) -> str:
    gw.runtime.store.create_tenant("t2")
    return issue_key(gw.runtime.store, "t2", name="other").key


# ---- exact hits -----------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
def test_a_repeated_deterministic_call_is_answered_from_the_cache(
    gw: Gateway, up: FakeUpstream, nonce: str, stream: bool
) -> None:
    first, h1 = ask(gw, f"what is {nonce}?", stream=stream)
    settle(gw)
    second, h2 = ask(gw, f"what is {nonce}?", stream=stream)
    assert first == second == f"echo: what is {nonce}?"
    assert (h1["x-keel-cache"], h2["x-keel-cache"]) == ("miss", "hit")
    assert len(up.requests) == 1
    rows = {t.id: t for t in gw.traces()}
    hit = rows[h2["x-keel-trace-id"]]
    assert (hit.cache, hit.cost_usd, hit.provider, hit.input_tokens) == ("hit", 0.0, "cache:oai", None)
    assert hit.cache_saved_usd == pytest.approx(rows[h1["x-keel-trace-id"]].cost_usd)


def test_a_streamed_call_is_served_as_a_stream_from_an_answer_kept_unstreamed(
    gw: Gateway, up: FakeUpstream, nonce: str
) -> None:
    ask(gw, f"long {nonce} " * 40)
    settle(gw)
    with openai.OpenAI(base_url=gw.base_url, api_key=gw.key, max_retries=0) as c:
        chunks = list(
            c.chat.completions.create(
                model="gpt-4o-mini",
                messages=[{"role": "user", "content": f"long {nonce} " * 40}],
                temperature=0,
                stream=True,
                stream_options={"include_usage": True},
            )
        )
    texts = [ch.choices[0].delta.content for ch in chunks if ch.choices and ch.choices[0].delta.content]
    assert len(texts) > 1 and "".join(texts) == "echo: " + f"long {nonce} " * 40
    assert [ch.choices[0].finish_reason for ch in chunks if ch.choices and ch.choices[0].finish_reason] == ["stop"]
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0  # the original usage
    assert len(up.requests) == 1


def test_only_deterministic_calls_are_cached_unless_allowed(gw: Gateway, up: FakeUpstream, nonce: str) -> None:
    _, h1 = ask(gw, nonce, temperature=0.7)
    settle(gw)
    _, h2 = ask(gw, nonce, temperature=0.7)
    assert (h1["x-keel-cache"], h2["x-keel-cache"]) == ("bypass", "bypass") and len(up.requests) == 2
    ask(gw, nonce, temperature=0.7, control="allow")
    settle(gw)
    _, h3 = ask(gw, nonce, temperature=0.7, control="allow")
    assert h3["x-keel-cache"] == "hit" and len(up.requests) == 3


def test_parameters_that_change_the_answer_change_the_key(gw: Gateway, up: FakeUpstream, nonce: str) -> None:
    ask(gw, nonce)
    settle(gw)
    for params in ({"max_tokens": 5}, {"top_p": 0.5}, {"seed": 7}, {"stop": ["x"]}):
        _, h = ask(gw, nonce, **params)
        assert h["x-keel-cache"] == "miss", params
    _, h = ask(gw, nonce, user="someone-else")  # who asked is not what was asked
    assert h["x-keel-cache"] == "hit"


# ---- isolation ------------------------------------------------------------------------------


def test_one_tenants_answers_are_never_served_to_another(gw: Gateway, up: FakeUpstream, nonce: str) -> None:
    other = second_tenant(gw)
    ask(gw, nonce)
    settle(gw)
    _, h = ask(gw, nonce, key=other)
    assert h["x-keel-cache"] == "miss" and len(up.requests) == 2
    settle(gw)
    _, h = ask(gw, nonce, key=other)
    assert h["x-keel-cache"] == "hit" and len(up.requests) == 2


def test_system_prompts_aliases_tools_and_prefixes_never_collide(gw: Gateway, up: FakeUpstream, nonce: str) -> None:
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}
    prefix = [{"role": "user", "content": "earlier"}, {"role": "assistant", "content": "ok"}]
    variants: list[dict[str, Any]] = [
        {},
        {"system": "You are terse."},
        {"system": "You are verbose."},
        {"model": "twin"},
        {"tools": [tool]},
        {"history": prefix},
    ]
    for v in variants:
        _, h = ask(gw, nonce, **v)
        assert h["x-keel-cache"] == "miss", v
        settle(gw)
    for v in variants:
        _, h = ask(gw, nonce, **v)
        assert h["x-keel-cache"] == "hit", v
    assert len(up.requests) == len(variants)


# ---- per-request control --------------------------------------------------------------------


def test_cache_control_directives(gw: Gateway, up: FakeUpstream, nonce: str) -> None:
    _, h = ask(gw, nonce, control="no-store")
    settle(gw)
    assert h["x-keel-cache"] == "miss"
    _, h = ask(gw, nonce)  # nothing was kept: a miss again, kept this time
    settle(gw)
    assert h["x-keel-cache"] == "miss"
    _, h = ask(gw, nonce, control="no-cache")  # refresh: goes upstream, keeps the new answer
    settle(gw)
    assert h["x-keel-cache"] == "miss" and len(up.requests) == 3
    time.sleep(0.3)
    _, h = ask(gw, nonce, control="max-age=0.1")
    assert h["x-keel-cache"] == "miss"
    settle(gw)
    _, h = ask(gw, nonce, control="skip")
    assert h["x-keel-cache"] == "bypass"
    _, h = ask(gw, nonce)
    assert h["x-keel-cache"] == "hit" and len(up.requests) == 5


def test_a_bad_directive_is_a_400_naming_the_header(gw: Gateway) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        ask(gw, "x", control="forever")
    assert info.value.body["param"] == "x-keel-cache-control"  # type: ignore[index]


# ---- expiry and stale on error ----------------------------------------------------------------


@pytest.fixture
def short(make_gateway: Any, up: FakeUpstream, tmp_path: Path, cache_url: str) -> Gateway:
    return make_gateway(cache_config(up, tmp_path, cache_url, ttl_s=0.3, stale_s=60))  # type: ignore[no-any-return]


def test_expired_entries_miss_then_answer_stale_when_every_target_fails(
    short: Gateway, up: FakeUpstream, nonce: str
) -> None:
    ask(short, nonce)
    settle(short)
    time.sleep(0.4)
    _, h = ask(short, nonce)
    assert h["x-keel-cache"] == "miss"  # expired: asked again
    settle(short)
    time.sleep(0.4)
    up.script(Script(status=503), Script(status=503))
    text, h = ask(short, nonce)
    assert text == f"echo: {nonce}"
    assert (h["x-keel-cache"], h["x-keel-fallback"]) == ("stale", "stale")
    t = next(t for t in short.traces() if t.id == h["x-keel-trace-id"])
    assert (t.status, t.cache, t.fallback, t.cost_usd) == ("ok", "stale", "stale", 0.0)
    assert [e["outcome"] for e in t.attempt_log] == ["error"]


def test_stale_comes_before_the_static_answer_and_never_hides_a_bad_request(
    short: Gateway, up: FakeUpstream, nonce: str
) -> None:
    ask(short, nonce, model="static")
    settle(short)
    time.sleep(0.4)
    up.script(Script(status=503))
    text, h = ask(short, nonce, model="static")
    assert (text, h["x-keel-cache"]) == (f"echo: {nonce}", "stale")
    up.script(Script(status=400))
    with pytest.raises(openai.BadRequestError):
        ask(short, nonce, model="static")
    up.script(Script(status=503))
    text, h = ask(short, "never asked " + nonce, model="static")  # nothing kept: the static answer
    assert (text, h["x-keel-fallback"]) == ("sorry", "static")


def test_answers_from_a_fallback_alias_are_not_kept(gw: Gateway, up: FakeUpstream, nonce: str) -> None:
    up.script(Script(status=503))
    _, h = ask(gw, nonce, model="degraded")
    assert h["x-keel-fallback"] == "alias:gpt-4o-mini"
    settle(gw)
    _, h = ask(gw, nonce, model="degraded")
    assert (h["x-keel-cache"], h["x-keel-fallback"]) == ("miss", "primary")


# ---- embeddings -----------------------------------------------------------------------------


def test_known_texts_are_embedded_once_and_come_back_identical(gw: Gateway, up: FakeUpstream, nonce: str) -> None:
    a, b, c = f"alpha {nonce}", f"beta {nonce}", f"gamma {nonce}"
    with openai.OpenAI(base_url=gw.base_url, api_key=gw.key, max_retries=0) as client:
        first = client.embeddings.create(model="embed", input=[a, b])
        settle(gw)
        again = client.embeddings.with_raw_response.create(model="embed", input=[a, b])
        mixed = client.embeddings.create(model="embed", input=[c, a])
        other = client.embeddings.create(model="embed", input=[a], dimensions=8)
    assert again.headers["x-keel-cache"] == "hit"
    assert [d.embedding for d in again.parse().data] == [d.embedding for d in first.data]
    assert mixed.data[1].embedding == first.data[0].embedding
    assert [r["json"]["input"] for r in up.requests] == [[a, b], [c], [a]]  # only unknown texts went upstream
    assert len(other.data) == 1


# ---- a failing cache is a miss --------------------------------------------------------------


def test_an_unreachable_redis_cache_is_a_miss_not_a_failure(
    make_gateway: Any, up: FakeUpstream, tmp_path: Path, nonce: str
) -> None:
    gw = make_gateway(cache_config(up, tmp_path, "redis://127.0.0.1:1/0"))
    text, h = ask(gw, nonce)
    assert text == f"echo: {nonce}" and h["x-keel-cache"] == "miss"
    settle(gw)
    _, h = ask(gw, nonce)
    assert h["x-keel-cache"] == "miss" and len(up.requests) == 2


# ---- reporting ------------------------------------------------------------------------------


def test_the_usage_api_reports_hit_rate_and_savings_per_tenant_feature_and_alias(
    gw: Gateway, up: FakeUpstream, nonce: str
) -> None:
    with openai.OpenAI(base_url=gw.base_url, api_key=gw.key, max_retries=0) as c:
        for feature in ("faq", "faq", "faq", "chat"):
            c.chat.completions.create(
                model="gpt-4o-mini",
                messages=[{"role": "user", "content": f"{feature} {nonce}"}],
                temperature=0,
                extra_headers={"x-keel-feature": feature},
            )
            settle(gw)
    gw.traces()  # flushed: the rollups are written with the rows
    saved = next(t.cost_usd for t in gw.traces() if t.cache == "miss" and t.feature == "faq")
    auth = {"authorization": f"Bearer {gw.admin}"}
    for by, group in (("feature", "faq"), ("tenant", "t1"), ("alias", "gpt-4o-mini")):
        rows = httpx.get(f"{gw.url}/api/usage", params={"by": by, "since": "1h"}, headers=auth).json()["data"]
        row = next(r for r in rows if r[by] == group)
        if by == "feature":
            assert (row["calls"], row["cache_lookups"], row["cache_hits"]) == (3, 3, 2)
            assert row["cache_hit_rate"] == pytest.approx(2 / 3, abs=1e-4)
            assert row["cache_saved_usd"] == pytest.approx(2 * saved)
        else:
            assert (row["calls"], row["cache_hits"]) == (4, 2)
            assert row["cache_hit_rate"] == 0.5
