"""The dashboard's eval pages: the runs list, and a run's items against its baseline with the newly
failing first and model outputs escaped."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from keel.testing import FakeUpstream
from tests.conftest import Gateway, base_config
from tests.e2e.evals_helpers import run_suite


@pytest.fixture
def gw(make_gateway: Any, up: FakeUpstream, tmp_path: Path) -> Gateway:
    return make_gateway(base_config(up, f"sqlite:///{tmp_path}/keel.db", tmp_path))  # type: ignore[no-any-return]


def suite(prompt: str) -> dict[str, Any]:
    tests = [{"vars": {"q": f"q{i}", "tail": " <b>bad</b>" if i == 2 else ""}} for i in range(1, 4)]
    return {
        "description": "ui demo",
        "prompts": [prompt],
        "providers": ["gpt-4o-mini"],
        "defaultTest": {"assert": [{"type": "not-contains", "value": "bad"}]},
        "tests": tests,
    }


def test_runs_and_a_run_against_its_baseline(gw: Gateway) -> None:
    first = run_suite(gw, suite("{{q}}"), label="main")
    second = run_suite(gw, suite("{{q}}{{tail}}"))
    with httpx.Client(base_url=gw.url) as c:
        assert c.post("/ui/login", data={"token": gw.admin, "next": "/ui"}).status_code == 303
        runs = c.get("/ui/evals")
        assert runs.status_code == 200 and first["id"] in runs.text and second["id"] in runs.text
        assert 'href="/ui/evals"' in runs.text
        page = c.get(f"/ui/evals/{second['id']}")
        assert page.status_code == 200, page.text
        body = page.text
        assert f"baseline {first['id']}" in body and "regressed" in body
        rows = body.split('data-item="')[1:]
        assert rows[0].startswith("t2") and "newly_failing" in rows[0]
        assert "&lt;b&gt;bad&lt;/b&gt;" in body and "<b>bad</b>" not in body
        assert c.get("/ui/evals/evr_nope").status_code == 404
        assert c.get(f"/ui/evals/{second['id']}?baseline=nolabel").status_code == 404
