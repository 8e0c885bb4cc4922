"""Driving eval runs over the gateway's HTTP API in tests: create, wait until finished, read results."""

from __future__ import annotations

from typing import Any

import httpx

from tests.conftest import Gateway, until


def start_run(gw: Gateway, suite: dict[str, Any], **options: Any) -> dict[str, Any]:
    r = httpx.post(
        gw.url + "/api/evals/runs", json={"suite": suite, **options}, headers={"authorization": f"Bearer {gw.key}"}
    )
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


def get_run(gw: Gateway, run_id: str, results: bool = False) -> dict[str, Any]:
    r = httpx.get(
        gw.url + f"/api/evals/runs/{run_id}" + ("?results=1" if results else ""),
        headers={"authorization": f"Bearer {gw.key}"},
    )
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def finish(gw: Gateway, run_id: str, timeout: float = 60) -> dict[str, Any]:
    assert until(lambda: get_run(gw, run_id)["status"] in ("finished", "failed", "cancelled"), timeout), get_run(
        gw, run_id
    )
    return get_run(gw, run_id, results=True)


def run_suite(gw: Gateway, suite: dict[str, Any], **options: Any) -> dict[str, Any]:
    return finish(gw, start_run(gw, suite, **options)["id"])
