"""The audit log streamed to a SIEM: a real receiver on 127.0.0.1 that is down (connections refused, then
a 500) while changes are made, a gateway restarted in the meantime, and in the end every entry delivered
in seq order, none lost, each request signed; /readyz and /metrics show the lag and the failures.
Delivery is at least once: the receiver dedupes on `seq`, as a SIEM would."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
import yaml

from keel import config as keel_config
from keel.api.app import create_app
from keel.audit.siem import SiemShipper
from keel.errors import ConfigError
from keel.runtime.components import Runtime
from keel.testing import FakeUpstream

from ..conftest import ADMIN, _Server, base_config

SECRET = "siem-secret-" + "x" * 8
AUTH = {"authorization": f"Bearer {ADMIN}"}


class Receiver:
    """A SIEM's intake: records each POST (headers, body); answers the scripted statuses first, then 200."""

    def __init__(self, port: int, script: list[int]) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.script = script
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                with receiver._lock:
                    receiver.requests.append(({k.lower(): v for k, v in self.headers.items()}, body))
                    status = receiver.script.pop(0) if receiver.script else 200
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@contextlib.contextmanager
def serve(raw: dict[str, Any], tmp: Path, env: dict[str, str]) -> Iterator[tuple[str, Runtime]]:
    (tmp / "keel.yaml").write_text(yaml.safe_dump(raw))
    runtime = Runtime.build(keel_config.load(tmp / "keel.yaml", env=env))
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    server = _Server(uvicorn.Config(create_app(runtime), log_level="warning", access_log=False, loop="asyncio"))
    thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[sock])), daemon=True)
    thread.start()
    while not server.started:
        assert thread.is_alive(), "gateway failed to start"
        threading.Event().wait(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}", runtime
    finally:
        server.should_exit = True
        thread.join(15)


