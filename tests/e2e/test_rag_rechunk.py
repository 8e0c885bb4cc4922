"""Re-chunking end to end, on SQLite and PostgreSQL: `POST /api/rag/collections/{c}/rechunk` with a new
chunking spec re-cuts every indexed document's stored parse into a shadow build, which is swapped in at
once; the documents keep their versions, every chunk fits the new budget, searches answer from the new
build, and a document put afterwards is cut by the new spec."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from keel.testing import FakeUpstream

from ..conftest import Gateway, until
from .test_rag_ingest import MODEL, config


def paragraph(n: int, topic: str) -> str:  # sentences unlike each other: no chunk is dropped as a duplicate
    return f"Section {n} covers the {topic} policy. " + " ".join(f"Rule r{n}x{i} applies." for i in range(12))


@pytest.fixture
def rag(make_gateway: Any, up: FakeUpstream, storage_url: str, tmp_path: Path) -> Gateway:
    return make_gateway(config(up, storage_url, tmp_path))  # type: ignore[no-any-return]


def text(topic: str) -> str:
    return "\n\n".join(paragraph(n, topic) for n in range(4))


def chunk_tokens(rag: Gateway, build: str) -> dict[int, list[int]]:
    """Document row → token counts of its chunks in `build`."""
    store: Any = rag.runtime.store
    m = store._db.dialect.mark
    out: dict[int, list[int]] = {}
    with store._db.session() as s:
        for doc, tokens in s.fetchall(f"SELECT doc, tokens FROM rag_chunks WHERE build = {m} ORDER BY id", (build,)):
            out.setdefault(int(doc), []).append(int(tokens))
    return out


def active(rag: Gateway) -> str:
    return next(b.id for b in rag.runtime.store.rag_builds("t1", "kb") if b.state == "active")


def test_rechunk_rebuilds_in_the_shadow_and_swaps(rag: Gateway) -> None:
    key = {"authorization": f"Bearer {rag.key}"}
    with httpx.Client(base_url=rag.url, headers=key, timeout=30) as c:
        r = c.post("/api/rag/collections", json={"name": "kb", "model": MODEL, "chunking": {"max_tokens": 200}})
        assert r.status_code == 201, r.text
        for topic in ("refund", "travel", "security"):
            put = c.put(f"/api/rag/collections/kb/documents/{topic}", json={"text": text(topic), "title": topic})
            assert put.status_code == 201, put.text

        def indexed() -> bool:
            data = c.get("/api/rag/collections/kb/documents").json()["data"]
            return len(data) == 3 and all(d["status"] == "indexed" for d in data)

        assert until(indexed, 60), c.get("/api/rag/collections/kb/documents").json()
        old = active(rag)
        before = chunk_tokens(rag, old)
        assert len(before) == 3 and all(max(t) > 32 for t in before.values())

        bad = c.post("/api/rag/collections/kb/rechunk", json={"chunking": {"max_tokens": 0}})
        assert bad.status_code == 400 and bad.json()["error"]["param"].startswith("chunking")
        r = c.post("/api/rag/collections/kb/rechunk", json={"chunking": {"max_tokens": 32, "overlap": 0}})
        assert r.status_code == 202, r.text

        def swapped() -> bool:
            return bool(c.get("/api/rag/collections/kb").json()["chunking"]["max_tokens"] == 32)

        assert until(swapped, 60), c.get("/api/rag/collections/kb").json()
        new = active(rag)
        states = {b.id: b.state for b in rag.runtime.store.rag_builds("t1", "kb")}
        assert new != old and states == {old: "retired", new: "active"}
        after = chunk_tokens(rag, new)
        assert after.keys() == before.keys()
        for doc, tokens in after.items():
            assert max(tokens) <= 32 and len(tokens) > len(before[doc])
            assert sum(tokens) == len(re.findall(r"\w+|[^\w\s]", text("refund")))  # every word once: no overlap now
        versions = {
            d["id"]: (d["version"], d["status"]) for d in c.get("/api/rag/collections/kb/documents").json()["data"]
        }
        assert versions == {t: (1, "indexed") for t in ("refund", "travel", "security")}

        found = c.post("/api/rag/collections/kb/search", json={"query": "travel policy", "top_k": 3}).json()
        assert found["build"] == new and found["data"][0]["document"]["id"] == "travel"
        assert all(len(h["chunk"]["text"].split()) <= 32 for h in found["data"])

        late = c.put("/api/rag/collections/kb/documents/late", json={"text": text("parking"), "title": "parking"})
        assert late.status_code == 201
        assert until(lambda: c.get("/api/rag/collections/kb/documents/late").json()["status"] == "indexed", 60)
        cut = chunk_tokens(rag, new)
        assert len(cut) == 4 and all(max(t) <= 32 for t in cut.values())
