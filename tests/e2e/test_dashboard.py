"""The dashboard over plain HTTP (no browser): the session cookie, redirects, escaping, headers.

A real gateway on SQLite with the fake upstream; calls go through the openai SDK. The browser test
(test_dashboard_browser.py) drives the same pages in chromium and checks their figures.
"""

from __future__ import annotations

import base64
import contextlib
import json
import re
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from keel.dashboard.session import COOKIE, Sessions
from keel.testing import FakeUpstream, Script
from keel.traces.spans import child_span
from tests.conftest import Gateway, base_config, until

XSS = '<script>window.__xss = 1</script><img src=x onerror="window.__xss = 2">'


@pytest.fixture
def gw(make_gateway: Any, up: FakeUpstream, tmp_path: Path) -> Gateway:
    return make_gateway(base_config(up, f"sqlite:///{tmp_path}/keel.db", tmp_path))  # type: ignore[no-any-return]


class _Scan(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("script", "img", "iframe", "object", "embed"):
            self.found.append(tag)
        self.found += [f"{tag}[{name}]" for name, _ in attrs if name.startswith("on") or name == "srcdoc"]


def markup_of(page: str) -> list[str]:
    """Tags and attributes in a page that could run script: the dashboard itself emits none."""
    scan = _Scan()
    scan.feed(page)
    return scan.found


@contextlib.contextmanager
def login(gw: Gateway) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gw.url, timeout=10) as c:
        r = c.post("/ui/login", data={"token": gw.admin, "next": "/ui"})
        assert r.status_code == 303, r.text
        yield c


def test_every_page_redirects_to_the_login_form_without_a_valid_session(gw: Gateway) -> None:
    for path in ("/ui", "/ui?window=7d", "/ui/traces?tenant=t1", "/ui/traces/abc"):
        r = httpx.get(gw.url + path)
        assert r.status_code == 303 and r.headers["location"].startswith("/ui/login?next=%2Fui"), path
    forged = f"{int(4e9)}.nonce.{'0' * 64}"
    r = httpx.get(gw.url + "/ui", cookies={COOKIE: forged})
    assert r.status_code == 303
    form = httpx.get(gw.url + "/ui/login")
    assert form.status_code == 200 and 'type="password" name="token"' in form.text


def test_login_sets_a_strict_httponly_cookie_and_never_echoes_the_token(gw: Gateway) -> None:
    r = httpx.post(gw.url + "/ui/login", data={"token": "wrong", "next": "/ui/traces"})
    assert r.status_code == 401 and "set-cookie" not in r.headers and "not the admin token" in r.text
    r = httpx.post(gw.url + "/ui/login", data={"token": gw.admin, "next": "/ui/traces?tenant=t1"})
    assert r.status_code == 303 and r.headers["location"] == "/ui/traces?tenant=t1"
    cookie = r.headers["set-cookie"]
    assert "httponly" in cookie.lower() and "samesite=strict" in cookie.lower() and "Path=/ui" in cookie
    assert gw.admin not in cookie and gw.admin not in r.headers["location"]
    value = r.cookies[COOKIE]
    page = httpx.get(gw.url + "/ui/traces", cookies={COOKIE: value})
    assert page.status_code == 200 and gw.admin not in page.text
    payload, _, signature = value.rpartition(".")
    data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    data["expires"] += 3600  # or any other field: the signature covers them all
    forged = base64.urlsafe_b64encode(json.dumps(data, separators=(",", ":")).encode()).decode().rstrip("=")
    tampered = f"{forged}.{signature}"
    assert httpx.get(gw.url + "/ui", cookies={COOKIE: tampered}).status_code == 303


def test_login_never_redirects_off_the_dashboard(gw: Gateway) -> None:
    for target in ("https://evil.example/", "//evil.example/ui", "/api/keys", "/ui\\@evil"):
        r = httpx.post(gw.url + "/ui/login", data={"token": gw.admin, "next": target})
        assert r.status_code == 303 and r.headers["location"] == "/ui", target


def test_logout_clears_the_cookie(gw: Gateway) -> None:
    with login(gw) as c:
        assert c.get("/ui").status_code == 200
        r = c.post("/ui/logout")
        assert r.status_code == 303 and r.headers["location"] == "/ui/login"
        assert re.search(rf"{COOKIE}=\"?\"?;", r.headers["set-cookie"]) and "Max-Age=0" in r.headers["set-cookie"]
        assert c.get("/ui").status_code == 303


def test_sessions_expire_and_belong_to_one_admin_token() -> None:
    s = Sessions("token-a", ttl_s=60)
    cookie = s.issue(now=1000)
    assert s.valid(cookie, now=1059) and not s.valid(cookie, now=1061)
    assert not Sessions("token-b").valid(cookie, now=1000)
    assert not Sessions(None).valid(cookie, now=1000) and not Sessions(None).check_token("")
    assert not s.valid("garbage", now=1000) and not s.valid("", now=1000)