def wait_for(check: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := check():
            return value
        threading.Event().wait(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def register_tools(url: str, names: list[str]) -> None:
    for name in names:
        spec = {"tenant": "t1", "name": name, "kind": "http", "description": "d",
                "http": {"method": "POST", "url": "http://127.0.0.1:9/x"}, "parameters": {"type": "object"}}  # fmt: skip
        r = httpx.post(url + "/api/agents/tools", json=spec, headers=AUTH)
        assert r.status_code == 201, r.text


def test_entries_reach_the_siem_in_order_after_an_outage_and_a_restart(
    up: FakeUpstream, storage_url: str, tmp_path: Path
) -> None:
    receiver = Receiver(0, [])
    port = receiver.port
    raw = base_config(up, storage_url, tmp_path)
    siem = {"url": f"http://127.0.0.1:{port}/intake", "secret": "${KEEL_SIEM_SECRET}", "batch": 3,
            "interval_s": 0.05, "backoff_max_s": 0.2}  # fmt: skip
    raw["audit"] = {"siem": siem}
    env = {"KEEL_SIEM_SECRET": SECRET}

    with serve(raw, tmp_path, env) as (url, runtime):
        runtime.store.create_tenant("t1")
        shipper = runtime.get(SiemShipper)
        register_tools(url, ["a-0", "a-1"])
        head = runtime.store.audit_head()[0]
        wait_for(lambda: shipper.stats.cursor == head, "the first entries delivered")
        receiver.close()  # the SIEM goes down: connections refused
        register_tools(url, [f"b-{i}" for i in range(4)])
        wait_for(lambda: shipper.stats.failures >= 3 and shipper.stats.lag >= 4, "failed deliveries")
        ready = httpx.get(url + "/readyz").json()
        assert ready["status"] == "ready"  # a SIEM outage never takes the gateway out
        assert ready["audit_siem"]["state"].startswith("ClientConnectorError"), ready["audit_siem"]
        assert ready["audit_siem"]["lag_entries"] >= 4 and ready["audit_siem"]["cursor"] == head
        assert SECRET not in json.dumps(ready)
        metrics = httpx.get(url + "/metrics").text
        assert "keel_audit_siem_up 0" in metrics and "keel_audit_siem_failures_total" in metrics
    delivered_before = len(receiver.requests)

    again = Receiver(port, [500])  # up again, failing once before it accepts
    try:
        with serve(raw, tmp_path, env) as (url, runtime):  # the same store: the cursor is where delivery stopped
            register_tools(url, [f"c-{i}" for i in range(3)])
            head = runtime.store.audit_head()[0]
            shipper = runtime.get(SiemShipper)
            wait_for(lambda: shipper.stats.cursor == head, "every entry delivered")
            ready = httpx.get(url + "/readyz").json()["audit_siem"]
            assert ready["state"] == "ok" and ready["lag_entries"] == 0, ready
            assert "keel_audit_siem_lag_entries 0" in httpx.get(url + "/metrics").text
            entries = httpx.get(url + "/api/audit", params={"limit": 1000}, headers=AUTH).json()["data"]
    finally:
        again.close()

    requests = receiver.requests + again.requests
    accepted = [r for i, r in enumerate(requests) if i != delivered_before]  # the one answered 500
    seen: dict[int, None] = {}
    for _, body in accepted:
        for e in json.loads(body)["entries"]:
            seen.setdefault(e["seq"], None)  # at least once: dedupe on seq
    assert list(seen) == list(range(1, head + 1)), "every entry, in seq order"
    actions = [e["action"] for e in entries]
    assert actions[0] == "config.load" and actions.count("tool.register") == 9
    resumed, retried = (json.loads(again.requests[i][1]) for i in (0, 1))
    assert resumed["first_seq"] == retried["first_seq"] == 4, (
        "resumed at the durable cursor; the refused batch sent again"
    )
    for headers, body in requests:
        signed = headers["x-keel-timestamp"].encode() + b"." + body
        assert headers["x-keel-signature"] == "sha256=" + hmac.new(SECRET.encode(), signed, hashlib.sha256).hexdigest()
        batch = json.loads(body)
        assert len(batch["entries"]) <= 3 and batch["first_seq"] == batch["entries"][0]["seq"]
        assert headers["x-keel-delivery-id"] == f"audit-{batch['first_seq']}-{batch['last_seq']}"
        for e in batch["entries"]:  # each delivered entry is the chain's own (its hash and link)
            assert e["hash"] == entries[e["seq"] - 1]["hash"] and e["prev_hash"] == entries[e["seq"] - 1]["prev_hash"]


def test_the_siem_section_refuses_unknown_keys_and_non_http_urls(tmp_path: Path) -> None:
    base = {
        "providers": {"sim": {"type": "simulated"}},
        "models": {"m": {"targets": [{"provider": "sim", "model": "s"}]}},
    }
    for siem, named in [
        ({"url": "https://siem.example/x", "secret": "s", "batchsize": 5}, "audit.siem.batchsize"),
        ({"url": "ftp://siem.example/x", "secret": "s"}, "audit.siem.url"),
        ({"url": "https://siem.example/x", "secret": "s", "batch": 0}, "audit.siem.batch"),
        ({"url": "https://siem.example/x", "secret": "s", "timeout_s": 10, "lease_s": 10}, "lease_s (10) must exceed"),
        ({"url": "https://siem.example/x", "secret": "s", "timeout_s": 40}, "lease_s (30) must exceed timeout_s (40)"),
    ]:
        (tmp_path / "keel.yaml").write_text(yaml.safe_dump({**base, "audit": {"siem": siem}}))
        with pytest.raises(ConfigError) as info:
            keel_config.load(tmp_path / "keel.yaml", env={})
        assert named in str(info.value), str(info.value)


@pytest.mark.parametrize("storage_url", ["sqlite"], indirect=True)
def test_the_shipper_restarts_when_it_dies_and_loses_nothing(
    up: FakeUpstream, storage_url: str, tmp_path: Path
) -> None:
    receiver = Receiver(0, [])
    raw = base_config(up, storage_url, tmp_path)
    raw["audit"] = {"siem": {"url": f"http://127.0.0.1:{receiver.port}/intake", "secret": SECRET, "interval_s": 0.05}}
    db = storage_url.removeprefix("sqlite:///")
    try:
        with serve(raw, tmp_path, {}) as (url, runtime):
            runtime.store.create_tenant("t1")
            shipper = runtime.get(SiemShipper)
            wait_for(lambda: shipper.stats.cursor == runtime.store.audit_head()[0], "the config entry delivered")
            with closing(sqlite3.connect(db)) as conn:  # the cursor's table goes away: its write raises
                conn.execute("ALTER TABLE audit_marks RENAME TO audit_marks_away")
                conn.commit()
            register_tools(url, ["x"])
            state = runtime.workers.states["audit-siem"]
            wait_for(lambda: state.restarts >= 1, "the shipper to die and be restarted")
            assert httpx.get(url + "/readyz").json()["workers"]["audit-siem"].startswith("crashed")
            with closing(sqlite3.connect(db)) as conn:
                conn.execute("ALTER TABLE audit_marks_away RENAME TO audit_marks")
                conn.commit()
            head = runtime.store.audit_head()[0]
            wait_for(lambda: runtime.store.audit_mark("siem") == str(head), "delivery to resume", timeout=60)
            wait_for(lambda: httpx.get(url + "/readyz").json()["workers"]["audit-siem"] == "ok", "the worker healthy")
    finally:
        receiver.close()
    seqs = [e["seq"] for _, body in receiver.requests for e in json.loads(body)["entries"]]
    assert sorted(set(seqs)) == list(range(1, head + 1)) and seqs.count(head) == 2, "resent once, none lost"
