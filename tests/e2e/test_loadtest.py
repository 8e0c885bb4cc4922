"""`keel loadtest` as a real process: it stages the configured Keel with simulated providers, offers a
profile's traffic at 1x, 2x, 5x and 10x over loopback HTTP, and names what broke first.

The scenario is built to have one bottleneck: an alias whose only target allows one call at a time
(`max_concurrency: 1`, a queue of one) behind a 100 ms provider. At 1x the calls are far apart; by 10x
they arrive ten times a second, one per service time, and the target refuses some. The control runs
the same traffic without the cap: nothing may be blamed. `record` is checked on traces written to a
real SQLite store.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

import keel
from keel.store.open import open_store
from keel.types import TraceRecord

ENV = {**os.environ, "PYTHONPATH": str(Path(keel.__file__).parents[1])}
ENV.pop("KEEL_CONFIG", None)

PROFILE = {
    "rate_rps": 1.0,
    "duration_s": 2.5,
    "multiples": [1, 2, 5, 10],
    "mix": [{"alias": "support", "weight": 1, "stream": 0.5, "prompt_tokens": [40, 120], "max_tokens": 16}],
    "providers": {"upstream": {"ttft_ms": 100}},
}


def keel_cli(*args: str, cwd: Path, code: int = 0) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(
        [sys.executable, "-m", "keel.cli.main", *args], capture_output=True, text=True, env=ENV, cwd=cwd, timeout=240
    )
    assert out.returncode == code, out.stderr
    assert "Traceback" not in out.stderr
    return out


def write_config(tmp_path: Path, target: dict[str, object]) -> Path:
    cfg = {
        "providers": {"upstream": {"type": "openai", "api_key": "sk-not-used"}},
        "models": {"support": {"targets": [{"provider": "upstream", "model": "gpt-4o-mini", **target}]}},
        "alerts": {"webhook": {"url": "https://hooks.example.com/keel", "secret": "s"}},
    }
    path = tmp_path / "keel.yaml"
    path.write_text(yaml.safe_dump(cfg))
    (tmp_path / "profile.yaml").write_text(yaml.safe_dump(PROFILE))
    return path


def test_names_a_saturated_target_as_the_first_bottleneck_and_writes_the_report(tmp_path: Path) -> None:
    write_config(tmp_path, {"max_concurrency": 1, "queue_limit": 1})
    out = keel_cli(
        "-c", "keel.yaml", "loadtest", "run", "profile.yaml", "--html", "report.html", "--json", cwd=tmp_path
    )
    report = json.loads(out.stdout)
    phases = {p["multiple"]: p for p in report["phases"]}
    assert sorted(phases) == [1, 2, 5, 10]
    assert phases[1]["rejected"] == 0 and phases[1]["errors"] == 0
    assert phases[10]["refused_by_target"], phases[10]  # the cap refused calls at 10x
    first = report["first_bottleneck"]
    assert first is not None and first["multiple"] > 1
    assert first["what"] == "target_saturated"
    assert "upstream/gpt-4o-mini" in first["detail"]
    # nothing else is blamed at that multiple: not CPU, not the trace writer, not the upstream
    blamed = {b["what"] for b in report["breaches"][f"{first['multiple']:g}"]}
    assert blamed <= {"target_saturated", "latency"}, blamed
    # the Keel under test was the configured one with simulated providers, nothing sent off the machine
    assert any("left out alerts" in n for n in report["notes"])
    assert any("provider upstream: simulated (100 ms to first token)" in n for n in report["notes"])
    page = (tmp_path / "report.html").read_text()
    assert "First bottleneck at" in page and page.count("<svg") == 4 and "<script" not in page


def test_without_the_cap_nothing_is_blamed(tmp_path: Path) -> None:
    write_config(tmp_path, {})
    out = keel_cli("-c", "keel.yaml", "loadtest", "run", "profile.yaml", "--multiples", "1,10", cwd=tmp_path)
    assert "Nothing broke up to 10x." in out.stdout
    # the 10x row; "10*" when the load generator fell behind on a loaded machine (the report says so)
    assert any(line.split()[:2] in (["10", "10.0"], ["10*", "10.0"]) for line in out.stdout.splitlines()), out.stdout


def test_refuses_traffic_to_a_non_loopback_address(tmp_path: Path) -> None:
    (tmp_path / "profile.yaml").write_text(yaml.safe_dump(PROFILE))
    out = keel_cli(
        "loadtest", "run", "profile.yaml", "--url", "http://10.1.2.3:8080", "--key", "sk-keel-x", cwd=tmp_path, code=1
    )
    assert "loopback addresses only" in out.stderr


def test_a_bad_profile_names_the_key_and_starts_nothing(tmp_path: Path) -> None:
    write_config(tmp_path, {})
    (tmp_path / "profile.yaml").write_text(yaml.safe_dump({**PROFILE, "rate": 3, "multiples": [5, 1]}))
    out = keel_cli("-c", "keel.yaml", "loadtest", "run", "profile.yaml", cwd=tmp_path, code=2)
    assert "rate" in out.stderr
    assert "started the Keel under test" not in out.stderr


def test_record_derives_rate_mix_and_providers_from_the_traces(tmp_path: Path) -> None:
    db = tmp_path / "keel.db"
    (tmp_path / "keel.yaml").write_text(yaml.safe_dump({"storage": {"url": f"sqlite:///{db}"}}))
    now = time.time()
    records = []
    for i in range(120):  # two minutes at one call a second: 3/4 support (half streamed), 1/4 search
        support = i % 4 != 3
        failed = i % 40 == 5  # 3 of 120 calls, all on the first provider
        records.append(
            TraceRecord(
                id=f"t{i}",
                started_at=now - 130 + i,
                alias="support" if support else "search",
                feature="help" if support else None,
                provider="openai" if support else "anthropic",
                model="m",
                stream=support and i % 2 == 0,
                input_tokens=100 + (i % 10) * 10,
                output_tokens=50,
                latency_ms=900.0,
                ttft_ms=400.0,
                status="error" if failed else "ok",
                error_kind="rate_limited" if failed else None,
                http_status=429 if failed else 200,
            )
        )
    store = open_store(f"sqlite:///{db}")
    try:
        store.append_traces(records)
    finally:
        store.close()
    out = keel_cli("-c", "keel.yaml", "loadtest", "record", "--since", "10m", cwd=tmp_path)
    profile = yaml.safe_load(out.stdout)
    assert 0.95 <= profile["rate_rps"] <= 1.05
    mix = {m["alias"]: m for m in profile["mix"]}
    assert mix["support"]["weight"] == 90 and mix["search"]["weight"] == 30
    assert mix["support"]["feature"] == "help"
    assert 0.3 <= mix["support"]["stream"] <= 0.7 and mix["search"]["stream"] == 0
    assert min(mix["support"]["prompt_tokens"]) >= 100 and max(mix["support"]["prompt_tokens"]) <= 190
    openai = profile["providers"]["openai"]
    assert openai["ttft_ms"] == 400.0
    assert openai["tokens_per_second"] == 100.0  # 50 tokens in the 500 ms after the first
    assert openai["error"] == "rate_limited" and 0.03 <= openai["error_rate"] <= 0.04
    assert openai["rpm"] is not None
    assert profile["providers"]["anthropic"]["error_rate"] == 0
    # the recorded profile is one `keel loadtest run` accepts
    (tmp_path / "recorded.yaml").write_text(out.stdout)
    from keel.loadtest.profile import parse

    assert parse(yaml.safe_load(out.stdout), "recorded.yaml").rate_rps == profile["rate_rps"]
