"""Users, teams, roles and SLOs in a real headless browser (Debian's chromium driven by Playwright).

An operator signs in with the admin token, adds a team and a user on the pages, changes the user's
role and disables them through the forms, and reads the roles matrix; each change is checked against
the directory and the audit log. The SLO page shows what `GET /api/slo` computes from real calls, one
of them failed by the fake upstream. Then the user signs in with a personal access token as a viewer:
the nav offers no people pages and the forms are refused.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import expect

from keel.audit.log import AuditLog
from keel.tenancy.roles import MATRIX
from keel.testing import FakeUpstream, Script
from tests.conftest import Gateway, base_config
from tests.e2e.test_dashboard_browser import XSS, browser, chat  # noqa: F401  (browser: the module's fixture)


def test_people_roles_and_slos_in_chromium(browser: Any, make_gateway: Any, up: FakeUpstream, tmp_path: Path) -> None:  # noqa: F811
    raw = base_config(up, f"sqlite:///{tmp_path}/keel.db", tmp_path)
    raw["models"]["gpt-4o-mini"]["slo"] = {"availability": 99.0, "p95_ms": 5000}
    gw: Gateway = make_gateway(raw)
    for _ in range(3):
        chat(gw, gw.key, "gpt-4o-mini", "chat")
    up.script(Script(status=400))
    chat(gw, gw.key, "gpt-4o-mini", "chat", fails=True)
    gw.traces()
    store = gw.runtime.store

    context = browser.new_context()
    page = context.new_page()
    page.on("dialog", lambda d: pytest.fail(f"a dialog opened: {d.message}"))
    page.goto(gw.url + "/ui/teams?tenant=t1")
    page.fill('input[name="token"]', gw.admin)
    page.click('button[type="submit"]')
    page.fill('#add-team input[name="name"]', "ml")
    page.click('#add-team button[type="submit"]')
    expect(page.locator("#teams")).to_contain_text("ml")
    assert [t.name for t in store.list_teams("t1")] == ["ml"]

    page.goto(gw.url + "/ui/users?tenant=t1")
    page.fill('#add-user input[name="id"]', "ann")
    page.fill('#add-user input[name="email"]', "ann@example.com")
    page.fill('#add-user input[name="name"]', XSS)
    page.select_option('#add-user select[name="role"]', "developer")
    page.select_option('#add-user select[name="team"]', "ml")
    page.click('#add-user button[type="submit"]')
    row = page.locator('tr[data-user="ann"]')
    expect(row.locator('[data-col="roles"]')).to_have_text("developer")
    assert page.evaluate("window.__xss") is None  # the name is shown as text, never run
    user = store.get_user("ann")
    assert user is not None and (user.tenant, user.roles, user.team) == ("t1", ("developer",), "ml")

    row.locator('form.set-role select[name="role"]').select_option("viewer")
    row.locator('form.set-role button[type="submit"]').click()
    expect(page.locator('tr[data-user="ann"] [data-col="roles"]')).to_have_text("viewer")
    assert store.get_user("ann").roles == ("viewer",)  # type: ignore[union-attr]
    page.locator('tr[data-user="ann"] form.disable button[type="submit"]').click()
    expect(page.locator('tr[data-user="ann"] [data-col="disabled"]')).to_have_text(re.compile(r"^20\d\d-"))
    assert store.get_user("ann").disabled_at is not None  # type: ignore[union-attr]
    page.locator('tr[data-user="ann"] form.disable button[type="submit"]').click()  # enabled again
    expect(page.locator('tr[data-user="ann"] [data-col="disabled"]')).to_have_text("–")
    assert store.get_user("ann").disabled_at is None  # type: ignore[union-attr]
    actions = [e.action for e in AuditLog(store).entries() if e.target == "user:ann"]
    assert (
        actions
        == ["users.manage POST /ui/users"]
        + ["users.manage POST /ui/users/ann/role"]
        + ["users.manage POST /ui/users/ann/disable"] * 2
    )

    page.click("text=Roles")
    for role in ("owner", "viewer", "auditor"):
        for permission in ("keys.write", "audit.read", "traces.read"):
            cell = page.locator(f'#roles tr[data-permission="{permission}"] td[data-role="{role}"]')
            assert (cell.inner_text() == "✓") == (permission in MATRIX[role]), (role, permission)

    page.click("text=SLOs")
    (status,) = httpx.get(f"{gw.url}/api/slo", headers={"authorization": f"Bearer {gw.admin}"}).json()["data"]
    availability = next(o for o in status["objectives"] if o["objective"] == "availability")
    assert availability["calls"] == 4 and availability["good"] == 0.75
    shown = page.locator('#slo tr[data-alias="gpt-4o-mini"][data-objective="availability"] td')
    assert [shown.nth(i).inner_text() for i in (2, 3, 4)] == ["99.000%", "75.000%", "4"]
    context.close()

    admin = {"authorization": f"Bearer {gw.admin}"}
    token = httpx.post(gw.url + "/api/tokens", json={"user": "ann"}, headers=admin).json()["token"]
    viewer = browser.new_context(extra_http_headers={"authorization": f"Bearer {token}"})
    page = viewer.new_page()
    page.goto(gw.url + "/ui")
    links = page.locator("header a").evaluate_all("(links) => links.map((a) => a.getAttribute('href'))")
    assert "/ui/slo" in links and not {"/ui/users", "/ui/teams", "/ui/roles", "/ui/audit"} & set(links)
    assert page.goto(gw.url + "/ui/users").status == 403
    viewer.close()
