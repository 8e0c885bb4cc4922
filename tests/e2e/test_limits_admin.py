"""The limits admin API (/api/limits) and `keel limits usage`, on a real gateway over HTTP, SQLite and PostgreSQL."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from keel.testing import FakeUpstream
from tests.conftest import ADMIN, Gateway, base_config


def api(gw: Gateway, method: str, path: str, body: Any = None, **params: str) -> httpx.Response:
    headers = {"authorization": f"Bearer {ADMIN}"}
    return httpx.request(method, gw.url + path, json=body, params=params, headers=headers, timeout=10)


def key_id(gw: Gateway) -> str:
    [row] = api(gw, "GET", "/api/keys", tenant="t1").json()["data"]
    return str(row["id"])


def limits_cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "keel.cli.main", "-c", str(tmp_path / "keel.yaml"), "limits", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=30)


def test_put_list_replace_and_delete_overrides(gateway: Gateway) -> None:
    kid = key_id(gateway)
    put = api(
        gateway, "PUT", "/api/limits/tenant/t1", {"limits": {"rpm": 60, "usd_month": 12.5}, "on_store_error": "closed"}
    )
    assert put.status_code == 200, put.text
    tenant = put.json()
    assert (tenant["scope"], tenant["subject"], tenant["limits"], tenant["on_store_error"]) == (
        "tenant",
        "t1",
        {"rpm": 60.0, "usd_month": 12.5},
        "closed",
    )
    key = api(gateway, "PUT", f"/api/limits/key/{kid}", {"limits": {"concurrency": 3}}).json()
    assert api(gateway, "GET", "/api/limits").json() == {"data": [key, tenant]}
    assert [o.subject for o in gateway.runtime.store.list_limits()] == [kid, "t1"]

    replaced = api(gateway, "PUT", "/api/limits/tenant/t1", {"on_store_error": "open"}).json()
    assert (replaced["limits"], replaced["on_store_error"]) == ({}, "open")  # PUT replaces the whole override
    deleted = api(gateway, "DELETE", f"/api/limits/key/{kid}")
    assert deleted.status_code == 200 and deleted.json() == {"scope": "key", "subject": kid, "cleared": True}
    assert api(gateway, "GET", "/api/limits").json() == {"data": [replaced]}
    assert httpx.get(gateway.url + "/api/limits").status_code == 401


def test_refusals_name_what_to_fix(gateway: Gateway) -> None:
    kid = key_id(gateway)
    cases: list[tuple[str, str, Any, dict[str, str], int, str | None, str]] = [
        ("PUT", "/api/limits/user/ann", {"limits": {"rpm": 5}}, {}, 404, None, "No limit scope 'user'"),
        ("PUT", "/api/limits/tenant/nobody", {"limits": {"rpm": 5}}, {}, 404, None, "No tenant 'nobody'."),
        ("PUT", "/api/limits/key/key_nope", {"limits": {"rpm": 5}}, {}, 404, None, "No key with id 'key_nope'."),
        ("PUT", "/api/limits/tenant/t1", {"limits": {"rpmm": 5}}, {}, 400, "limits.rpmm", "Unknown limit kind 'rpmm'"),
        ("PUT", "/api/limits/tenant/t1", {"limits": {"rpm": 0}}, {}, 400, "limits", "limit 'rpm': input should be"),
        ("PUT", "/api/limits/tenant/t1", {"limits": {"usd_day": "1"}}, {}, 400, "limits", "'usd_day' must be a number"),
        ("PUT", "/api/limits/tenant/t1", {"limits": [5]}, {}, 400, "limits", "'limits' must be an object"),
        ("PUT", "/api/limits/tenant/t1", {}, {}, 400, "limits", "nothing to set"),
        ("PUT", "/api/limits/tenant/t1", {"limit": {"rpm": 5}}, {}, 400, "limit", "Unknown field 'limit'"),
        (
            "PUT",
            "/api/limits/tenant/t1",
            {"on_store_error": "maybe"},
            {},
            400,
            "on_store_error",
            "open, closed or null",
        ),
        ("PUT", f"/api/limits/key/{kid}", {"on_store_error": "open"}, {}, 400, "on_store_error", "per tenant"),
        ("DELETE", "/api/limits/tenant/t1", None, {}, 404, None, "No limits are set for tenant 't1'."),
        ("GET", "/api/limits/usage", None, {}, 400, "tenant", "'tenant' is required."),
        ("GET", "/api/limits/usage", None, {"tenant": "nobody"}, 404, None, "No tenant 'nobody'."),
        ("GET", "/api/limits/usage", None, {"tenant": "t1", "key": "key_nope"}, 404, None, "No key with id 'key_nope'"),
        ("GET", "/api/limits/usage", None, {"tenant": "t1", "alias": "nope"}, 400, "alias", "Unknown alias 'nope'"),
        ("GET", "/api/limits/usage", None, {"tenant": "t1", "squad": "x"}, 400, "squad", "Unknown parameter 'squad'"),
    ]
    for method, path, body, params, status, param, message in cases:
        got = api(gateway, method, path, body, **params)
        assert got.status_code == status, (method, path, body, params, got.text)
        error = got.json()["error"]
        assert error["param"] == param and message in error["message"], (method, path, body, params, error)
    assert api(gateway, "GET", "/api/limits").json() == {"data": []}  # nothing refused was written


def _usage(gw: Gateway, **params: str) -> dict[str, dict[str, Any]]:
    got = api(gw, "GET", "/api/limits/usage", **params)
    assert got.status_code == 200, got.text
    return {row["counter"]: row for row in got.json()["data"]}


def _until(check: Any, timeout: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (result := check()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return result


@pytest.fixture
def limited(make_gateway: Any, up: FakeUpstream, storage_url: str, tmp_path: Path) -> Gateway:
    raw = base_config(up, storage_url, tmp_path)
    raw["limits"] = {
        "defaults": [
            {"scope": ["tenant"], "rpm": 1000, "tokens_day": 1_000_000},
            {"scope": ["tenant", "feature"], "rpm": 50},
            {"scope": ["user"], "rpm": 7},
        ]
    }
    return make_gateway(raw)  # type: ignore[no-any-return]


def test_usage_shows_each_applicable_counter_after_calls(limited: Gateway, tmp_path: Path) -> None:
    kid = key_id(limited)
    assert api(limited, "PUT", f"/api/limits/key/{kid}", {"limits": {"rpm": 100, "concurrency": 5}}).status_code == 200
    prefix = f"key={kid}|"
    assert _until(lambda: prefix + "rpm" in _usage(limited, tenant="t1", key=kid)), (
        "the override never reached the book"
    )

    with openai.OpenAI(base_url=limited.base_url, api_key=limited.key, max_retries=0) as client:
        for i in range(3):
            headers = {"x-keel-feature": "search"} if i else {}
            client.chat.completions.create(
                model="sim", messages=[{"role": "user", "content": "hi"}], extra_headers=headers
            )

    def settled() -> dict[str, dict[str, Any]] | None:
        rows = _usage(limited, tenant="t1", key=kid, feature="search", alias="sim")
        return rows if rows[prefix + "concurrency"]["used"] == 0 and rows["tenant=t1|tokens_day"]["used"] > 0 else None

    rows = _until(settled)
    assert rows, _usage(limited, tenant="t1", key=kid, feature="search")
    assert set(rows) == {
        "tenant=t1|rpm",
        "tenant=t1|tokens_day",
        "tenant=t1|feature=search|rpm",
        prefix + "rpm",
        prefix + "concurrency",
    }  # no user given: the per-user rule does not apply
    assert {c: (r["kind"], r["window"], r["limit"], r["used"]) for c, r in rows.items() if r["kind"] == "rpm"} == {
        "tenant=t1|rpm": ("rpm", "minute", 1000, 3),
        "tenant=t1|feature=search|rpm": ("rpm", "minute", 50, 2),
        prefix + "rpm": ("rpm", "minute", 100, 3),
    }
    assert rows[prefix + "rpm"]["share"] == pytest.approx(0.03)
    assert set(_usage(limited, tenant="t1")) == {"tenant=t1|rpm", "tenant=t1|tokens_day"}

    done = limits_cli(tmp_path, "usage", "--url", limited.url, "--tenant", "t1", "--key", kid, "--json")
    assert done.returncode == 0, done.stderr
    assert {r["counter"]: r["used"] for r in json.loads(done.stdout)}[prefix + "rpm"] == 3
    human = limits_cli(tmp_path, "usage", "--url", limited.url, "--tenant", "t1", "--feature", "search")
    assert human.returncode == 0, human.stderr
    header, *lines = human.stdout.splitlines()
    assert header.split() == ["COUNTER", "KIND", "LIMIT", "USED", "SHARE"]
    assert [line.split() for line in lines] == [
        ["tenant=t1|rpm", "rpm", "1,000", "3", "0%"],
        ["tenant=t1|tokens_day", "tokens_day", "1,000,000", f"{rows['tenant=t1|tokens_day']['used']:.0f}", "0%"],
        ["tenant=t1|feature=search|rpm", "rpm", "50", "2", "4%"],
    ]


def test_usage_cli_says_what_went_wrong(gateway: Gateway, tmp_path: Path) -> None:
    unknown = limits_cli(tmp_path, "usage", "--url", gateway.url, "--tenant", "nobody")
    assert unknown.returncode == 1 and "answered HTTP 404: No tenant 'nobody'." in unknown.stderr
    down = limits_cli(tmp_path, "usage", "--url", "http://127.0.0.1:9", "--tenant", "t1")
    assert down.returncode == 1 and "keel serve" in down.stderr
