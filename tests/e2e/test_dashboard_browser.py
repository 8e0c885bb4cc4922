"""The dashboard in a real headless browser: Debian's chromium driven by Playwright.

A real gateway (SQLite, the fake upstream) takes calls from the openai SDK for two tenants, two
features and two models, some failing by fault script, one carrying a script-injection attempt. The
browser logs in (a wrong token first), reads the overview's figures and checks each against
`GET /api/usage`, filters the trace list, opens traces, and logs out. Playwright's own browser
download does not work here, so the test uses /usr/bin/chromium (`apt-get install chromium`).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from keel.keys.auth import issue_key
from keel.testing import FakeUpstream, Script
from tests.conftest import Gateway, base_config, until

CHROMIUM = os.environ.get("KEEL_TEST_CHROMIUM", "/usr/bin/chromium")
XSS = "<script>window.__xss = 1</script> what is 2+2?"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if shutil.which(CHROMIUM) is None:
        reason = f"no chromium at {CHROMIUM}: apt-get install -y chromium"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM)
        yield b
        b.close()


def chat(gw: Gateway, key: str, model: str, feature: str, content: str = "hello", fails: bool = False) -> None:
    with openai.OpenAI(base_url=gw.base_url, api_key=key, max_retries=0, timeout=10) as c:
        headers = {"x-keel-feature": feature, "x-keel-user": "ann"}
        messages: Any = [{"role": "user", "content": content}]
        if not fails:
            c.chat.completions.create(model=model, messages=messages, extra_headers=headers)
            return
        with pytest.raises(openai.BadRequestError):
            c.chat.completions.create(model=model, messages=messages, extra_headers=headers)


def traffic(gw: Gateway, up: FakeUpstream) -> dict[str, str]:
    """Calls across tenants t1 and t2, features chat and search, models gpt-4o-mini and claude."""
    t2 = issue_key(gw.runtime.store, gw.runtime.store.create_tenant("t2").name, name="t2").key
    for _ in range(3):
        chat(gw, gw.key, "gpt-4o-mini", "chat")
    chat(gw, gw.key, "claude", "search")
    up.script(Script(status=400))
    chat(gw, gw.key, "gpt-4o-mini", "chat", fails=True)
    up.script(Script(status=500))  # retried once on the same target: two attempts, served
    chat(gw, t2, "gpt-4o-mini", "search", "retried")
    chat(gw, t2, "claude", "search")
    up.script(Script(status=400))
    chat(gw, t2, "claude", "chat", fails=True)
    chat(gw, t2, "claude", "chat", XSS)
    traces = gw.traces()
    assert len(traces) == 9
    return {
        "xss": next(t.id for t in traces if t.request and XSS in str(t.request)),
        "retried": next(t.id for t in traces if t.attempts == 2),
    }


def api(gw: Gateway, path: str, **params: str) -> Any:
    r = httpx.get(gw.url + path, params=params, headers={"authorization": f"Bearer {gw.admin}"})
    assert r.status_code == 200, r.text
    return r.json()["data"]


def api_trace(gw: Gateway, trace_id: str) -> Any:
    r = httpx.get(f"{gw.url}/api/traces/{trace_id}", headers={"authorization": f"Bearer {gw.admin}"})
    assert r.status_code == 200, r.text
    return r.json()


def figure(text: str) -> float:
    """A shown figure back to a number: '$0.000123' → 0.000123, '1,234' → 1234."""
    return float(text.replace("$", "").replace(",", "").split()[0])


def check_overview_against_the_api(page: Any, gw: Gateway) -> None:
    (total,) = api(gw, "/api/usage", by="all", since="1h")
    assert (total["calls"], total["errors"]) == (9, 2)
    cards = {k: page.inner_text(f'[data-figure="{k}"] b') for k in ("calls", "errors", "cost")}
    assert figure(cards["calls"]) == total["calls"] and figure(cards["errors"]) == total["errors"]
    assert figure(cards["cost"]) == pytest.approx(total["cost_usd"], abs=1e-6)
    assert total["cost_usd"] > 0
    for by in ("tenant", "feature", "model"):
        rows = api(gw, "/api/usage", by=by, since="1h")
        shown = page.locator(f"#by-{by} tr[data-group]")
        assert shown.count() == len(rows) >= 2, by
        for row in rows:
            tr = page.locator(f'#by-{by} tr[data-group="{row[by] or ""}"]')
            assert figure(tr.locator('[data-col="calls"]').inner_text()) == row["calls"], (by, row)
            assert figure(tr.locator('[data-col="errors"]').inner_text()) == row["errors"], (by, row)
            assert figure(tr.locator('[data-col="cost"]').inner_text()) == pytest.approx(row["cost_usd"], abs=1e-6)
    assert page.locator("svg rect").count() > 0  # the calls and cost charts have bars


def test_the_dashboard_in_chromium_shows_what_the_api_says(
    browser: Any, make_gateway: Any, up: FakeUpstream, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    gw: Gateway = make_gateway(base_config(up, f"sqlite:///{tmp_path}/keel.db", tmp_path))
    ids = traffic(gw, up)
    context = browser.new_context()
    page = context.new_page()
    urls: list[str] = []
    page.on("request", lambda r: urls.append(r.url))
    page.on("dialog", lambda d: pytest.fail(f"a dialog opened: {d.message}"))

    page.goto(gw.url + "/ui?window=1h")
    assert page.url.startswith(gw.url + "/ui/login")
    page.fill('input[name="token"]', "not-the-token")
    page.click('button[type="submit"]')
    assert "not the admin token" in page.inner_text("#login-error") and not context.cookies()
    page.fill('input[name="token"]', gw.admin)
    page.click('button[type="submit"]')
    assert page.url == gw.url + "/ui?window=1h"  # back where the login began
    (cookie,) = context.cookies()
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and gw.admin not in cookie["value"]

    check_overview_against_the_api(page, gw)

    page.click("text=Traces")
    page.fill('input[name="tenant"]', "t2")
    page.select_option('select[name="status"]', "error")
    page.select_option('select[name="since"]', "1h")
    page.click('form.filters button[type="submit"]')
    want = api(gw, "/api/traces", tenant="t2", status="error", since="1h")
    assert len(want) == 1
    rows = page.locator("#traces tr[data-trace]")
    # the submit navigates: read the rows once the new page has them (Playwright's retrying expect), not at once
    expect(rows).to_have_count(len(want))
    assert [rows.nth(i).get_attribute("data-trace") for i in range(rows.count())] == [t["id"] for t in want]
    page.fill('input[name="tenant"]', "")
    page.select_option('select[name="status"]', "")
    page.fill('input[name="feature"]', "chat")
    page.click('form.filters button[type="submit"]')
    expect(page.locator("#traces tr[data-trace]")).to_have_count(
        len(api(gw, "/api/traces", feature="chat", since="1h"))
    )

    page.click(f'tr[data-trace="{ids["xss"]}"] a')
    assert page.inner_text("#trace-id") == ids["xss"]
    assert XSS in page.inner_text("#messages")  # shown as text, never run
    assert "echo: " in page.inner_text("#response") and XSS in page.inner_text("#response")
    assert page.evaluate("window.__xss") is None
    assert page.locator("#attempts tr").count() == 2  # header + the one attempt
    route = api_trace(gw, ids["xss"])["route"]
    assert route and "candidates" in route and json.loads(page.inner_text("#route")) == route

    page.goto(f"{gw.url}/ui/traces/{ids['retried']}")
    detail = api_trace(gw, ids["retried"])
    attempts = [r.inner_text() for r in page.locator("#attempts tr").all()[1:]]
    assert len(attempts) == len(detail["attempt_log"]) == 2
    assert "error" in attempts[0] and "server" in attempts[0] and "ok" in attempts[1]
    assert "retried" in page.inner_text("#messages")
    assert page.inner_text('[data-fact="cost"]') == f"${detail['cost_usd']:,.6f}"

    page.click("text=Log out")
    assert page.url == gw.url + "/ui/login" and not context.cookies()
    page.goto(gw.url + "/ui")
    assert page.url.startswith(gw.url + "/ui/login")
    assert not [u for u in urls if gw.admin in u]  # the token never travelled in a URL
    assert all(u.startswith(gw.url) for u in urls)  # nothing fetched from anywhere else
    context.close()


def test_the_prompt_pages_in_chromium_show_a_rollouts_variants_side_by_side(
    browser: Any, make_gateway: Any, up: FakeUpstream, tmp_path: Path
) -> None:
    gw: Gateway = make_gateway(base_config(up, f"sqlite:///{tmp_path}/keel.db", tmp_path))
    admin = {"Authorization": f"Bearer {gw.admin}"}
    v1 = {"tenant": "t1", "name": "greet", "alias": "sim", "message": "first",
          "messages": [{"role": "user", "content": "Hello {{who}}"}]}  # fmt: skip
    v2 = {**v1, "message": XSS, "messages": [{"role": "user", "content": "Hello there {{who}} " + XSS}]}
    for body in (v1, v2):
        assert httpx.post(gw.url + "/api/prompts", json=body, headers=admin).status_code == 201
    httpx.put(gw.url + "/api/prompts/greet/labels/production", json={"tenant": "t1", "version": 1}, headers=admin)
    started = httpx.post(
        gw.url + "/api/prompts/greet/rollouts",
        json={"tenant": "t1", "label": "production", "to": 2, "weight": 50, "guards": ["error_rate<0.5"],
              "min_calls": 1000},
        headers=admin,
    )  # fmt: skip
    assert started.status_code == 201
    with openai.OpenAI(base_url=gw.base_url, api_key=gw.key, max_retries=0, timeout=10) as c:
        for i in range(30):
            raw = c.chat.completions.with_raw_response.create(
                model="prompt", messages=[], user=f"u{i}",
                extra_body={"prompt": {"id": "greet", "label": "production", "variables": {"who": "Ada"}}},
            )  # fmt: skip
            if i < 4:
                gw.traces()
                fb = {"trace_id": raw.headers["x-keel-trace-id"], "score": 1}
                scored = httpx.post(gw.url + "/api/feedback", json=fb, headers={"Authorization": f"Bearer {gw.key}"})
                assert scored.status_code == 201, scored.text
    gw.traces()
    usage = {r["prompt_version"]: r for r in api(gw, "/api/usage", by="prompt_version", since="1h")}

    context = browser.new_context()
    page = context.new_page()
    page.on("dialog", lambda d: pytest.fail(f"a dialog opened: {d.message}"))
    page.goto(gw.url + "/ui/prompts")
    page.fill('input[name="token"]', gw.admin)
    page.click('button[type="submit"]')
    assert page.url == gw.url + "/ui/prompts"
    row = page.locator('tr[data-prompt="greet"]')
    assert "v2" in row.inner_text() and "production=v1" in row.inner_text()
    row.locator("a").click()
    assert page.inner_text("#prompt-name").startswith("greet")
    assert "v2 50%" in page.inner_text('#labels tr[data-label="production"]')
    rollout = page.locator('.rollout[data-rollout="production"]')
    assert rollout.locator("[data-state]").inner_text() == "running"
    calls = rollout.locator('tr[data-metric="calls"]')
    assert figure(calls.locator('[data-variant="stable"]').inner_text()) == usage["greet@1"]["calls"]
    assert figure(calls.locator('[data-variant="new"]').inner_text()) == usage["greet@2"]["calls"]
    assert rollout.locator('tr[data-metric="error_rate"] td').last.inner_text() == "error_rate<0.5"
    feedback = rollout.locator('tr[data-metric="feedback"]')
    shown = [feedback.locator(f'[data-variant="{v}"]').inner_text() for v in ("stable", "new")]
    assert sum(int(s.split("(")[1].rstrip(")")) for s in shown if s != "–") == 4  # the four scores, by variant
    assert page.locator("#versions tr[data-version]").count() == 2
    diff = page.inner_text("#diff")
    assert '-      "content": "Hello {{who}}",' in diff and XSS in diff  # the new text shown, never run
    assert page.evaluate("window.__xss") is None
    assert "rollout started: v2 50%" in page.inner_text("#history")
    page.goto(gw.url + "/ui/prompts/t1/greet?diff=2..9")
    assert "OLD..NEW" in page.inner_text("#error")
    page.goto(gw.url + "/ui/prompts/t1/nope")
    assert "No prompt nope" in page.inner_text("h1")
    context.close()


def test_keys_and_the_audit_log_in_chromium(browser: Any, make_gateway: Any, up: FakeUpstream, tmp_path: Path) -> None:
    """Create a key on the page (shown once, and it works), revoke it through the confirm step (then it is
    refused), and find both changes on the audit page with the chain verified and an export to download."""
    gw: Gateway = make_gateway(base_config(up, f"sqlite:///{tmp_path}/keel.db", tmp_path))
    context = browser.new_context(accept_downloads=True)
    page = context.new_page()
    page.on("dialog", lambda d: pytest.fail(f"a dialog opened: {d.message}"))
    page.goto(gw.url + "/ui/keys")
    page.fill('input[name="token"]', gw.admin)
    page.click('button[type="submit"]')
    assert page.url == gw.url + "/ui/keys"
    assert page.locator("#keys tr[data-key]").count() == 1  # the fixture's key

    page.select_option('#create-key select[name="tenant"]', "t1")
    page.fill('#create-key input[name="name"]', "browser " + XSS)
    page.click('#create-key button[type="submit"]')
    key = page.inner_text("#new-key").strip()
    assert key.startswith("sk-keel-") and "shown only this once" in page.inner_text("main")
    chat(gw, key, "gpt-4o-mini", "chat")  # the new key serves calls
    page.click("text=Back to keys")
    assert key not in page.content() and page.locator("#keys tr[data-key]").count() == 2
    (row,) = [k for k in gw.runtime.store.list_keys("t1") if k.name and k.name.startswith("browser")]
    page.click(f'tr[data-key="{row.id}"] a.revoke')
    assert "cannot be undone" in page.inner_text("main")
    page.click("#confirm-revoke")
    assert f"Key {row.id} revoked." in page.inner_text("#notice")
    assert page.evaluate("window.__xss") is None
    with openai.OpenAI(base_url=gw.base_url, api_key=key, max_retries=0, timeout=10) as c:

        def refused() -> bool:
            try:
                c.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
            except openai.AuthenticationError:
                return True
            return False

        assert until(refused, timeout=10)

    page.click("text=Audit")
    assert page.get_attribute("#chain", "data-ok") == "true"
    page.fill('input[name="action"]', "keys.write")
    page.click('form.filters button[type="submit"]')
    rows = page.locator("#audit tr[data-seq]")
    assert rows.count() == 2
    assert "POST /ui/keys" in rows.nth(0).inner_text() and f"/ui/keys/{row.id}/revoke" in rows.nth(1).inner_text()
    assert all(rows.nth(i).locator("td").nth(3).inner_text() == "admin" for i in range(2))
    with page.expect_download() as download:
        page.click("#export")
    lines = Path(download.value.path()).read_text().splitlines()
    entries = [json.loads(x) for x in lines][:-1]  # the last line is the export's trailer
    assert [x["target"] for x in entries] == [row.id, row.id] and key not in "".join(lines)
    context.close()
