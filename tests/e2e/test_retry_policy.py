"""The failover stage's retry policy over real HTTP: a half-open probe is one attempt, a 429 without
Retry-After waits out a floor (within the deadline), and `keel config check` warns when a first-token
timeout would leave no time for the fallbacks.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import openai
import pytest
import yaml

from keel import config as keel_config
from keel.testing import FakeUpstream, Script
from tests.conftest import Gateway
from tests.e2e.test_cli import keel

ASK: Any = [{"role": "user", "content": "hello"}]
DOWN = Script(status=503)
FLOOR_S = 0.3


def settings(up: FakeUpstream, backup: FakeUpstream, tmp: Path, **resilience: Any) -> dict[str, Any]:
    return {
        "storage": {"url": f"sqlite:///{tmp}/keel.db"},
        "traces": {"spill_dir": str(tmp / "spill"), "flush_interval_ms": 10},
        "resilience": {
            "backoff_ms": 10,
            "retry_after_cap_s": 1,
            "rate_limit_floor_ms": FLOOR_S * 1000,
            "breaker": {"failures": 2, "cooldown_s": 1.5},  # long enough to see it open on a busy machine
            **resilience,
        },
        "providers": {
            "primary": {"type": "openai", "base_url": up.url + "/v1", "api_key": "sk-a"},
            "backup": {"type": "openai", "base_url": backup.url + "/v1", "api_key": "sk-b"},
        },
        "models": {
            "main": {
                "targets": [{"provider": "primary", "model": "gpt-4o"}, {"provider": "backup", "model": "gpt-4o-mini"}]
            }
        },
    }


@pytest.fixture
def gw(make_gateway: Any, up: FakeUpstream, b: FakeUpstream, tmp_path: Path) -> Gateway:
    return make_gateway(settings(up, b, tmp_path))  # type: ignore[no-any-return]


def call(gw: Gateway, **headers: str) -> str:
    """One call; the trace id of its answer."""
    with openai.OpenAI(base_url=gw.base_url, api_key=gw.key, max_retries=0, timeout=10) as c:
        raw = c.chat.completions.with_raw_response.create(model="main", messages=ASK, extra_headers=headers)
    assert raw.parse().choices[0].message.content == "echo: hello"
    return raw.headers["x-keel-trace-id"]


def steps(gw: Gateway, trace_id: str) -> list[tuple[str, str, str | None]]:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        found = [t for t in gw.traces() if t.id == trace_id]
        if found:
            return [(e["level"], e["outcome"], e.get("kind") or e.get("why")) for e in found[0].attempt_log]
    raise AssertionError(f"no trace {trace_id}")


def test_a_half_open_probe_is_one_attempt(gw: Gateway, up: FakeUpstream) -> None:
    up.script(*[DOWN] * 200)  # the primary stays down; the backup answers every call
    opened = False
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        before = len(up.requests)
        trace_id = call(gw)
        tries = len(up.requests) - before  # the primary's: 2 while closed (a retry), 0 while open
        if tries == 0:
            opened = True
        elif opened:  # the breaker let its probe through: it failed once and was not retried
            assert tries == 1
            assert steps(gw, trace_id) == [("primary", "error", "overloaded"), ("target", "ok", None)]
            return
        time.sleep(0.02)
    raise AssertionError("the breaker never opened and then probed")


def test_a_429_without_retry_after_waits_at_least_the_floor(gw: Gateway, up: FakeUpstream) -> None:
    up.script(Script(status=429), Script())
    started = time.monotonic()
    trace_id = call(gw)
    assert time.monotonic() - started >= FLOOR_S  # not the 10 ms jittered backoff
    assert steps(gw, trace_id) == [("primary", "error", "rate_limited"), ("primary", "ok", None)]
    first, second = up.requests
    assert second["at"] - first["at"] >= FLOOR_S


def test_a_floor_beyond_the_deadline_moves_on_at_once(gw: Gateway, up: FakeUpstream) -> None:
    up.script(Script(status=429), Script())
    trace_id = call(gw, **{"x-keel-timeout": "0.2"})  # less than the floor is left: the next target, no wait
    assert steps(gw, trace_id) == [("primary", "error", "rate_limited"), ("target", "ok", None)]


# ---- keel config check ----------------------------------------------------------------------


def write(tmp: Path, up: FakeUpstream, **resilience: Any) -> None:
    (tmp / "keel.yaml").write_text(yaml.safe_dump(settings(up, up, tmp, **resilience)))


def test_config_check_warns_when_a_ttft_timeout_leaves_no_time_for_fallbacks(up: FakeUpstream, tmp_path: Path) -> None:
    write(tmp_path, up, ttft_timeout_s=30, total_timeout_s=30)
    checked = keel(tmp_path, "config", "check")  # a warning, not an error: exit 0
    assert checked.stdout.startswith("ok: 2 provider(s), 1 model alias(es)")
    assert checked.stderr.startswith("keel.yaml: 1 warning\n  resilience.ttft_timeout_s: 30 s is not below")
    assert "fallbacks of main" in checked.stderr and "fix: set resilience.ttft_timeout_s" in checked.stderr

    write(tmp_path, up, ttft_timeout_s=10, total_timeout_s=30)
    assert keel(tmp_path, "config", "check").stderr == ""


def test_no_warning_for_an_alias_with_nothing_to_fall_back_to(up: FakeUpstream, tmp_path: Path) -> None:
    raw = settings(up, up, tmp_path, ttft_timeout_s=60, total_timeout_s=30)
    raw["models"] = {"solo": {"targets": [{"provider": "primary", "model": "gpt-4o"}]}}
    assert keel_config.warnings(keel_config.parse(raw, {})) == []
    raw["models"]["solo"]["fallbacks"] = ["other"]
    raw["models"]["other"] = {"targets": [{"provider": "backup", "model": "gpt-4o-mini"}]}
    (warning,) = keel_config.warnings(keel_config.parse(raw, {}))
    assert warning.path == "resilience.ttft_timeout_s" and "fallbacks of solo" in warning.message
