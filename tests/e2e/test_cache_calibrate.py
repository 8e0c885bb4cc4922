"""`keel cache calibrate` as a real process with the real local model, on tests/data/semantic_pairs.tsv.

The file is synthetic (tests/data/make_semantic_pairs.py): support-bot paraphrases and the near misses
a semantic cache must refuse. The threshold chosen on its odd rows must keep false hits within the
budget on the even rows, which it never saw.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import keel
from keel.cache import calibrate

PAIRS = Path(__file__).parents[1] / "data" / "semantic_pairs.tsv"
ENV = {**os.environ, "PYTHONPATH": str(Path(keel.__file__).parents[1])}
ENV.pop("KEEL_CONFIG", None)


def keel_cli(*args: str, code: int = 0) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(
        [sys.executable, "-m", "keel.cli.main", *args], capture_output=True, text=True, env=ENV, timeout=300
    )
    assert out.returncode == code, out.stderr
    assert "Traceback" not in out.stderr
    return out


@pytest.mark.parametrize("embedder", ["local", "local-int8"])
def test_the_chosen_threshold_holds_on_the_held_back_half(embedder: str) -> None:
    budget = 0.05
    args = ("--max-false-hits", str(budget), "--hold-out", "--json", "--embedder", embedder)
    out = keel_cli("cache", "calibrate", "--pairs", str(PAIRS), *args)
    report = json.loads(out.stdout)
    assert report["model"].endswith("+int8") == (embedder == "local-int8")
    chosen, held = report["chosen"], report["held_out"]
    tune, back = calibrate.halves(calibrate.read_pairs(PAIRS))
    assert chosen["pairs"] == len(tune) and held["pairs"] == len(back)
    assert chosen["false_hit_rate"] <= budget
    assert held["threshold"] == chosen["threshold"]
    assert held["false_hit_rate"] <= budget, held  # pairs the choice never saw
    assert held["recall"] >= 0.5, held  # and it still serves most real paraphrases
    low, high = held["false_hit_interval_95"]
    assert low <= held["false_hit_rate"] <= high


def test_text_output_names_the_setting_and_the_interval() -> None:
    out = keel_cli("cache", "calibrate", "--pairs", str(PAIRS), "--alias", "support-bot")
    assert "models.support-bot.cache.threshold: " in out.stdout
    assert "95%" in out.stdout and "recall" in out.stdout


def test_a_bad_pairs_file_is_a_message(tmp_path: Path) -> None:
    bad = tmp_path / "bad.tsv"
    bad.write_text("sentence1\tsentence2\tlabel\nA?\tB?\tmaybe\n", encoding="utf-8")
    out = keel_cli("cache", "calibrate", "--pairs", str(bad), code=1)
    assert "--pairs" in out.stderr and "line 2" in out.stderr