def test_without_an_admin_token_the_dashboard_is_off(make_gateway: Any, up: FakeUpstream, tmp_path: Path) -> None:
    raw = base_config(up, f"sqlite:///{tmp_path}/keel.db", tmp_path)
    raw.pop("admin_token")
    gw = make_gateway(raw)
    assert httpx.get(gw.url + "/ui").status_code == 403
    r = httpx.post(gw.url + "/ui/login", data={"token": ""})
    assert r.status_code == 403 and "set-cookie" not in r.headers


def test_untrusted_trace_content_is_escaped_everywhere(gw: Gateway, up: FakeUpstream) -> None:
    up.script(Script(text=XSS))
    headers = {"x-keel-feature": "<b>feat</b>", "x-keel-user": '"><script>u()</script>'}
    with openai.OpenAI(base_url=gw.base_url, api_key=gw.key, max_retries=0, timeout=10) as client:
        client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": XSS}], extra_headers=headers
        )
    (trace,) = gw.traces()
    with login(gw) as c:
        pages = [c.get("/ui?window=1h"), c.get("/ui/traces?since=1h"), c.get(f"/ui/traces/{trace.id}")]
        for page in pages:
            assert page.status_code == 200
            assert markup_of(page.text) == [], page.url  # as parsed: no script tag, no event handler
            csp = page.headers["content-security-policy"]
            assert "default-src 'none'" in csp and "script-src" not in csp and "unsafe-inline" not in csp
        assert "&lt;b&gt;feat&lt;/b&gt;" in pages[0].text and "&lt;b&gt;feat&lt;/b&gt;" in pages[1].text
        detail = pages[2].text
        assert detail.count("&lt;script&gt;window.__xss = 1&lt;/script&gt;") >= 2  # the message and the answer
        assert "&quot;&gt;&lt;script&gt;u()&lt;/script&gt;" in detail


def test_bad_parameters_get_a_clear_400(gw: Gateway) -> None:
    with login(gw) as c:
        r = c.get("/ui?window=1y")
        assert r.status_code == 400 and "must be one of: 1h, 24h, 7d, 30d" in r.text
        r = c.get("/ui/traces?since=99d")
        assert r.status_code == 400 and "&#x27;since&#x27; must be one of" in r.text
        r = c.get("/ui/traces?status=<x>")
        assert r.status_code == 400 and 'value="&lt;x&gt;"' not in r.text  # status is a select
        assert c.get("/ui/traces/nope").status_code == 404


def test_a_payload_kept_in_the_blob_store_is_shown_whole(make_gateway: Any, up: FakeUpstream, tmp_path: Path) -> None:
    raw = base_config(up, f"sqlite:///{tmp_path}/keel.db", tmp_path)
    raw["traces"] |= {"blob_threshold_bytes": 200, "blobs_url": f"file://{tmp_path}/blobs"}
    gw = make_gateway(raw)
    long = "a long question " + "x" * 400
    with openai.OpenAI(base_url=gw.base_url, api_key=gw.key, max_retries=0, timeout=10) as client:
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": long}])
    (trace,) = gw.traces()
    assert trace.payload_blob is not None and trace.request is None  # the row keeps only the blob's key
    with login(gw) as c:
        page = c.get(f"/ui/traces/{trace.id}")
    assert page.status_code == 200 and long in page.text and "echo: a long question" in page.text


def test_the_trace_page_shows_the_span_tree_escaped(gw: Gateway) -> None:
    with openai.OpenAI(base_url=gw.base_url, api_key=gw.key, max_retries=0, timeout=10) as client:
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    (trace,) = gw.traces()
    at = trace.started_at
    gw.runtime.put_span(child_span(trace, "retrieval", XSS, at, at + 0.012, span_id="r", cost_usd=0.5))
    gw.runtime.put_span(child_span(trace, "tool", "lookup", at, at + 0.003, span_id="t", parent_id="r", status="error"))
    assert until(lambda: len(gw.runtime.store.trace_spans(trace.id)) == 2)
    with login(gw) as c:
        page = c.get(f"/ui/traces/{trace.id}")
    assert page.status_code == 200 and markup_of(page.text) == []
    rows = re.findall(r'<tr data-span="([^"]*)" data-depth="(\d)"><td>(.*?)</td><td>(\w+)</td>', page.text)
    assert [(s, d, kind) for s, d, _, kind in rows] == [(trace.id, "0", "call"), ("r", "1", "retrieval"), ("t", "2", "tool")]  # fmt: skip
    assert "&lt;script&gt;window.__xss = 1&lt;/script&gt;" in rows[1][2] and "12.0 ms" in page.text
    assert 'class="status-error">error' in page.text and "$0.500000" in page.text
