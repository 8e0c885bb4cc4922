"""The dashboard login is throttled per client (issue 10, item 19), over real HTTP.

Three wrong tokens are free; each failure after that locks the client out for 1 s, then 2 s, …:
every login attempt inside the lockout (the right token too) is a 429 with Retry-After. Failures are
logged without the token and counted in /metrics; a success forgets the client.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from keel.testing import FakeUpstream
from tests.conftest import Gateway, base_config

WRONG = "not-the-admin-token-0123456789"


@pytest.fixture
def gw(make_gateway: Any, up: FakeUpstream, tmp_path: Path) -> Gateway:
    return make_gateway(base_config(up, f"sqlite:///{tmp_path}/keel.db", tmp_path))  # type: ignore[no-any-return]


def _login(c: httpx.Client, token: str) -> httpx.Response:
    return c.post("/ui/login", data={"token": token, "next": "/ui/traces"})


def _metric(c: httpx.Client, name: str) -> float:
    for family in text_string_to_metric_families(c.get("/metrics").text):
        for sample in family.samples:
            if sample.name == name:
                return float(sample.value)
    raise AssertionError(f"{name} is not in /metrics")


def _until_unlocked(c: httpx.Client, token: str, deadline_s: float) -> httpx.Response:
    """Log in again as soon as the lockout allows it (each 429 says how long is left)."""
    end = time.monotonic() + deadline_s
    while True:
        r = _login(c, token)
        if r.status_code != 429 or time.monotonic() > end:
            return r
        time.sleep(min(0.1, float(r.headers["retry-after"])))


def test_failed_logins_lock_the_client_out_doubling(gw: Gateway, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="keel.dashboard")
    with httpx.Client(base_url=gw.url, timeout=10) as c:
        assert [_login(c, WRONG).status_code for _ in range(3)] == [401, 401, 401]  # free: typos
        assert _login(c, WRONG).status_code == 401  # the 4th failure starts a 1 s lockout
        locked = _login(c, gw.admin)  # even the right token is refused while locked
        assert locked.status_code == 429, locked.text[:300]
        assert locked.headers["retry-after"] == "1"
        assert "Too many failed logins" in locked.text
        assert locked.headers["content-type"].startswith("text/html")

        assert _until_unlocked(c, WRONG, 5).status_code == 401  # the 5th failure: now 2 s
        again = _login(c, WRONG)
        assert again.status_code == 429 and again.headers["retry-after"] == "2"

        ok = _until_unlocked(c, gw.admin, 10)
        assert ok.status_code == 303 and ok.headers["location"] == "/ui/traces"
        assert c.get("/ui/traces").status_code == 200  # the session works
        assert _login(c, WRONG).status_code == 401  # a success forgot the failures: no lockout

        assert _metric(c, "keel_dashboard_login_failures_total") == 6
        assert _metric(c, "keel_dashboard_login_throttled_total") >= 2
    failures = [r for r in caplog.records if r.name == "keel.dashboard" and "login failed" in r.getMessage()]
    assert len(failures) == 6
    assert "locked out for 2 s" in failures[4].getMessage()
    logged = caplog.text
    assert WRONG not in logged and gw.admin not in logged


def test_throttle_memory_is_bounded() -> None:
    from keel.dashboard.throttle import LoginThrottle

    throttle = LoginThrottle(capacity=100)
    for i in range(10_000):
        throttle.failed(f"10.0.{i // 256}.{i % 256}", now=1000.0)
    assert len(throttle) == 100
    assert throttle.retry_after("10.0.0.0", now=1000.0) == 0  # the oldest were forgotten
    # a client long past its lockout and its last failure starts over
    throttle = LoginThrottle(forget_s=60)
    for _ in range(5):
        throttle.failed("a", now=0.0)
    assert throttle.retry_after("a", now=1.0) > 0
    assert throttle.retry_after("a", now=100.0) == 0 and len(throttle) == 0
