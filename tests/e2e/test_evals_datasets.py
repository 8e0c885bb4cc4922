"""Datasets: `keel datasets` imports JSONL and CSV as versions, exports them back, and samples items
from live traces keeping the link to each trace; a suite whose tests are `dataset:NAME` runs those items
through the gateway, with their own chats and expected outputs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import openai
import pytest

from keel.testing import FakeUpstream
from tests.conftest import Gateway, base_config, until
from tests.e2e.evals_helpers import run_suite

KEEL = [sys.executable, "-m", "keel.cli.main"]


@pytest.fixture
def gw(make_gateway: Any, up: FakeUpstream, tmp_path: Path) -> Gateway:
    return make_gateway(base_config(up, f"sqlite:///{tmp_path}/keel.db", tmp_path))  # type: ignore[no-any-return]


def keel(cwd: Path, *args: str, code: int = 0) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "KEEL_CONFIG"}
    env["PYTHONPATH"] = str(Path(__file__).parents[2] / "src") + os.pathsep + env.get("PYTHONPATH", "")
    done = subprocess.run([*KEEL, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == code, done.stdout + done.stderr
    return done


def test_import_export_and_versions(gw: Gateway, tmp_path: Path) -> None:
    rows = [
        {
            "input": {"vars": {"q": "capital of France?"}},
            "expected": "Paris",
            "context": ["France's capital is Paris."],
        },
        {"vars": {"q": "2+2?"}, "expected": "4", "metadata": {"description": "math"}},
    ]
    (tmp_path / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "b.csv").write_text(
        'q,expected,__expected,__description\n"capital of Italy?",Rome,icontains: rome,geo\n'
    )
    out = keel(tmp_path, "datasets", "import", "geo", "a.jsonl", "--tenant", "t1", "--json")
    assert json.loads(out.stdout) == {"name": "geo", "version": 1, "items": 2, "tenant": "t1"}
    keel(tmp_path, "datasets", "add", "geo", "b.csv", "--tenant", "t1", "--note", "italy")
    exported = keel(tmp_path, "datasets", "export", "geo", "--tenant", "t1").stdout.splitlines()
    items = [json.loads(x) for x in exported]
    assert [i["input"]["vars"]["q"] for i in items] == ["capital of France?", "2+2?", "capital of Italy?"]
    assert items[0]["context"] == ["France's capital is Paris."] and items[2]["expected"] == "Rome"
    assert items[2]["metadata"] == {"description": "geo", "assert": [{"type": "icontains", "value": "rome"}]}
    v1 = keel(tmp_path, "datasets", "export", "geo@1", "--tenant", "t1", "--format", "csv").stdout
    assert v1.splitlines()[0] == "q,expected,context,__description,__trace_id" and "Italy" not in v1
    listed = json.loads(keel(tmp_path, "datasets", "list", "--json").stdout)
    assert [(d["version"], d["items"], d["note"]) for d in listed] == [(1, 2, None), (2, 3, "italy")]
    (tmp_path / "bad.jsonl").write_text('{"vars": {"q": 1}, "expectd": "typo"}\n')
    bad = keel(tmp_path, "datasets", "import", "x", "bad.jsonl", "--tenant", "t1", code=1)
    assert "bad.jsonl:1" in bad.stderr and "expectd" in bad.stderr and "Traceback" not in bad.stderr


def test_items_from_traces_keep_their_trace_and_run_as_a_suite(gw: Gateway, tmp_path: Path) -> None:
    client = openai.OpenAI(base_url=gw.base_url, api_key=gw.key, max_retries=0)
    for i in range(8):
        feature = "support" if i < 6 else "other"
        client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": f"ticket {i}"}],
            extra_headers={"x-keel-feature": feature},
        )  # fmt: skip
    assert until(lambda: len(gw.traces()) == 8)
    out = keel(
        tmp_path, "datasets", "add", "tickets", "--from-traces", "--feature", "support", "--since", "1h",
        "--sample", "4", "--seed", "7", "--where", "status=ok", "--tenant", "t1", "--json",
    )  # fmt: skip
    assert json.loads(out.stdout)["items"] == 4
    items = [
        json.loads(x) for x in keel(tmp_path, "datasets", "export", "tickets", "--tenant", "t1").stdout.splitlines()
    ]
    traces = {t.id: t for t in gw.traces()}
    for it in items:
        trace = traces[it["trace_id"]]  # the link back to the call it came from
        assert trace.feature == "support"
        assert it["input"]["messages"] == trace.request["messages"]
        assert it["expected"] == "echo: " + it["input"]["messages"][-1]["content"]

    suite = {"providers": ["gpt-4o-mini"], "tests": "dataset:tickets",
             "defaultTest": {"assert": [{"type": "equals"}, {"type": "levenshtein", "threshold": 0}]}}  # fmt: skip
    run = run_suite(gw, suite)
    assert run["status"] == "finished" and run["dataset"] == {"name": "tickets", "version": 1}
    assert [r["passed"] for r in run["results"]] == [True] * 4  # the same answer as the trace's: expected
