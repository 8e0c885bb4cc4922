"""Soft-limit alerts against a real HTTP receiver on 127.0.0.1 and a real SQLite claim ledger.

The receiver records every request and answers from a script (a status, or "hang" past the
client's timeout), then 200. Claims go through a SQLite table shared the way processes share the
store: INSERT OR IGNORE, and True only when this insert changed a row.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import sqlite3
import threading
from collections.abc import Awaitable, Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from keel.alerts.sender import AlertSender, Claim
from keel.store.protocols import Charge

SECRET = "whsec-test"
DAY = 86_400.0
T0 = 1_795_000_000.0  # a fixed wall clock (2026-11-18)
USD_DAY = Charge("tenant=acme|usd_day", "day", 10.0, 0.5)
USD_TOTAL = Charge("tenant=acme|feature=search|usd_total", "total", 100.0, 1.0)


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(test(), 30))


class Receiver:
    """Records (headers, body) of each POST; answers the next scripted status or "hang", then 200."""

    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.script: list[int | str] = []
        self.released = threading.Event()  # ends hung requests at teardown
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.receiver = self  # type: ignore[attr-defined]
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/hooks/keel"
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    def answer(self, headers: dict[str, str], body: bytes) -> int | str:
        with self._lock:
            self.requests.append((headers, body))
            return self.script.pop(0) if self.script else 200

    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(body) for _, body in self.requests]

    def close(self) -> None:
        self.released.set()
        self._server.shutdown()
        self._server.server_close()


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        receiver: Receiver = self.server.receiver  # type: ignore[attr-defined]
        body = self.rfile.read(int(self.headers["content-length"]))
        answer = receiver.answer({k.lower(): v for k, v in self.headers.items()}, body)
        if answer == "hang":
            receiver.released.wait(10)  # the client has long given up
            return
        assert isinstance(answer, int)
        self.send_response(answer)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def sqlite_claim(path: Path) -> Claim:
    """The store's claim_alert, in miniature: a fresh connection per call, as separate processes would."""
    with sqlite3.connect(path) as db:
        db.execute(
            "CREATE TABLE IF NOT EXISTS alert_claims (counter TEXT, period TEXT, threshold REAL, at REAL,"
            " PRIMARY KEY (counter, period, threshold))"
        )

    def claim(counter: str, period: str, threshold: float, at: float) -> bool:
        db = sqlite3.connect(path, timeout=10)
        try:
            with db:
                db.execute("INSERT OR IGNORE INTO alert_claims VALUES (?, ?, ?, ?)", (counter, period, threshold, at))
                return bool(db.execute("SELECT changes()").fetchone()[0] == 1)
        finally:
            db.close()

    return claim


def always(counter: str, period: str, threshold: float, at: float) -> bool:
    return True


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def sender(receiver: Receiver, claim: Claim = always, **options: Any) -> AlertSender:
    options = {"retries": 3, "backoff_s": 0.01, "timeout_s": 2.0, "clock": Clock(), **options}
    return AlertSender(receiver.url, SECRET, claim=claim, **options)


async def deliver(alerts: AlertSender, reports: Callable[[], None]) -> None:
    """Start the background loop as the runtime does, report, then close (which drains)."""
    loop = asyncio.create_task(alerts.run())
    reports()
    await alerts.aclose()
    await loop  # run() returns once aclose has asked it to stop


