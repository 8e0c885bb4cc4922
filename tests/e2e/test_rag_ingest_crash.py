"""A `keel worker` killed with `kill -9` while it embeds a document (MiniLM, the real model): once its lease
expires a second worker ingests that document again from its bytes, and every document ends indexed with
each chunk exactly once (no duplicates, no leftovers of the killed attempt), on SQLite and PostgreSQL.

One document is long (~270 chunks: more than a second of embedding even on an idle machine, so the kill
lands between two of its batches); the two others are short (under one batch), so the second worker
re-embeds the killed document, not the whole corpus three times over."""

from __future__ import annotations

import os
import random
import signal
from pathlib import Path

import pytest
import yaml

from keel import config as keel_config
from keel.rag.collections import collection_in
from keel.rag.documents import Fields, Library
from keel.store.open import open_store
from keel.store.protocols import JobQuery, Store
from keel.traces.builder import blobs_from

from .test_jobs_crash import until, worker
from .test_rag_ingest import chunks_of

WORDS = [
    *("river", "stone", "harbour", "lantern", "orchard", "meadow", "copper", "signal", "quarry", "timber"),
    *("falcon", "ember", "glacier", "canyon", "ledger", "compass", "anchor", "beacon", "thistle", "willow"),
]


def long_markdown(seed: int, sections: int = 30) -> str:
    rng = random.Random(seed)
    parts = [f"# Field notes {seed}"]
    for s in range(sections):
        parts.append(f"## Section {s}")
        for _ in range(3):
            parts.append(" ".join(rng.choice(WORDS) for _ in range(60)) + ".")
    return "\n\n".join(parts)


def write_config(tmp: Path, storage_url: str) -> Path:
    raw = {
        "storage": {"url": storage_url},
        "traces": {"spill_dir": str(tmp / "spill"), "blobs_url": f"file://{tmp}/blobs"},
        "providers": {"sim": {"type": "simulated"}},
        "models": {"demo": {"targets": [{"provider": "sim", "model": "simulated-1"}]}},
        # a lease of a few seconds: embedding saturates the cores, and a heartbeat may come late on a loaded machine
        "jobs": {"lease_s": 4.0, "poll_s": 0.1, "grace_s": 1.0, "workers": 2, "backoff_s": 0.1},
    }
    path = tmp / "keel.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def mid_embedding(store: Store) -> str | None:
    for d in store.list_documents("t1", "crash"):
        if d.status == "embedding" and (d.progress_done or 0) > 0:
            return d.id
    return None


@pytest.mark.timeout(300)
def test_a_worker_killed_mid_ingestion_resumes_without_duplicate_chunks(storage_url: str, tmp_path: Path) -> None:
    cfg = keel_config.load(write_config(tmp_path, storage_url), env={})
    store = open_store(storage_url)
    blobs = blobs_from(cfg)
    try:
        library = Library(store, blobs, cfg.jobs)
        library.create_collection(
            "t1", collection_in({"name": "crash", "model": "local", "chunking": {"max_tokens": 48}})
        )
        for i, sections in enumerate((30, 2, 2)):  # short chunks, many batches: the kill lands between two
            text = long_markdown(i, sections).encode()  # of the long document's batches
            library.put("t1", "crash", f"notes-{i}.md", text, Fields())
        with worker(tmp_path, "first", "worker") as first:
            killed_in = until(lambda: mid_embedding(store), 120)
            os.kill(first.pid, signal.SIGKILL)
            first.wait()
        row = store.get_document("t1", "crash", killed_in)
        assert row is not None and row.status == "embedding" and row.indexed_version is None

        def done() -> bool:
            jobs = store.list_jobs(JobQuery(kind="rag.ingest", limit=100))
            return all(d.status == "indexed" for d in store.list_documents("t1", "crash")) and all(
                j.state == "succeeded" for j in jobs
            )

        with worker(tmp_path, "second", "worker"):
            until(done, 180)
        rows = {d.id: d for d in store.list_documents("t1", "crash")}
        per_doc = chunks_of(store, "t1", "crash")
        assert set(per_doc) == set(rows)
        for doc_id, found in per_doc.items():
            assert len(found) == rows[doc_id].chunks, doc_id  # exactly the chunks of one attempt
            assert len({o for _, o, _ in found}) == len(found) and len({h for _, _, h in found}) == len(found)
            assert {v for v, _, _ in found} == {1}
        jobs = {j.payload["id"]: j for j in store.list_jobs(JobQuery(kind="rag.ingest", limit=100))}
        assert jobs[killed_in].attempts == 2  # ran again after the kill, from its bytes
    finally:
        blobs.close()
        store.close()
