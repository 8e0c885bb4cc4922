"""Drift: the tests on their own, and windows read back from traces in a real SQLite store.

Input drift runs on real text: passages of MS MARCO (../shared/data/retrieval/msmarco-5k, read in place,
never copied here). A "second topic" is the passages about health and medicine, picked by keywords; the
rest is the first topic. Where that data is absent the same test runs on generated text of two topics.
"""

from __future__ import annotations

import json
import random
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from keel.cli.main import main
from keel.evals import drift
from keel.evals.stats import mann_whitney, two_proportions
from keel.store.open import open_store
from keel.types import TraceRecord

MSMARCO = Path("/work/shared/data/retrieval/msmarco-5k/corpus.jsonl")
MEDICAL = re.compile(
    r"\b(symptoms?|disease|blood|pain|infection|doctor|medical|cancer|treatment|patients?|heart|diabetes|surgery)\b",
    re.IGNORECASE,
)
N = 200  # calls per window
DAY = 86400.0


def topics() -> tuple[list[str], list[str]]:
    """(first topic, second topic) texts, shuffled with a fixed seed."""
    rng = random.Random(7)
    if MSMARCO.is_file():
        with MSMARCO.open(encoding="utf-8") as f:
            texts = [json.loads(line)["text"].split(". ")[0][:160] for line in f]
        first = [t for t in texts if not MEDICAL.search(t)]
        second = [t for t in texts if MEDICAL.search(t)]
    else:  # the same shape of test on generated text
        things = ["river", "bridge", "library", "train", "garden", "museum", "mountain", "harbor", "castle", "market"]
        verbs = ["was built", "opened", "was painted", "was restored", "closed", "grew", "was mapped", "was sold"]
        first = [f"The {a} near the {b} {v} in {1800 + i}." for i, (a, b, v) in
                 enumerate((rng.choice(things), rng.choice(things), rng.choice(verbs)) for _ in range(2000))]  # fmt: skip
        ills = ["fever", "asthma", "diabetes", "migraine", "anemia", "arthritis", "flu", "eczema"]
        acts = ["symptoms of", "treatment for", "doctors diagnose", "blood tests for", "medicine for"]
        second = [
            f"What are the {rng.choice(acts)} {rng.choice(ills)} in patients aged {20 + i % 60}?" for i in range(800)
        ]
    rng.shuffle(first)
    rng.shuffle(second)
    return first, second


def record(i: int, at: float, prompt: str, answer: str, tokens: int, feature: str = "support") -> TraceRecord:
    return TraceRecord(
        id=f"t{i:06d}",
        started_at=at,
        tenant="t1",
        feature=feature,
        alias="gpt",
        request={
            "model": "gpt",
            "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": prompt}],
        },
        response={"content": answer, "tool_calls": [], "finish_reason": "stop"},
        output_tokens=tokens,
    )


@pytest.mark.timeout(300)
def test_a_second_topic_mixed_in_is_detected_and_an_unchanged_split_is_not(tmp_path: Path) -> None:
    import numpy as np

    from keel.embedding.model import LocalEmbedder

    first, second = topics()
    now = time.time()
    reference = first[:N]
    unchanged = first[N : 2 * N]
    shifted = first[2 * N : 2 * N + int(N * 0.7)] + second[: N - int(N * 0.7)]  # 30% of the second topic
    store = open_store(f"sqlite:///{tmp_path}/drift.db")
    try:
        old, new = now - 6.5 * DAY, now - 0.9 * DAY  # calls spread over each window
        rows = [record(i, old + i * 2000, p, "ok", 20) for i, p in enumerate(reference)]
        rows += [record(10_000 + i, new + i * 300, p, "ok", 20) for i, p in enumerate(unchanged)]
        rows += [record(20_000 + i, new + i * 300, p, "ok", 20, feature="shifted") for i, p in enumerate(shifted)]
        rows += [record(30_000 + i, old + i * 2000, p, "ok", 20, feature="shifted") for i, p in enumerate(reference)]
        store.append_traces(rows)
        model = LocalEmbedder()
        seen: dict[str, Any] = {}

        def embed(texts: Sequence[str]) -> Any:  # each text once: the reference window is read twice
            todo = [t for t in dict.fromkeys(texts) if t not in seen]
            if todo:
                seen.update(zip(todo, model.embed(todo), strict=True))
            return np.stack([seen[t] for t in texts])

        recent, ref = drift.windows("1d", "7d..1d", now + 1)
        reports = {}
        for feature in ("support", "shifted"):
            spec = drift.DriftSpec(recent, ref, feature=feature, max_samples=N)
            before, after = drift.sample(store, None, spec, ref), drift.sample(store, None, spec, recent)
            assert (before.calls, after.calls, len(before.prompts), len(after.prompts)) == (N, N, N, N)
            reports[feature] = drift.compare(spec, before, after, embed)
    finally:
        store.close()
    assert reports["shifted"].tests["input"].p_value < 0.01, reports["shifted"].json()
    assert reports["support"].tests["input"].p_value >= 0.01, reports["support"].json()
    assert reports["shifted"].drifted == ["input"]  # lengths and rates did not change
    assert reports["support"].drifted == []


