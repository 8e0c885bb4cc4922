"""SSO sign-in in a real headless Chromium, through the authorization code flow of a real issuer.

The browser asks for a dashboard page, is sent to the login page, picks "Sign in with Corp SSO",
signs in at keel.testing.oidc's login form (a wrong password first), comes back to the page it asked
for as Ann, whose group eng-admins maps to admin, and logs out at Keel and at the issuer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from keel.testing import FakeUpstream
from keel.testing.oidc import FakeIssuer
from tests.conftest import Gateway
from tests.e2e.test_dashboard_browser import browser
from tests.e2e.test_sso import SECRET, idp, sso_config

__all__ = ["browser", "idp"]  # fixtures


def test_sso_sign_in_and_out_in_chromium(
    browser: Any, make_gateway: Any, up: FakeUpstream, tmp_path: Path, idp: FakeIssuer
) -> None:
    gw: Gateway = make_gateway(sso_config(up, tmp_path, idp))
    context = browser.new_context()
    page = context.new_page()
    urls: list[str] = []
    page.on("request", lambda r: urls.append(r.url))

    page.goto(gw.url + "/ui/traces?status=error")
    assert page.url.startswith(gw.url + "/ui/login?next=")
    page.click("text=Sign in with Corp SSO")
    page.wait_for_url(idp.url + "/authorize?*")
    page.fill('input[name="username"]', "ann")
    page.fill('input[name="password"]', "wrong")
    page.click("#sign-in")
    assert "Wrong username or password" in page.inner_text("#error")
    page.fill('input[name="username"]', "ann")
    page.fill('input[name="password"]', "ann-pw")
    page.click("#sign-in")
    page.wait_for_url(gw.url + "/ui/traces?status=error")  # back where the sign-in began

    assert page.inner_text("#whoami") == "Ann Admin (admin, viewer in t1)"  # eng-admins -> admin, everyone -> viewer
    assert page.locator("#traces").count() == 1
    cookies = {c["name"]: c for c in context.cookies()}  # the issuer sets none
    assert set(cookies) == {"keel_ui"}  # the flow cookie (path /ui/sso) is spent
    assert cookies["keel_ui"]["httpOnly"] and cookies["keel_ui"]["sameSite"] == "Strict"
    page.click("text=Overview")
    assert page.url == gw.url + "/ui" and "Ann Admin" in page.inner_text("#whoami")

    page.click("text=Log out")
    page.wait_for_url(gw.url + "/ui/login")  # via the issuer's end_session, which sends the browser back
    assert [e["client_id"] for e in idp.log.logouts] == ["keel"]
    assert not context.cookies()
    page.goto(gw.url + "/ui")
    assert page.url.startswith(gw.url + "/ui/login")
    assert not [u for u in urls if SECRET in u or "id_token" in u or "code_verifier" in u]
    assert all(u.startswith((gw.url, idp.url)) for u in urls)  # nothing fetched from anywhere else
    context.close()
