"""Self-hosted inference that starts cold, end to end over real HTTP.

A vLLM-typed server refuses connections for its first COLD_S seconds (a port bound but not
listening: a real connection refused), then answers (the fake upstream starts on that port). Calls
whose deadline outlasts `cold_start_wait_s` are held and served by it once it is ready; a call with
a short `x-keel-timeout` goes to the API target at once; `keel targets` (the CLI against the running
gateway) shows `warming`, then `ready`; the wake hook gets one POST per cold period; the warm-up
call reaches the server before the held calls do; /metrics, /readyz and the traces say all of it.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from keel.testing import FakeUpstream, Script
from tests.conftest import ADMIN, Gateway
from tests.e2e.test_targets import targets_cli
from tests.unit.test_warmth import wake_receiver

COLD_S = 5.0  # how long the server refuses connections after the gateway starts
TARGET = "local/llama-3-8b"
ASK = [{"role": "user", "content": "hello"}]


def wait_for(check: Callable[[], Any], timeout: float = 15.0, what: str = "condition") -> Any:
    """Poll `check` until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def hooks() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    with wake_receiver() as found:
        yield found


@pytest.fixture
def reserved() -> Iterator[socket.socket]:
    """A port bound but not listening: connecting is refused until the fake upstream takes it."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    yield sock
    sock.close()


def config(tmp_path: Path, port: int, api: FakeUpstream, wake_url: str) -> dict[str, Any]:
    return {
        "admin_token": ADMIN,
        "storage": {"url": f"sqlite:///{tmp_path}/keel.db"},
        "traces": {"spill_dir": str(tmp_path / "spill"), "flush_interval_ms": 10},
        "providers": {
            "local": {
                "type": "vllm",
                "base_url": f"http://127.0.0.1:{port}/v1",
                "readiness": True,  # vLLM: GET /health
                "readiness_interval_s": 0.1,
                "warmup": 1,
                "cold_start_wait_s": 10,
                "wake_url": wake_url,
            },
            "api": {"type": "openai", "base_url": api.url + "/v1", "api_key": "sk-api"},
        },
        "models": {
            "llama": {
                "targets": [{"provider": "local", "model": "llama-3-8b"}, {"provider": "api", "model": "gpt-4o-mini"}]
            }
        },
    }


def admin_targets(gw: Gateway) -> dict[str, Any]:
    rows = httpx.get(gw.url + "/api/targets", headers={"authorization": f"Bearer {ADMIN}"}).json()["data"]
    return {r["target"]: r for r in rows}


def cli_state(gw: Gateway, tmp_path: Path) -> dict[str, Any]:
    done = targets_cli(gw, tmp_path, "--url", gw.url, "--json")
    assert done.returncode == 0, done.stderr
    return {r["target"]: r for r in json.loads(done.stdout)}


def metrics(gw: Gateway) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(gw.url + "/metrics").text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def metric(gw: Gateway, name: str, **labels: str) -> float | None:
    return metrics(gw).get((name, tuple(sorted(labels.items()))))


def chat(gw: Gateway, stream: bool = False, **headers: str) -> tuple[str, str, float]:
    """(serving provider, trace id, seconds) of one call to the `llama` alias, read to its end."""
    started = time.monotonic()
    with openai.OpenAI(base_url=gw.base_url, api_key=gw.key, max_retries=0) as c:
        raw = c.chat.completions.with_raw_response.create(
            model="llama", messages=ASK, stream=stream, extra_headers=headers
        )
        answer = raw.parse()
        if stream:
            assert "".join(chunk.choices[0].delta.content or "" for chunk in answer if chunk.choices)
    return raw.headers["x-keel-provider"], raw.headers["x-keel-trace-id"], time.monotonic() - started


def test_a_cold_server_holds_calls_that_can_wait_and_reroutes_those_that_cannot(
    make_gateway: Any, reserved: socket.socket, b: FakeUpstream, hooks: Any, tmp_path: Path
) -> None:
    wake_url, wakes = hooks
    port = reserved.getsockname()[1]
    gw: Gateway = make_gateway(config(tmp_path, port, b, wake_url))
    started = time.monotonic()

    # Cold: the readiness probe is refused, and the CLI says so.
    wait_for(lambda: "refused" in (admin_targets(gw)[TARGET]["why"] or ""), what="a refused probe")
    row = cli_state(gw, tmp_path)[TARGET]
    assert row["state"] == "warming" and row["breaker"] == "closed"
    human = targets_cli(gw, tmp_path, "--url", gw.url).stdout
    assert any(TARGET in line and "warming" in line for line in human.splitlines())

    # A short deadline cannot wait: the API target answers at once, and the server is woken.
    provider, rerouted_id, _ = chat(gw, **{"x-keel-timeout": "2"})
    assert provider == "api"
    wait_for(lambda: len(wakes) == 1, what="the wake POST")

    # Calls whose deadline outlasts cold_start_wait_s are held until the server is up.
    with ThreadPoolExecutor(2) as pool:
        held = [pool.submit(chat, gw), pool.submit(chat, gw, stream=True)]
        wait_for(lambda: metric(gw, "keel_target_cold_start_waiting", target=TARGET) == 2, what="two held calls")
        assert not any(f.done() for f in held)
        time.sleep(max(0.0, started + COLD_S - time.monotonic()))  # the server takes COLD_S to load
        reserved.close()
        with FakeUpstream(port=port) as local:
            results = [f.result(timeout=15) for f in held]
            assert [p for p, _, _ in results] == ["local", "local"]
            paths = [r["path"] for r in local.requests]
            chats = [r["json"] for r in local.requests if r["path"] == "/v1/chat/completions"]
            # the warm-up call came first, before either held call reached the server
            assert paths[0] == "/health" and len(chats) == 3
            assert chats[0]["max_tokens"] == 1 and chats[0]["messages"] == [{"role": "user", "content": "Hi"}]
            assert [c["messages"] for c in chats[1:]] == [ASK, ASK]
            assert sorted(bool(c.get("stream")) for c in chats[1:]) == [False, True]

            row = cli_state(gw, tmp_path)[TARGET]
            assert row["state"] == "ready" and row["time_to_ready_s"] >= COLD_S - 0.5
            assert len(wakes) == 1  # one cold period, three calls met it: one wake-up
            readyz = httpx.get(gw.url + "/readyz")
            assert readyz.status_code == 200 and readyz.json()["targets"] == {TARGET: "ready"}

            # The traces say which calls waited and which were rerouted.
            traces = {t.id: t for t in gw.traces()}
            assert traces[rerouted_id].tags["keel.cold_start"] == "rerouted"
            assert traces[rerouted_id].fallback == "target"
            for _, trace_id, _ in results:
                waited = traces[trace_id].tags["keel.cold_start"]
                assert waited.startswith("waited ") and traces[trace_id].provider == "local"
            m = metrics(gw)
            assert m[("keel_target_state", (("state", "ready"), ("target", TARGET)))] == 1
            assert m[("keel_target_state", (("state", "warming"), ("target", TARGET)))] == 0
            assert m[("keel_target_time_to_ready_seconds", (("target", TARGET),))] >= COLD_S - 0.5
            assert m[("keel_cold_start_calls_total", (("outcome", "waited"), ("target", TARGET)))] == 2
            assert m[("keel_cold_start_calls_total", (("outcome", "rerouted"), ("target", TARGET)))] == 1
            assert m[("keel_provider_warmup_calls_total", (("outcome", "ok"), ("provider", "local")))] == 1
            assert m[("keel_provider_wakes_total", (("provider", "local"),))] == 1
            assert m[("keel_breaker_consecutive_failures", (("target", TARGET),))] == 0

        # The server goes away (scaled to zero, restarted): the next call finds it refusing, which
        # starts a new cold period: one more wake-up, the call held until the server is back.
        held_again = pool.submit(chat, gw)
        wait_for(lambda: metric(gw, "keel_target_cold_start_waiting", target=TARGET) == 1, what="a held call")
        assert cli_state(gw, tmp_path)[TARGET]["state"] == "warming"
        wait_for(lambda: len(wakes) == 2, what="the second wake POST")
        with FakeUpstream(port=port) as local:
            provider, trace_id, _ = held_again.result(timeout=15)
            assert provider == "local"
            chats = [r["json"] for r in local.requests if r["path"] == "/v1/chat/completions"]
            assert chats[0]["max_tokens"] == 1 and chats[1]["messages"] == ASK  # warmed up again first
    assert len(wakes) == 2
    assert metric(gw, "keel_provider_cold_starts_total", provider="local") == 2
    assert metric(gw, "keel_breaker_consecutive_failures", target=TARGET) == 0


def test_with_no_other_target_a_short_deadline_gets_a_503_saying_the_server_is_warming(
    make_gateway: Any, reserved: socket.socket, b: FakeUpstream, hooks: Any, tmp_path: Path
) -> None:
    wake_url, wakes = hooks
    raw = config(tmp_path, reserved.getsockname()[1], b, wake_url)
    raw["models"]["llama"]["targets"] = raw["models"]["llama"]["targets"][:1]
    gw: Gateway = make_gateway(raw)
    wait_for(lambda: "refused" in (admin_targets(gw)[TARGET]["why"] or ""), what="a refused probe")
    with (
        openai.OpenAI(base_url=gw.base_url, api_key=gw.key, max_retries=0) as c,
        pytest.raises(openai.APIStatusError) as info,
    ):
        c.chat.completions.create(model="llama", messages=ASK, extra_headers={"x-keel-timeout": "2"})
    assert info.value.status_code == 503
    assert "warming" in info.value.message and "not listening yet" in info.value.message
    assert int(info.value.response.headers["retry-after"]) >= 1
    wait_for(lambda: len(wakes) == 1, what="the wake POST")  # woken even though the call could not wait


def test_a_503_from_a_server_whose_health_url_answers_is_an_ordinary_failure_not_a_cold_start(
    make_gateway: Any, up: FakeUpstream, b: FakeUpstream, hooks: Any, tmp_path: Path
) -> None:
    wake_url, wakes = hooks
    port = int(up.url.rsplit(":", 1)[1])
    gw: Gateway = make_gateway(config(tmp_path, port, b, wake_url))
    wait_for(lambda: admin_targets(gw)[TARGET]["state"] == "ready", what="the server ready")
    up.reset()
    up.script(Script(status=503))  # overloaded for one call: retried once on the same target
    provider, trace_id, _ = chat(gw)
    assert provider == "local"
    assert [r["path"] for r in up.requests] == ["/v1/chat/completions", "/health", "/v1/chat/completions"]
    row = admin_targets(gw)[TARGET]
    assert row["state"] == "ready" and row["time_to_ready_s"] is not None
    assert metric(gw, "keel_provider_cold_starts_total", provider="local") == 1  # the start's only
    (trace,) = [t for t in gw.traces() if t.id == trace_id]
    assert "keel.cold_start" not in trace.tags
    assert [e["outcome"] for e in trace.attempt_log] == ["error", "ok"]
    assert wakes == []


def test_a_server_whose_readiness_url_fails_is_down_and_its_calls_go_on_at_once(
    make_gateway: Any, up: FakeUpstream, b: FakeUpstream, hooks: Any, tmp_path: Path
) -> None:
    wake_url, wakes = hooks
    raw = config(tmp_path, int(up.url.rsplit(":", 1)[1]), b, wake_url)
    raw["providers"]["local"]["readiness"] = "/not-a-health-url"  # answers 404: down, not loading
    gw: Gateway = make_gateway(raw)
    wait_for(lambda: admin_targets(gw)[TARGET]["state"] == "down", what="the server down")
    row = cli_state(gw, tmp_path)[TARGET]
    assert row["state"] == "down" and "readiness answered 404" in row["why"]
    provider, trace_id, _ = chat(gw)  # a default deadline could wait, but a down server is not loading
    assert provider == "api"
    assert metric(gw, "keel_target_cold_start_waiting", target=TARGET) == 0
    (trace,) = [t for t in gw.traces() if t.id == trace_id]
    assert trace.tags["keel.cold_start"] == "rerouted"
    assert trace.attempt_log[0]["outcome"] == "skipped" and trace.attempt_log[0]["why"].startswith("down: ")
    assert all(r["path"] != "/v1/chat/completions" for r in up.requests)  # not even one attempt
    wait_for(lambda: len(wakes) == 1, what="the wake POST")  # a scaled-to-zero server may answer so too