def test_rank_and_rate_tests_see_a_change_and_not_noise() -> None:
    rng = random.Random(1)
    same = mann_whitney([rng.gauss(50, 10) for _ in range(300)], [rng.gauss(50, 10) for _ in range(300)])
    longer = mann_whitney([rng.gauss(50, 10) for _ in range(300)], [rng.gauss(55, 10) for _ in range(300)])
    assert same.p_value > 0.01 and longer.p_value < 0.01 and longer.statistic > 0
    assert mann_whitney([3.0] * 50, [3.0] * 50).p_value == 1.0  # all tied: no evidence
    assert two_proportions(10, 300, 12, 300).p_value > 0.01
    changed = two_proportions(10, 300, 45, 300)
    assert changed.p_value < 0.01 and (changed.reference, changed.recent) == (10 / 300, 45 / 300)


def test_prompt_text_reads_each_stored_request_shape() -> None:
    chat = {
        "messages": [
            {"role": "user", "content": "a"},
            {"role": "assistant", "content": "b"},
            {"role": "user", "content": [{"type": "text", "text": "c"}]},
        ]
    }
    assert drift.prompt_text(chat) == "c"
    assert drift.prompt_text({"input": "r"}) == "r"
    assert drift.prompt_text({"input": [{"role": "user", "content": "s"}]}) == "s"
    assert drift.prompt_text({"prompt": "p"}) == "p"
    assert drift.prompt_text(None) is None
    assert drift.is_refusal({"content": "I'm sorry, but I can't help with that."})
    assert drift.is_refusal({"content": "", "finish_reason": "content_filter"})
    assert not drift.is_refusal({"content": "Sure: here it is."})


def test_windows_read_durations_and_refuse_an_empty_reference() -> None:
    recent, ref = drift.windows("1d", "7d..1d", 1000 * DAY)
    assert recent == (999 * DAY, 1000 * DAY) and ref == (993 * DAY, 999 * DAY)
    assert drift.windows("6h", "2d", 1000 * DAY)[1] == (998 * DAY, 1000 * DAY - 6 * 3600)
    with pytest.raises(drift.DriftError, match="--reference"):
        drift.windows("1d", "1d..7d", 1000 * DAY)
    with pytest.raises(drift.DriftError, match="--since"):
        drift.windows("yesterday", "7d..1d", 1000 * DAY)


def test_keel_drift_reports_output_drift_from_traces(tmp_path: Path, capsys: Any) -> None:
    """`keel drift --json --no-embed`: refusals appear in the recent window; input drift is skipped."""
    url = f"sqlite:///{tmp_path}/keel.db"
    (tmp_path / "keel.yaml").write_text(
        f"storage: {{url: '{url}'}}\ntraces: {{blobs_url: 'file://{tmp_path}/blobs'}}\n"
    )
    now = time.time()
    rng = random.Random(3)
    store = open_store(url)
    try:
        rows = [record(i, now - 3 * DAY + i, f"q{i}", "Here you go.", rng.randint(20, 40)) for i in range(150)]
        answers = ["I'm sorry, but I can't help with that." if i % 3 == 0 else "Here you go." for i in range(150)]
        rows += [record(1000 + i, now - 3600 + i, f"q{i}", a, rng.randint(20, 40)) for i, a in enumerate(answers)]
        store.append_traces(rows)
    finally:
        store.close()
    args = ["-c", str(tmp_path / "keel.yaml"), "drift", "--feature", "support", "--no-embed", "--json"]
    assert main([*args, "--check"]) == 100
    report = json.loads(capsys.readouterr().out)
    assert report["calls"] == {"reference": 150, "recent": 150}
    assert report["drifted"] == ["refusal_rate"]
    assert report["tests"]["refusal_rate"]["recent"] == pytest.approx(50 / 150)
    assert report["unavailable"]["input"].startswith("no embedder")
    with pytest.raises(SystemExit):  # --feature and --alias exclude each other: a usage error
        main([*args, "--alias", "gpt"])
    assert main([*args[:3], "--feature", "support", "--reference", "1d..7d"]) == 1
