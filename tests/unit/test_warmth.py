"""Cold starts of self-hosted servers (keel.gateway.warmth): what a readiness answer means, the cold
period's state machine, when a call may be held, once-per-period wake-ups, warm-up calls against the
real fake upstream, and the config keys' checks."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import dataclasses
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp import web

from keel import config as keel_config
from keel.errors import ConfigError, ErrorKind, ProviderError
from keel.gateway.warmth import (
    ColdStart,
    Http,
    Warmth,
    WarmthBook,
    build_warmth,
    may_be_cold,
    readiness_url,
    verdict,
)
from keel.providers.http import Sessions
from keel.providers.registry import build_provider, upstream_headers
from keel.testing import FakeUpstream


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def spec(**changes: Any) -> ColdStart:
    base = ColdStart("local", "http://127.0.0.1:9/health", "127.0.0.1:9", {}, 0.05, 10.0, 0, ("llama",), None)
    return dataclasses.replace(base, **changes)


def warmth(clock: Clock | None = None, http: Http | None = None, **changes: Any) -> Warmth:
    provider = build_provider("local", keel_config.ProviderConfig(type="simulated"), Sessions(), redact=str)
    return Warmth(spec(**changes), provider, http or Http(), clock=clock or Clock())


# ---- pure parts ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "readiness", "url"),
    [
        ("vllm", True, "http://gpu:8000/health"),
        ("tgi", True, "http://gpu:8000/health"),
        ("ollama", True, "http://gpu:8000/api/tags"),
        ("openai", True, "http://gpu:8000/v1/models"),
        ("together", True, "http://gpu:8000/v1/models"),
        ("vllm", "/ready", "http://gpu:8000/ready"),
        ("vllm", "http://sidecar:9000/up", "http://sidecar:9000/up"),
    ],
)
def test_readiness_url_defaults_by_type_and_resolves_paths_from_the_server_root(
    kind: str, readiness: bool | str, url: str
) -> None:
    assert readiness_url(kind, "http://gpu:8000/v1", readiness) == url


def test_a_readiness_answer_is_ready_warming_or_down() -> None:
    assert verdict(200, b"") == ("ready", "")
    assert verdict(204, b"") == ("ready", "")
    state, why = verdict(503, b'{"error": "Model is currently loading"}')
    assert state == "warming" and "503" in why and "currently loading" in why
    assert verdict(500, b"boom")[0] == "down"
    assert verdict(404, b"")[0] == "down"


def test_only_connection_failures_and_503_may_mean_a_cold_server() -> None:
    assert may_be_cold(ProviderError(ErrorKind.network, "cannot reach upstream: ConnectionRefusedError"))
    assert may_be_cold(ProviderError(ErrorKind.overloaded, "loading", status=503))
    assert not may_be_cold(ProviderError(ErrorKind.rate_limited, "slow down", status=429))
    assert not may_be_cold(ProviderError(ErrorKind.server, "boom", status=500))
    assert not may_be_cold(ProviderError(ErrorKind.bad_request, "no", status=400))


# ---- the cold period -------------------------------------------------------------------------


def test_a_server_starts_cold_and_its_time_to_ready_spans_the_whole_cold_period() -> None:
    clock = Clock()
    w = warmth(clock)
    assert (w.state, w.why) == ("warming", "not probed yet")
    clock.now += 2
    w.went_cold("warming", "connection refused")
    clock.now += 3
    w.went_cold("down", "readiness answered 500")  # still the same cold period
    assert w.view()["not_ready_s"] == 5.0
    clock.now += 1
    w.became_ready()
    assert w.ready and w.time_to_ready_s == 6.0 and w.cold_starts == 1
    assert w.view() == {"state": "ready", "why": None, "not_ready_s": None, "time_to_ready_s": 6.0}
    w.became_ready()  # already ready: no new period
    assert w.cold_starts == 1


def test_going_cold_again_starts_a_new_period() -> None:
    clock = Clock()
    w = warmth(clock)
    w.became_ready()
    clock.now += 50
    w.went_cold("warming", "connection refused")
    assert w.since == clock.now
    clock.now += 4
    w.became_ready()
    assert w.time_to_ready_s == 4.0 and w.cold_starts == 2


def test_a_call_is_held_only_when_its_deadline_outlasts_the_wait_and_the_server_is_warming() -> None:
    w = warmth(wait_s=10.0)
    assert w.hold_for(30.0) == 10.0
    assert w.hold_for(10.0) == 0.0  # a deadline no longer than the wait: rerouted at once
    assert w.hold_for(2.0) == 0.0
    w.went_cold("down", "readiness answered 500")
    assert w.hold_for(30.0) == 0.0  # a down server is not loading: nothing to wait for
    assert warmth(wait_s=0.0).hold_for(30.0) == 0.0  # no cold_start_wait_s: never held


def test_retry_after_guesses_from_the_last_time_to_ready() -> None:
    clock = Clock()
    w = warmth(clock, wait_s=0.0)
    assert w.retry_after() == 5.0  # nothing known yet
    clock.now += 20
    w.became_ready()
    w.went_cold("warming", "connection refused")
    clock.now += 12
    assert w.retry_after() == 8.0
    clock.now += 30
    assert w.retry_after() == 1.0


def test_held_calls_go_on_when_the_server_becomes_ready_and_give_up_after_their_wait() -> None:
    async def run() -> None:
        w = warmth()
        held = [asyncio.ensure_future(w.wait_ready(5.0)) for _ in range(3)]
        await asyncio.sleep(0)
        assert w.waiting == 3
        w.became_ready()
        assert await asyncio.gather(*held) == [True, True, True]
        assert w.waiting == 0
        w.went_cold("warming", "connection refused")
        assert await w.wait_ready(0.01) is False

    asyncio.run(run())


# ---- I/O against real sockets ----------------------------------------------------------------


def closed_port() -> socket.socket:
    """A port bound but not listening: connecting to it is refused, as to a server not up yet."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    return sock


