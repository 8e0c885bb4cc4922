"""Approvals by a signed link: a call that needs approval posts `approval.requested` (signed) to the alerts
webhook with approve and deny links; the link approves without the admin token, once; a tampered, expired,
reused or misdirected link changes nothing; opening it (GET) decides nothing."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from keel.agents.links import Links
from keel.testing import FakeUpstream
from keel.testing.fake_upstream import Script

from ..conftest import Gateway, base_config
from .test_runs import MASTER, completion, keyed, register, service, until  # noqa: F401  (fixtures and helpers)
from .tool_service import ToolService

HOOK_SECRET = "whsec-approvals-" + "ab" * 8


class Hooks:
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers["content-length"]))
                signed = self.headers["x-keel-timestamp"].encode() + b"." + raw
                expected = "sha256=" + hmac.new(HOOK_SECRET.encode(), signed, hashlib.sha256).hexdigest()
                ok = hmac.compare_digest(expected, self.headers.get("x-keel-signature", ""))
                outer.events.append({"valid": ok, **json.loads(raw)})
                self.send_response(200 if ok else 401)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def hooks() -> Iterator[Hooks]:
    h = Hooks()
    yield h
    h.server.shutdown()
    h.server.server_close()


@pytest.fixture
def lgw(make_gateway: Any, up: FakeUpstream, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hooks: Hooks) -> Gateway:
    monkeypatch.setenv("KEEL_MASTER_KEY", MASTER)
    raw = base_config(up, f"sqlite:///{tmp_path}/keel.db", tmp_path)
    raw["alerts"] = {"webhook": {"url": hooks.url, "secret": HOOK_SECRET}}
    return make_gateway(raw)  # type: ignore[no-any-return]


def test_a_signed_link_approves_once_without_the_admin_token(
    lgw: Gateway,
    up: FakeUpstream,
    service: ToolService,  # noqa: F811
    hooks: Hooks,
) -> None:
    register(lgw, service)
    up.script(
        Script(body_override=completion(("call_p", "pay", {"amount": 500, "api_key": "sk-x"}))), Script(text="Paid.")
    )
    with keyed(lgw) as k:
        run = k.post("/api/agents/runs", json={"model": "gpt-4o-mini", "input": "pay", "tools": ["pay"]}).json()
    assert run["state"] == "waiting", run
    (call_id,) = run["pending"]
    (event,) = until(lambda: hooks.events)
    assert event["valid"] and event["event"] == "approval.requested"
    assert (event["call_id"], event["tool"], event["tenant"]) == (call_id, "pay", "t1")
    assert event["arguments"] == {"amount": 500, "api_key": "[redacted]"}
    approve, deny = event["approve_url"], event["deny_url"]
    assert approve.startswith(f"/api/approvals/{call_id}/approve?exp=") and "&sig=" in approve

    with httpx.Client(base_url=lgw.url, timeout=30) as anon:  # no token, no key
        check_links(lgw, anon, call_id, approve, deny, service)
    with httpx.Client(base_url=lgw.url, headers={"authorization": f"Bearer {lgw.admin}"}, timeout=30) as a:
        done = until(lambda: (v := a.get(f"/api/agents/runs/{run['id']}").json())["state"] in ("done", "failed") and v)
    assert done["state"] == "done", done
    assert len(service.payments) == 1
    assert [s["decided_by"] for s in done["steps"] if s["kind"] == "tool"] == ["link"]


def check_links(gw: Gateway, anon: httpx.Client, call_id: str, approve: str, deny: str, service: ToolService) -> None:  # noqa: F811
    expired = Links(gw.admin, None).url(call_id, "approve", time.time() - 1)
    tampered = approve[:-1] + ("0" if approve[-1] != "0" else "1")
    misdirected = deny.split("?")[0] + "?" + approve.split("?")[1]  # approve's signature on the deny path
    other_call = approve.replace(call_id, call_id[:-1] + "x")
    for name, link, why in [
        ("expired", expired, "expired"),
        ("tampered", tampered, "signature"),
        ("misdirected", misdirected, "signature"),
        ("another call", other_call, "signature"),
    ]:
        r = anon.post(link)
        print(f"{name}: {r.status_code} {r.json()['error']['message']}")
        assert r.status_code == 403 and why in r.json()["error"]["message"], (name, r.text)
    assert anon.post(f"/api/approvals/{call_id}/approve").status_code == 401  # no link, no token: the admin guard

    page = anon.get(approve)
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "pay" in page.text and '<form method="post">' in page.text and "sk-x" not in page.text
    assert len(service.payments) == 0  # opening the link decided nothing

    first = anon.post(approve)
    assert (first.status_code, first.json()["state"], first.json()["changed"]) == (200, "approved", True)
    again = anon.post(approve)
    print(f"reused: {again.status_code} {again.json()['state']}")
    assert (again.status_code, again.json()["changed"]) == (409, False)
    assert anon.post(deny).status_code == 409  # decided already: the deny link changes nothing either
    assert "already <b>approved</b>" in anon.get(approve).text


def test_links_are_absolute_with_a_public_url_and_bound_to_the_token() -> None:
    a = Links("token-a", "https://keel.example.com/")
    url = a.url("run_1:call_1", "approve", 2_000_000_000)
    assert url.startswith("https://keel.example.com/api/approvals/run_1:call_1/approve?exp=2000000000&sig=")
    sig = url.rsplit("sig=", 1)[1]
    assert a.check("run_1:call_1", "approve", sig, "2000000000", now=1e9) is None
    assert Links("token-b", None).check("run_1:call_1", "approve", sig, "2000000000", now=1e9) is not None
    assert a.check("run_1:call_1", "approve", sig, "1e9", now=1e9) == "the link is malformed"
