"""RAG ingestion end to end, on SQLite and PostgreSQL: the gateway's job workers ingest what the admin API
and `keel rag ingest` put.

- a mixed folder (txt, md, html, pdf, docx, a corrupt pdf): every good file indexed and findable, the
  corrupt one `failed` at `parsing` with its reason, and nothing of it in the index;
- refresh with `--sync`: a changed file is a new version (its old chunks gone), an unchanged one is
  skipped (no new version, no job), a deleted one is tombstoned and leaves the index;
- the HTTP surface: JSON and multipart puts, status, listing, delete, the tenant boundary, 4xx naming the
  field.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from keel.cli.main import main as keel
from keel.runtime.components import Runtime
from keel.store.protocols import DocumentRow
from keel.testing import FakeUpstream

from ..conftest import ADMIN, Gateway, base_config, until
from .rag_files import docx, mixed_folder, pdf

MODEL = "hash:256"  # a bag-of-words model: no weights to load; the pipeline is the same as MiniLM's


def config(up: FakeUpstream, storage_url: str, tmp: Path) -> dict[str, Any]:
    raw = base_config(up, storage_url, tmp)
    raw["traces"]["blobs_url"] = f"file://{tmp}/blobs"
    raw["jobs"] = {"poll_s": 0.05, "backoff_s": 0.05}
    return raw


@pytest.fixture
def rag(make_gateway: Any, up: FakeUpstream, storage_url: str, tmp_path: Path) -> Gateway:
    return make_gateway(config(up, storage_url, tmp_path))  # type: ignore[no-any-return]


def admin(gw: Gateway) -> httpx.Client:
    return httpx.Client(base_url=gw.url, headers={"authorization": f"Bearer {ADMIN}"}, timeout=30)


def create(gw: Gateway, name: str, **fields: Any) -> dict[str, Any]:
    with admin(gw) as c:
        r = c.post("/api/rag/collections", json={"tenant": "t1", "name": name, "model": MODEL, **fields})
    assert r.status_code in (200, 201), r.text
    return r.json()  # type: ignore[no-any-return]


def docs(rt: Runtime, collection: str) -> dict[str, DocumentRow]:
    return {d.id: d for d in rt.store.list_documents("t1", collection, limit=1000)}


def settled(rt: Runtime, collection: str, n: int) -> bool:
    found = docs(rt, collection)
    return len(found) == n and all(d.status in ("indexed", "failed", "deleted") for d in found.values())


def indexed_chunks(rt: Runtime, collection: str) -> dict[str, list[tuple[int, str]]]:
    """What the active build holds: document id → [(version, content hash)] of its chunks."""
    return {d: [(v, h) for v, _, h in found] for d, found in chunks_of(rt.store, "t1", collection).items()}


def chunks_of(store: Any, tenant: str, collection: str) -> dict[str, list[tuple[int, int, str]]]:
    """Document id → [(version, ordinal, content hash)] of its chunks in the active build."""
    active = [b for b in store.rag_builds(tenant, collection) if b.state == "active"]
    if not active:
        return {}
    m = store._db.dialect.mark  # the index's document rows, read where they are (ids → caller's ids)
    with store._db.session() as s:
        sql = f"SELECT id, document_id FROM rag_index_docs WHERE tenant = {m} AND collection = {m}"
        names = dict(s.fetchall(sql, (tenant, collection)))
    out: dict[str, list[tuple[int, int, str]]] = {}
    for doc, version, _, chunk in store.rag_source_chunks(active[0].id, 0, 100_000):
        out.setdefault(names[doc], []).append((version, chunk.ordinal, chunk.content_hash))
    return out


def lexical(gw: Gateway, collection: str, text: str) -> list[str]:
    """The documents of the top full-text hits in the active build (an admin's view: every document), through
    the search API (BM25 in process on SQLite, `ts_rank` on PostgreSQL with pgvector)."""
    with admin(gw) as c:
        body = {"query": text, "mode": "lexical", "top_k": 3, "tenant": "t1", "all": True}
        r = c.post(f"/api/rag/collections/{collection}/search", json=body)
    assert r.status_code == 200, r.text
    return [h["document"]["id"] for h in r.json()["data"]]


def ingest(gw: Gateway, tmp: Path, collection: str, *paths: Path, sync: bool = False) -> int:
    args = ["--config", str(tmp / "keel.yaml"), "rag", "ingest", collection, *map(str, paths), "--tenant", "t1"]
    return keel([*args, "--wait-s", "60"] + (["--sync"] if sync else []))


def test_a_mixed_folder_is_indexed_but_the_corrupt_pdf_which_fails_with_its_reason(
    rag: Gateway, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    create(rag, "mixed")
    phrases = mixed_folder(tmp_path / "docs")

    assert ingest(rag, tmp_path, "mixed", tmp_path / "docs") == 1  # one file failed
    out = capsys.readouterr().out
    assert "created 6" in out and "indexed 5" in out and "failed 1" in out, out
    assert "failed: broken.pdf (parsing): damaged PDF" in out, out

    rows = docs(rag.runtime, "mixed")
    assert {i: d.status for i, d in rows.items()} == {**{i: "indexed" for i in phrases}, "broken.pdf": "failed"}
    broken = rows["broken.pdf"]
    assert (broken.stage, broken.indexed_version) == ("parsing", None)
    assert broken.error is not None and broken.error.startswith("damaged PDF"), broken.error
    chunks = indexed_chunks(rag.runtime, "mixed")
    assert set(chunks) == set(phrases)  # nothing of the corrupt file, every good one
    for doc_id, found in chunks.items():
        assert len(found) == rows[doc_id].chunks and len(set(found)) == len(found)
        assert {v for v, _ in found} == {1}
    with admin(rag) as c:
        shown = c.get("/api/rag/collections/mixed/documents/broken.pdf", params={"tenant": "t1"}).json()
        assert shown["failed"] == {"stage": "parsing", "reason": broken.error}
        assert shown["job"]["state"] == "dead"
    for doc_id, phrase in phrases.items():
        assert lexical(rag, "mixed", phrase)[:1] == [doc_id], phrase


def test_sync_updates_changed_skips_unchanged_and_tombstones_deleted_files(
    rag: Gateway, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    create(rag, "synced")
    folder = tmp_path / "kb"
    folder.mkdir()
    (folder / "a.txt").write_text("Apples grow in orchards.\n\nThey ripen in autumn.")
    (folder / "b.md").write_text("# Bees\n\nBees make honey from nectar.")
    (folder / "c.html").write_bytes(b"<html><body><article><h1>Cats</h1><p>Cats sleep most of the day, often"
                                    b" sixteen hours or more.</p></article></body></html>")  # fmt: skip
    assert ingest(rag, tmp_path, "synced", folder, sync=True) == 0
    first = docs(rag.runtime, "synced")
    assert {d.id: (d.status, d.version) for d in first.values()} == {
        "a.txt": ("indexed", 1), "b.md": ("indexed", 1), "c.html": ("indexed", 1),
    }  # fmt: skip
    capsys.readouterr()

    (folder / "a.txt").write_text("Apples grow in orchards.\n\nPears ripen later, in winter storage.")
    (folder / "c.html").unlink()
    assert ingest(rag, tmp_path, "synced", folder, sync=True) == 0
    out = capsys.readouterr().out
    assert "updated 1" in out and "unchanged 1" in out and "deleted 1" in out, out

    after = docs(rag.runtime, "synced")
    assert (after["a.txt"].status, after["a.txt"].version, after["a.txt"].indexed_version) == ("indexed", 2, 2)
    assert after["b.md"] == first["b.md"]  # skipped: not even its row changed
    assert after["c.html"].status == "deleted" and after["c.html"].deleted_at is not None
    assert until(lambda: set(indexed_chunks(rag.runtime, "synced")) == {"a.txt", "b.md"}, 30)
    chunks = indexed_chunks(rag.runtime, "synced")
    assert {v for v, _ in chunks["a.txt"]} == {2}  # the old version's chunks are gone
    jobs = [j for j in rag.runtime.store.list_jobs(_query("rag.ingest")) if j.payload["id"] == "b.md"]
    assert len(jobs) == 1  # the unchanged file queued nothing the second time


def _query(kind: str) -> Any:
    from keel.store.protocols import JobQuery

    return JobQuery(kind=kind, limit=1000)


def test_documents_over_http_json_and_multipart_with_status_list_delete_and_tenant_bounds(rag: Gateway) -> None:
    key = {"authorization": f"Bearer {rag.key}"}  # tenant t1's virtual key
    with httpx.Client(base_url=rag.url, headers=key, timeout=30) as c:
        r = c.post("/api/rag/collections", json={"name": "kb", "model": MODEL, "chunking": {"max_tokens": 64}})
        assert r.status_code == 201, r.text
        assert r.json()["chunking"] == {"max_tokens": 64, "overlap": 16, "strategy": "structure"}
        assert c.post("/api/rag/collections", json={"name": "kb", "model": MODEL,
                                                    "chunking": {"max_tokens": 64}}).status_code == 200  # fmt: skip
        assert c.post("/api/rag/collections", json={"name": "kb", "model": "hash:64"}).status_code == 409

        r = c.put("/api/rag/collections/kb/documents/faq-1", json={
            "text": "Refunds are issued within five days.", "title": "Refunds", "metadata": {"lang": "en"},
            "users": ["ann"], "groups": ["support"],
        })  # fmt: skip
        assert r.status_code == 201, r.text
        assert (r.json()["status"], r.json()["version"], r.json()["result"]) == ("queued", 1, "created")
        files = {"file": ("memo.pdf", pdf(["Shipping takes two weeks by sea."]), "application/pdf")}
        r = c.put("/api/rag/collections/kb/documents/memo", files=files, data={"metadata": '{"dept": "ops"}'})
        assert r.status_code == 201, r.text
        assert r.json()["kind"] == "pdf" and r.json()["metadata"] == {"dept": "ops"}
        word = {"file": ("w.docx", docx("Handbook", [("Leave", ["Annual leave is 25 days."])]), "application/zip")}
        assert c.put("/api/rag/collections/kb/documents/handbook", files=word).status_code == 201

        def indexed() -> bool:
            data = c.get("/api/rag/collections/kb/documents").json()["data"]
            return len(data) == 3 and all(d["status"] == "indexed" for d in data)

        assert until(indexed, 30), c.get("/api/rag/collections/kb/documents").json()
        shown = c.get("/api/rag/collections/kb/documents/faq-1").json()
        assert (shown["users"], shown["groups"], shown["chunks"], shown["job"]["state"]) == (
            ["ann"], ["support"], 1, "succeeded")  # fmt: skip
        same = c.put("/api/rag/collections/kb/documents/faq-1", json={
            "text": "Refunds are issued within five days.", "title": "Refunds", "metadata": {"lang": "en"},
            "users": ["ann"], "groups": ["support"],
        })  # fmt: skip
        assert (same.status_code, same.json()["result"], same.json()["version"]) == (200, "unchanged", 1)
        counts = c.get("/api/rag/collections/kb").json()["documents"]
        assert counts == {"indexed": 3}

        gone = c.delete("/api/rag/collections/kb/documents/memo")
        assert gone.status_code == 200 and gone.json()["status"] == "deleted"
        assert until(lambda: "memo" not in indexed_chunks(rag.runtime, "kb"), 30)
        assert (
            c.get("/api/rag/collections/kb/documents", params={"status": "deleted"}).json()["data"][0]["id"] == "memo"
        )

        # the field at fault, named
        bad = [
            (c.post("/api/rag/collections", json={"name": "../x"}), "name"),
            (c.post("/api/rag/collections", json={"name": "y", "chunking": {"max_tokens": 5}}), "chunking.max_tokens"),
            (c.post("/api/rag/collections", json={"name": "y", "chunking": {"overlap": 999}}), "chunking.overlap"),
            (c.put("/api/rag/collections/kb/documents/x", json={"title": "no text"}), "text"),
            (c.put("/api/rag/collections/kb/documents/x", json={"text": "t", "users": "ann"}), "users"),
            (c.put("/api/rag/collections/kb/documents/x", json={"text": "t", "kind": "exe"}), "kind"),
            (c.put("/api/rag/collections/kb/documents/x", files={"nofile": ("a", b"x")}), "file"),
            (c.get("/api/rag/collections/kb/documents", params={"status": "lost"}), "status"),
        ]
        for response, field in bad:
            assert response.status_code == 400, (field, response.text)
            assert response.json()["error"]["param"] == field, response.text
        assert c.put("/api/rag/collections/nope/documents/x", json={"text": "t"}).status_code == 404
        assert c.get("/api/rag/collections", params={"tenant": "other"}).status_code == 403

    rag.runtime.store.create_tenant("t2")
    from keel.keys.auth import issue_key

    other = issue_key(rag.runtime.store, "t2", name="other").key
    with httpx.Client(base_url=rag.url, headers={"authorization": f"Bearer {other}"}, timeout=30) as c:
        assert c.get("/api/rag/collections/kb/documents/faq-1").status_code == 404  # t1's, unseen from t2
        assert c.get("/api/rag/collections").json()["data"] == []
    with httpx.Client(base_url=rag.url, timeout=30) as c:
        assert c.get("/api/rag/collections").status_code == 401
    with admin(rag) as c:
        assert c.get("/api/rag/collections").json()["data"][0]["name"] == "kb"  # every tenant's
        assert c.get("/api/rag/collections/kb").json()["error"]["param"] == "tenant"


@pytest.mark.parametrize("via", ["api", "cli"])
def test_a_tenant_purge_removes_collections_documents_blobs_and_the_index(
    rag: Gateway, tmp_path: Path, via: str, capsys: pytest.CaptureFixture[str]
) -> None:
    create(rag, "gone")
    with admin(rag) as c:
        r = c.put("/api/rag/collections/gone/documents/a.md", json={"tenant": "t1", "text": "# A\n\nAlpha text."})
        assert r.status_code == 201
        assert until(lambda: docs(rag.runtime, "gone")["a.md"].status == "indexed", 30)
        assert any((tmp_path / "blobs" / "rag").rglob("*"))
        if via == "api":
            report = c.post("/api/tenants/t1/purge", json={}).json()["counts"]
            assert report["rag_documents"] == 1 and report["rag_collections"] == 1 and report["rag_chunks"] >= 1
        else:
            assert keel(["--config", str(tmp_path / "keel.yaml"), "tenants", "purge", "t1", "--yes"]) == 0
            out = capsys.readouterr().out
            assert all(f"{kind:<18} 1" in out for kind in ("rag_blob_rows", "rag_documents", "rag_collections"))
    assert rag.runtime.store.list_collections("t1") == []
    assert indexed_chunks(rag.runtime, "gone") == {}
    assert not [p for p in (tmp_path / "blobs" / "rag").rglob("*") if p.is_file()]


def test_a_document_left_without_its_job_is_queued_again_by_the_sweep(rag: Gateway) -> None:
    """A crash between a document's row and its job (or a job cancelled by hand) leaves it `queued`: the
    sweep (the `rag-orphans` worker's pass) queues it again and it gets indexed."""
    from keel.rag.documents import Library, raw_key
    from keel.store.protocols import DocumentIn

    create(rag, "orphans")
    rt = rag.runtime
    library = rt.get(Library)
    key = raw_key("t1", "orphans", "lost.txt", "0" * 64, "txt")
    rt.blobs.put(key, b"Nobody queued the ingestion of this text.")  # type: ignore[union-attr]
    long_ago = time.time() - 3600
    rt.store.put_document(
        DocumentIn("t1", "orphans", "lost.txt", "Lost", "lost.txt", "0" * 64, "txt", 41), key, long_ago
    )
    assert library.requeue_orphans() == ["lost.txt"]
    assert until(lambda: docs(rt, "orphans")["lost.txt"].status == "indexed", 30)
    assert library.requeue_orphans() == []