@contextlib.contextmanager
def wake_receiver() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A real HTTP receiver for wake_url POSTs on its own loop thread: (its URL, the bodies it got)."""
    got: list[dict[str, Any]] = []
    ready = threading.Event()
    state: dict[str, Any] = {}

    async def hook(request: web.Request) -> web.Response:
        got.append(await request.json())
        return web.Response(status=202, headers={"connection": "close"})  # nothing left open at teardown

    async def serve() -> None:
        app = web.Application()
        app.router.add_post("/wake", hook)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        state["url"] = f"http://127.0.0.1:{runner.addresses[0][1]}/wake"
        state["stop"], state["loop"] = asyncio.Event(), asyncio.get_running_loop()
        ready.set()
        await state["stop"].wait()
        await runner.cleanup()

    thread = threading.Thread(target=lambda: asyncio.run(serve()), daemon=True)
    thread.start()
    ready.wait(5)
    try:
        yield state["url"], got
    finally:
        state["loop"].call_soon_threadsafe(state["stop"].set)
        thread.join(5)


@pytest.fixture
def hooks() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    with wake_receiver() as found:
        yield found


def test_a_refused_probe_is_warming_and_a_listening_health_url_is_ready() -> None:
    async def run(refused_url: str, up_url: str) -> None:
        http = Http()
        try:
            w = warmth(http=http, url=refused_url)
            await w.poll()
            assert (w.state, w.why) == ("warming", "connection refused: the server is not listening yet")
            w = warmth(http=http, url=up_url)
            await w.poll()
            assert w.ready and w.cold_starts == 1
        finally:
            await http.aclose()

    sock = closed_port()
    with FakeUpstream() as up:
        asyncio.run(run(f"http://127.0.0.1:{sock.getsockname()[1]}/health", up.url + "/health"))
        assert [r["path"] for r in up.requests] == ["/health"]
    sock.close()


def test_a_wrong_readiness_path_is_down_with_what_it_answered() -> None:
    async def run(url: str) -> None:
        http = Http()
        try:
            w = warmth(http=http, url=url)
            await w.poll()
            assert w.state == "down" and "readiness answered 404" in w.why
        finally:
            await http.aclose()

    with FakeUpstream() as up:
        asyncio.run(run(up.url + "/nope"))


def test_wake_url_is_posted_once_per_cold_period(hooks: Any) -> None:
    url, got = hooks

    async def run() -> None:
        http = Http()
        try:
            w = warmth(http=http, wake_url=url)
            for _ in range(5):  # five calls meet the server cold: one wake-up
                w.wake()
            await _settled(w)
            w.became_ready()
            w.wake()  # ready: a call may still race in; the flag belongs to the ended period
            w.went_cold("warming", "connection refused")
            w.wake()
            w.wake()
            await _settled(w)
            assert w.wakes == 2 and w.wake_failures == 0
        finally:
            await http.aclose()

    asyncio.run(run())
    assert [g["provider"] for g in got] == ["local", "local"]
    assert got[0]["state"] == "warming"


async def _settled(w: Warmth) -> None:
    while w._tasks:
        await asyncio.sleep(0.01)


def test_warmup_calls_reach_each_model_once_the_server_answers_and_only_then_is_it_ready() -> None:
    async def run(up: FakeUpstream) -> Warmth:
        cfg = keel_config.ProviderConfig(type="vllm", base_url=up.url + "/v1", api_key="sk-local")
        sessions = Sessions()
        provider = build_provider("local", cfg, sessions, redact=str)
        http = Http()
        origin, headers = up.url.removeprefix("http://"), upstream_headers(cfg)
        cold = spec(url=up.url + "/health", origin=origin, headers=headers, warmup=2, models=("llama", "qwen"))
        w = Warmth(cold, provider, http)
        try:
            await w.poll()
        finally:
            await http.aclose()
            await sessions.aclose()
        return w

    with FakeUpstream() as up:
        w = asyncio.run(run(up))
        paths = [r["path"] for r in up.requests]
        assert paths == ["/health"] + ["/v1/chat/completions"] * 4
        chats = [r["json"] for r in up.requests[1:]]
        assert [c["model"] for c in chats] == ["llama", "llama", "qwen", "qwen"]
        assert all(c["max_tokens"] == 1 for c in chats)
        assert up.requests[0]["headers"]["authorization"] == "Bearer sk-local"  # its own server: credentials go
    assert w.ready and w.warmups == {"ok": 4, "error": 0}


def test_credentials_never_go_to_a_readiness_url_on_another_host() -> None:
    async def run(url: str) -> None:
        http = Http()
        try:
            w = warmth(http=http, url=url, origin="gpu-box:8000", headers={"authorization": "Bearer sk-local"})
            await w.poll()
        finally:
            await http.aclose()

    with FakeUpstream() as up:
        asyncio.run(run(up.url + "/health"))
        assert "authorization" not in up.requests[0]["headers"]


def test_a_warmup_refused_keeps_the_server_warming() -> None:
    async def run(up_url: str, refused: str) -> Warmth:
        cfg = keel_config.ProviderConfig(type="vllm", base_url=refused + "/v1")
        sessions = Sessions()
        http = Http()
        w = Warmth(spec(url=up_url + "/health", warmup=1), build_provider("local", cfg, sessions, redact=str), http)
        try:
            await w.poll()
        finally:
            await http.aclose()
            await sessions.aclose()
        return w

    sock = closed_port()
    with FakeUpstream() as up:
        w = asyncio.run(run(up.url, f"http://127.0.0.1:{sock.getsockname()[1]}"))
    sock.close()
    assert w.state == "warming" and w.why.startswith("warm-up call to llama failed")
    assert w.warmups == {"ok": 0, "error": 1} and w.cold_starts == 0


# ---- config ------------------------------------------------------------------------------------

RAW: dict[str, Any] = {
    "providers": {
        "local": {"type": "vllm", "base_url": "http://127.0.0.1:8000/v1"},
        "api": {"type": "openai", "api_key": "sk-x"},
    },
    "models": {"llama": {"targets": [{"provider": "local", "model": "llama"}, {"provider": "api", "model": "gpt"}]}},
}


def raw(**local: Any) -> dict[str, Any]:
    out = copy.deepcopy(RAW)
    out["providers"]["local"].update(local)
    return out


def issues(**local: Any) -> dict[str, str]:
    with pytest.raises(ConfigError) as info:
        keel_config.parse(raw(**local), {})
    return {i.path: f"{i.message} | {i.fix}" for i in info.value.issues}


def test_cold_start_keys_without_readiness_name_the_key_and_the_fix() -> None:
    found = issues(cold_start_wait_s=30, wake_url="http://scaler/wake", warmup=1)
    assert set(found) == {f"providers.local.{k}" for k in ("cold_start_wait_s", "wake_url", "warmup")}
    assert "needs readiness" in found["providers.local.cold_start_wait_s"]
    assert "readiness: true" in found["providers.local.cold_start_wait_s"]


def test_bad_readiness_and_wake_urls_are_refused() -> None:
    found = issues(readiness="health", wake_url="scaler/wake")
    assert "not a URL or /path" in found["providers.local.readiness"]
    assert "not an http(s) URL" in found["providers.local.wake_url"]
    with pytest.raises(ConfigError) as info:
        keel_config.parse({"providers": {"s": {"type": "simulated", "readiness": True}}, "models": {}}, {})
    assert "always ready" in info.value.issues[0].message


def test_a_wait_as_long_as_the_total_timeout_warns() -> None:
    cfg = keel_config.parse(raw(readiness=True, cold_start_wait_s=120), {})
    (warning,) = keel_config.warnings(cfg)
    assert warning.path == "providers.local.cold_start_wait_s" and "never held" in warning.message
    assert keel_config.warnings(keel_config.parse(raw(readiness=True, cold_start_wait_s=60), {})) == []


def test_only_providers_with_readiness_are_tracked() -> None:
    cfg = keel_config.parse(raw(readiness=True, warmup=1, cold_start_wait_s=30), {})
    sessions = Sessions()
    providers = {n: build_provider(n, p, sessions, redact=str) for n, p in cfg.providers.items()}
    book = build_warmth(cfg, providers, lambda n: upstream_headers(cfg.providers[n]))
    assert [name for name, _ in book.items()] == ["local"]
    assert [key for key, _ in book.targets()] == ["local/llama"]
    w = book.get("local")
    assert w is not None and w.spec.url == "http://127.0.0.1:8000/health" and w.spec.wait_s == 30
    assert [worker.name for worker in book.workers()] == ["readiness:local"]
    assert not build_warmth(keel_config.parse(raw(), {}), providers, lambda n: {})
    assert not WarmthBook({})
