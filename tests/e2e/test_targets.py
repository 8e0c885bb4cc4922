"""`keel targets` and GET /api/targets: breaker state and health as the running gateway sees them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import openai
import pytest

from keel.testing import FakeUpstream, Script
from tests.conftest import Gateway


def targets_cli(gw: Gateway, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "keel.cli.main", "-c", str(tmp_path / "keel.yaml"), "targets", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=30)


def test_targets_show_an_open_breaker_and_health(gateway: Gateway, up: FakeUpstream, tmp_path: Path) -> None:
    with openai.OpenAI(base_url=gateway.base_url, api_key=gateway.key, max_retries=0) as c:
        c.chat.completions.create(model="sim", messages=[{"role": "user", "content": "x"}])
        up.script(*[Script(status=503) for _ in range(6)])
        for _ in range(3):  # 503, retried once: two failures a call; five consecutive open the breaker
            with pytest.raises(openai.APIStatusError):
                c.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}])
    done = targets_cli(gateway, tmp_path, "--url", gateway.url, "--json")
    assert done.returncode == 0, done.stderr
    rows = {r["target"]: r for r in json.loads(done.stdout)}
    assert rows["oai/gpt-4o-mini"]["breaker"] == "open"
    assert rows["oai/gpt-4o-mini"]["region"] == "us"
    assert rows["sim/simulated-1"]["breaker"] == "closed" and rows["sim/simulated-1"]["calls"] == 1
    assert rows["sim/simulated-1"]["latency_ms"] is not None
    human = targets_cli(gateway, tmp_path, "--url", gateway.url)
    assert "oai/gpt-4o-mini" in human.stdout and "open" in human.stdout


def test_targets_needs_the_admin_token(gateway: Gateway) -> None:
    assert httpx.get(gateway.url + "/api/targets").status_code == 401


def test_targets_cli_says_what_to_fix_when_no_gateway_runs(gateway: Gateway, tmp_path: Path) -> None:
    done = targets_cli(gateway, tmp_path, "--url", "http://127.0.0.1:9")
    assert done.returncode == 1 and "keel serve" in done.stderr