def test_payload_is_signed_with_the_secret(receiver: Receiver) -> None:
    alerts = sender(receiver)

    async def test() -> None:
        await deliver(alerts, lambda: alerts.threshold_crossed(USD_DAY, 0.8, 8.25))

    run(test)
    assert alerts.stats.sent == 1
    [(headers, raw_body)] = receiver.requests
    signed = headers["x-keel-timestamp"].encode() + b"." + raw_body
    expected = "sha256=" + hmac.new(SECRET.encode(), signed, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(expected, headers["x-keel-signature"])
    wrong = "sha256=" + hmac.new(b"another secret", signed, hashlib.sha256).hexdigest()
    assert wrong != headers["x-keel-signature"]
    assert headers["content-type"] == "application/json"
    event_id = hashlib.sha256(b"tenant=acme|usd_day|d20261118|0.8").hexdigest()
    assert headers["x-keel-event-id"] == event_id
    assert json.loads(raw_body) == {
        "event": "limit.threshold_crossed",
        "counter": "tenant=acme|usd_day",
        "kind": "usd_day",
        "scope": "tenant=acme",
        "threshold": 0.8,
        "used": 8.25,
        "limit": 10.0,
        "period": "d20261118",
        "at": int(T0),
        "id": event_id,
    }


def test_retried_after_5xx_and_429_then_delivered(receiver: Receiver) -> None:
    receiver.script = [500, 429, 503]
    alerts = sender(receiver)

    async def test() -> None:
        await deliver(alerts, lambda: alerts.threshold_crossed(USD_DAY, 0.8, 9.0))

    run(test)
    assert len(receiver.requests) == 4
    assert len({body for _, body in receiver.requests}) == 1  # the same event every attempt
    assert (alerts.stats.sent, alerts.stats.failed, alerts.stats.queued) == (1, 0, 0)


def test_a_hung_receiver_times_out_and_is_retried(receiver: Receiver) -> None:
    receiver.script = ["hang"]
    alerts = sender(receiver, timeout_s=0.2)

    async def test() -> None:
        await deliver(alerts, lambda: alerts.threshold_crossed(USD_DAY, 0.8, 9.0))

    run(test)
    assert len(receiver.requests) == 2
    assert (alerts.stats.sent, alerts.stats.failed) == (1, 0)


def test_4xx_is_not_retried(receiver: Receiver) -> None:
    receiver.script = [400]
    alerts = sender(receiver)

    async def test() -> None:
        await deliver(alerts, lambda: alerts.threshold_crossed(USD_DAY, 0.8, 9.0))

    run(test)
    assert len(receiver.requests) == 1
    assert (alerts.stats.sent, alerts.stats.failed) == (0, 1)


def test_exhausted_retries_are_counted_and_never_resent(receiver: Receiver, tmp_path: Path) -> None:
    receiver.script = [500, 500, 500]
    claim = sqlite_claim(tmp_path / "claims.db")
    first = sender(receiver, claim, retries=2)

    async def test() -> None:
        await deliver(first, lambda: first.threshold_crossed(USD_DAY, 0.8, 9.0))
        again = sender(receiver, claim)  # a later run (or a restarted process) sees the same crossing
        await deliver(again, lambda: again.threshold_crossed(USD_DAY, 0.8, 9.5))
        assert (again.stats.sent, again.stats.deduped) == (0, 1)

    run(test)
    assert len(receiver.requests) == 3
    assert (first.stats.sent, first.stats.failed) == (0, 1)


def test_one_post_for_a_crossing_reported_50_times(receiver: Receiver) -> None:
    alerts = sender(receiver)

    def reports() -> None:
        for i in range(50):
            alerts.threshold_crossed(USD_DAY, 0.8, 8.0 + i / 100)

    async def test() -> None:
        await deliver(alerts, reports)

    run(test)
    assert len(receiver.requests) == 1
    assert (alerts.stats.sent, alerts.stats.deduped) == (1, 49)


def test_two_processes_sharing_the_claim_ledger_send_once(receiver: Receiver, tmp_path: Path) -> None:
    claim = sqlite_claim(tmp_path / "claims.db")
    a, b = sender(receiver, claim), sender(receiver, claim)

    async def test() -> None:
        loops = [asyncio.create_task(a.run()), asyncio.create_task(b.run())]
        for _ in range(10):
            a.threshold_crossed(USD_TOTAL, 0.8, 85.0)
            b.threshold_crossed(USD_TOTAL, 0.8, 86.0)
        await asyncio.gather(a.aclose(), b.aclose())
        await asyncio.gather(*loops)

    run(test)
    assert len(receiver.requests) == 1
    assert receiver.bodies()[0]["period"] == "all"
    assert a.stats.sent + b.stats.sent == 1
    assert a.stats.deduped + b.stats.deduped == 19  # 9 + 9 in memory, 1 claim lost


def test_a_new_period_is_a_new_crossing(receiver: Receiver) -> None:
    clock = Clock()
    alerts = sender(receiver, clock=clock)
    minute = Charge("tenant=acme|rpm", "minute", 100.0, 1.0)
    in_flight = Charge("tenant=acme|concurrency", "concurrent", 10.0, 1.0)

    def reports() -> None:
        alerts.threshold_crossed(USD_DAY, 0.8, 8.0)
        alerts.threshold_crossed(USD_DAY, 0.8, 9.0)
        alerts.threshold_crossed(USD_DAY, 0.9, 9.0)  # another threshold: its own crossing
        alerts.threshold_crossed(minute, 0.8, 90.0)  # no period: thresholds do not apply
        alerts.threshold_crossed(in_flight, 0.8, 9.0)
        clock.now += DAY
        alerts.threshold_crossed(USD_DAY, 0.8, 8.5)

    async def test() -> None:
        await deliver(alerts, reports)

    run(test)
    seen = sorted((b["period"], b["threshold"]) for b in receiver.bodies())
    assert seen == [("d20261118", 0.8), ("d20261118", 0.9), ("d20261119", 0.8)]
    assert len({b["id"] for b in receiver.bodies()}) == 3
    assert alerts.stats.sent == 3


def test_aclose_drains_the_queue_without_a_running_loop(receiver: Receiver) -> None:
    alerts = sender(receiver)

    async def test() -> None:
        for i in range(20):
            alerts.threshold_crossed(Charge(f"tenant=t{i}|usd_month", "month", 50.0, 1.0), 0.8, 45.0)
        assert alerts.stats.queued == 20
        await alerts.aclose()  # the runtime cancelled run() first, or never started it
        alerts.threshold_crossed(USD_DAY, 0.8, 9.0)  # after close: ignored

    run(test)
    assert len(receiver.requests) == 20
    assert (alerts.stats.sent, alerts.stats.queued) == (20, 0)


def test_aclose_gives_up_on_a_hung_receiver_within_its_bound(receiver: Receiver) -> None:
    receiver.script = ["hang"] * 10
    alerts = sender(receiver, timeout_s=5.0, drain_s=0.3)

    async def test() -> None:
        await deliver(alerts, lambda: alerts.threshold_crossed(USD_DAY, 0.8, 9.0))

    run(test)
    assert (alerts.stats.sent, alerts.stats.failed, alerts.stats.queued) == (0, 1, 0)
