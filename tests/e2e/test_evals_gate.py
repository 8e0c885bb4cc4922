"""The regression gate as CI runs it: `keel eval run` (a real subprocess) against a running gateway.

A prompt change that breaks 5 of 100 items exits 100 and names those 5; the same prompt again, with
repeats, exits 0. JUnit and HTML reports are written. The suite's prompt v2 appends a var that only 5
tests set, so exactly those outputs change."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
import yaml

from keel.testing import FakeUpstream, Script
from tests.conftest import Gateway, base_config

BROKEN = {3, 17, 42, 64, 99}
pytestmark = pytest.mark.timeout(180)  # keel processes started per test: slow on a loaded machine
KEEL = [sys.executable, "-m", "keel.cli.main"]


def suite(prompt: str) -> dict[str, Any]:
    return {
        "description": "gate demo",
        "prompts": [prompt],
        "providers": ["openai:gpt-4o-mini"],
        "defaultTest": {
            "assert": [{"type": "contains", "value": "{{q}}"}, {"type": "not-icontains", "value": "broken"}]
        },
        "tests": [{"vars": {"q": f"question {i}", "suffix": " BROKEN" if i in BROKEN else ""}} for i in range(1, 101)],
    }


@pytest.fixture
def gw(make_gateway: Any, up: FakeUpstream, tmp_path: Path) -> Gateway:
    return make_gateway(base_config(up, f"sqlite:///{tmp_path}/keel.db", tmp_path))  # type: ignore[no-any-return]


def keel(gw: Gateway, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KEEL_API_KEY": gw.key, "KEEL_URL": gw.url}
    env.pop("KEEL_CONFIG", None)
    src = str(Path(__file__).parents[2] / "src")
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([*KEEL, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def test_a_prompt_change_breaking_five_items_exits_100_naming_them(gw: Gateway, tmp_path: Path) -> None:
    (tmp_path / "v1.yaml").write_text(yaml.safe_dump(suite("Answer: {{q}}")))
    (tmp_path / "v2.yaml").write_text(yaml.safe_dump(suite("Answer: {{q}}{{suffix}}")))
    first = keel(gw, tmp_path, "eval", "run", "v1.yaml", "--label", "main")
    assert first.returncode == 0, first.stderr + first.stdout
    assert "100/100 passed" in first.stdout

    second = keel(gw, tmp_path, "eval", "run", "v2.yaml", "--baseline", "main", "--junit", "j.xml", "--html", "r.html")
    assert second.returncode == 100, second.stderr + second.stdout
    failing = {line.split()[1] for line in second.stdout.splitlines() if line.strip().startswith("newly_failing")}
    assert failing == {f"t{i}" for i in BROKEN}, second.stdout
    assert "5 item(s) regressed" in second.stdout
    assert "Traceback" not in second.stderr

    junit = ET.parse(tmp_path / "j.xml").getroot()
    failed = {c.get("name") for c in junit.iter("testcase") if c.find("failure") is not None}
    assert failed == {f"t{i}" for i in BROKEN} and junit.get("tests") == "100"
    page = (tmp_path / "r.html").read_text()
    assert "<svg" in page and "newly_failing" in page and "echo: Answer: question 3 BROKEN" in page
    assert "<script" not in page and "http" not in page.split("<body>")[1].split("echo:")[0]


def test_an_unchanged_prompt_with_repeats_exits_0(gw: Gateway, tmp_path: Path) -> None:
    (tmp_path / "v1.yaml").write_text(yaml.safe_dump(suite("Answer: {{q}}")))
    base = keel(gw, tmp_path, "eval", "run", "v1.yaml", "--repeat", "3", "--label", "rep", "--concurrency", "8")
    assert base.returncode == 0, base.stderr + base.stdout
    again = keel(
        gw, tmp_path, "eval", "run", "v1.yaml", "--repeat", "3", "--baseline", "rep", "--min-pass-rate", "0.99"
    )
    assert again.returncode == 0, again.stderr + again.stdout
    assert "300/300 passed" in again.stdout and "gate: holds" in again.stdout


def test_errors_exit_1_with_a_message(gw: Gateway, tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump({**suite("x"), "tests": [{"assert": [{"type": "nope"}]}]}))
    bad = keel(gw, tmp_path, "eval", "run", "bad.yaml")
    assert bad.returncode == 1 and "nope" in bad.stderr and "tests[0].assert[0].type" in bad.stderr
    (tmp_path / "v1.yaml").write_text(yaml.safe_dump(suite("Answer: {{q}}")))
    missing = keel(gw, tmp_path, "eval", "run", "v1.yaml", "--baseline", "no-such-label")
    assert missing.returncode == 1 and "no baseline" in missing.stderr


def test_promptfoos_getting_started_example_runs_unchanged(make_gateway: Any, up: FakeUpstream, tmp_path: Path) -> None:
    raw = base_config(up, f"sqlite:///{tmp_path}/keel.db", tmp_path)
    for model in ("gpt-4.1", "o4-mini"):  # the aliases its provider ids name
        raw["models"][model] = {"targets": [{"provider": "oai", "model": model}]}
    gw = make_gateway(raw)
    # items run in order at concurrency 1: test 1 × (2 prompts × 2 providers), then test 2
    up.script(*[Script(text="Bonjour le monde !")] * 4, *[Script(text="¿DÓNDE ESTÁ LA BIBLIOTECA?")] * 4)
    example = Path(__file__).parents[1] / "data" / "evals" / "promptfoo-getting-started.yaml"
    done = keel(gw, example.parent, "eval", "run", example.name, "--concurrency", "1", "--json")
    assert done.returncode == 0, done.stderr + done.stdout
    result = json.loads(done.stdout)
    summary = result["run"]["summary"]
    assert (summary["results"], summary["passed"]) == (8, 8)
    assert result["run"]["suite"] == "Getting started"
    sent = [(r["json"]["model"], r["json"]["messages"][-1]["content"]) for r in up.requests]
    assert sent[0] == ("gpt-4.1", "Convert this English to French: Hello world")
    assert sent[1] == ("o4-mini", "Convert this English to French: Hello world")
    assert sent[2] == ("gpt-4.1", "Translate to French: Hello world")
    # without a baseline the rule is promptfoo's: every test passes, else exit 100 (the fake now echoes)
    echoed = keel(gw, example.parent, "eval", "run", example.name)
    assert echoed.returncode == 100 and "0/8 passed" in echoed.stdout, echoed.stdout + echoed.stderr


def test_file_references_are_read_beside_the_suite_and_a_run_can_be_followed(gw: Gateway, tmp_path: Path) -> None:
    (tmp_path / "prompt.txt").write_text("Translate: {{text}}")
    (tmp_path / "chat.json").write_text(
        json.dumps([{"role": "system", "content": "be brief"}, {"role": "user", "content": "Say {{text}}"}])
    )
    (tmp_path / "tests.csv").write_text(
        "text,__expected,__description\nhello,contains: hello,greeting\nbye,icontains: BYE,farewell\n"
    )
    (tmp_path / "long.txt").write_text("a long document")
    doc = {
        "prompts": ["file://prompt.txt", "file://chat.json"],
        "providers": ["gpt-4o-mini"],
        "tests": ["file://tests.csv", {"vars": {"text": "file://long.txt"}, "assert": [{"type": "contains", "value": "long document"}]}],
    }  # fmt: skip
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(doc))
    done = keel(gw, tmp_path, "eval", "run", "s.yaml", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    run = json.loads(done.stdout)["run"]
    assert run["summary"]["results"] == 6 and run["summary"]["passed"] == 6
    again = keel(gw, tmp_path, "eval", "run", "s.yaml", "--resume", run["id"], "--json")
    assert again.returncode == 0 and json.loads(again.stdout)["run"]["id"] == run["id"]
