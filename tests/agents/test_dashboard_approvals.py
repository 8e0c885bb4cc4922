"""Approvals in the dashboard: a waiting call is listed with its (redacted) arguments; Approve posts the
decision (signed in, same origin) and the run goes on; a second decision changes nothing and says so; no
session or another origin decides nothing."""

from __future__ import annotations

import httpx

from keel.testing import FakeUpstream
from keel.testing.fake_upstream import Script

from ..conftest import Gateway
from .test_runs import admin, agw, completion, keyed, register, service, until  # noqa: F401  (fixtures and helpers)
from .tool_service import ToolService


def test_an_approver_approves_in_the_dashboard(agw: Gateway, up: FakeUpstream, service: ToolService) -> None:  # noqa: F811
    register(agw, service)
    up.script(
        Script(body_override=completion(("call_p", "pay", {"amount": 900, "password": "hunter2"}))),
        Script(text="Paid."),
    )
    with keyed(agw) as k:
        run = k.post("/api/agents/runs", json={"model": "gpt-4o-mini", "input": "pay", "tools": ["pay"]}).json()
    assert run["state"] == "waiting", run
    (call_id,) = run["pending"]

    with httpx.Client(base_url=agw.url, timeout=10) as anon:
        r = anon.post(f"/ui/approvals/{call_id}/approve")
        assert r.status_code == 303 and r.headers["location"].startswith("/ui/login")  # no session: nothing decided
    with httpx.Client(base_url=agw.url, timeout=10) as ui:
        assert ui.post("/ui/login", data={"token": agw.admin, "next": "/ui"}).status_code == 303
        page = ui.get("/ui/approvals", params={"tenant": "t1"})
        assert page.status_code == 200 and f'data-call="{call_id}"' in page.text
        assert "hunter2" not in page.text and "[redacted]" in page.text and "&quot;amount&quot;:900" in page.text
        assert f'action="/ui/approvals/{call_id}/approve"' in page.text

        other = ui.post(f"/ui/approvals/{call_id}/approve", headers={"origin": "http://evil.example"})
        assert other.status_code == 403
        assert agw.runtime.store.get_call(call_id).state == "pending"  # type: ignore[union-attr]

        r = ui.post(f"/ui/approvals/{call_id}/approve")
        assert r.status_code == 303 and r.headers["location"].endswith("result=approved")
        again = ui.post(f"/ui/approvals/{call_id}/deny")
        assert again.headers["location"].endswith("result=unchanged")
        shown = ui.get(again.headers["location"])
        assert "Already decided" in shown.text and f'data-call="{call_id}"' in shown.text
        assert 'id="approvals"' in shown.text and "Nothing waits" in shown.text

    with admin(agw) as a:
        done = until(lambda: (v := a.get(f"/api/agents/runs/{run['id']}").json())["state"] in ("done", "failed") and v)
    assert done["state"] == "done", done
    assert len(service.payments) == 1
    assert [s["decided_by"] for s in done["steps"] if s["kind"] == "tool"] == [
        "admin"
    ]  # the signed-in actor: the admin-token session
