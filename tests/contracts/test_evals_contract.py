"""The EvalStore contract over every SQL backend (SQLite and PostgreSQL): dataset versions are numbered
per (tenant, name), immutable and read back whole with their trace links (also under concurrent
writers); runs read back with their spec and move through updates; a result is recorded once."""

from __future__ import annotations

import threading
import time

import pytest

from keel.store.protocols import DatasetItem, EvalResult, EvalRun, Store

NOW = time.time()


def item(i: int) -> DatasetItem:
    return DatasetItem(
        {"vars": {"q": f"héllo {i}", "n": i}}, f"answer {i}", ("ctx a", "ctx b"), {"k": [1, 2]}, f"trace-{i}"
    )


def test_dataset_versions_are_numbered_immutable_and_read_back_whole(store: Store) -> None:
    first = store.put_dataset("t1", "support", [item(1), item(2)], note="seed", now=NOW)
    assert (first.version, first.count, first.note) == (1, 2, "seed")
    second = store.put_dataset("t1", "support", [item(1), item(2), item(3)], note=None, now=NOW + 1)
    assert second.version == 2
    assert store.put_dataset("t2", "support", [], note=None, now=NOW).version == 1  # per tenant
    assert store.dataset_items("t1", "support", 1) == [item(1), item(2)]
    assert store.dataset_items("t1", "support", 2) == [item(1), item(2), item(3)]
    latest = store.get_dataset("t1", "support")
    assert latest is not None and latest.version == 2
    assert store.get_dataset("t1", "support", 1) == first
    assert store.get_dataset("t1", "nope") is None
    assert [(d.tenant, d.version) for d in store.list_datasets()] == [("t1", 1), ("t1", 2), ("t2", 1)]
    assert [d.version for d in store.list_datasets("t2")] == [1]


def test_concurrent_writers_get_distinct_versions(store: Store) -> None:
    versions: list[int] = []

    def write(i: int) -> None:
        versions.append(store.put_dataset("t1", "race", [item(i)], note=None, now=NOW).version)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(versions) == [1, 2, 3, 4, 5, 6]


def run(run_id: str, label: str | None = "main", created: float = NOW) -> EvalRun:
    spec = {"suite": {"prompts": ["{{q}}"], "tests": [{"vars": {"q": "x"}}]}, "repeat": 2}
    return EvalRun(run_id, "t1", "k1", "suite-a", label, "queued", spec, 4, 0, created)


def test_runs_read_back_update_and_list_newest_first(store: Store) -> None:
    store.create_eval_run(run("evr_1"))
    store.create_eval_run(run("evr_2", created=NOW + 1))
    store.create_eval_run(run("evr_3", label="other", created=NOW + 2))
    assert store.get_eval_run("t1", "evr_1") == run("evr_1")
    assert store.get_eval_run("t2", "evr_1") is None
    moved = store.update_eval_run("evr_1", {"status": "finished", "done": 4, "summary": {"pass_rate": 0.5}})
    assert moved is not None and moved.status == "finished" and moved.summary == {"pass_rate": 0.5}
    assert [r.id for r in store.list_eval_runs("t1", suite="suite-a", label="main")] == ["evr_2", "evr_1"]
    assert [r.id for r in store.list_eval_runs(None, limit=1)] == ["evr_3"]
    with pytest.raises(ValueError, match="spec"):
        store.update_eval_run("evr_1", {"spec": {}})


def test_a_result_is_recorded_once(store: Store) -> None:
    store.create_eval_run(run("evr_r"))
    verdicts = ({"type": "contains", "passed": True, "score": 1.0, "reason": "found", "weight": 1.0},)
    results = [
        EvalResult("evr_r", f"t{i}", rep, i % 2 == 0, 0.5, f"out {i}", f"tr{i}", 12.5, 0.001, verdicts)
        for i in range(1, 4)
        for rep in range(2)
    ]
    assert store.record_eval_results(results[:4]) == 4
    assert store.record_eval_results(results) == 2  # the first four again: nothing new
    assert store.eval_results("evr_r") == sorted(results, key=lambda r: (r.item, r.repeat))
    assert store.recorded_eval_keys("evr_r") == {(f"t{i}", rep) for i in range(1, 4) for rep in range(2)}
