"""The RagDocStore contract over every SQL backend (SQLite and PostgreSQL): collections created once;
a document put is its next version unless nothing the index keeps changed; concurrent puts of one id
never share a version; status updates apply only to the version they name and never to a tombstone; a
tombstone comes back as the next version; listings page by id; a tenant's rows go together."""

from __future__ import annotations

import threading
import time

from keel.store.protocols import CollectionRow, DocumentIn, DocUpdate, Store


def doc(id: str = "a.md", content: str = "h1", **kw: object) -> DocumentIn:
    fields: dict[str, object] = {"title": "A", "source": "/x/a.md", "content_type": "md", "bytes": 3} | kw
    return DocumentIn("t1", "kb", id, content_hash=content, **fields)  # type: ignore[arg-type]


def test_collections_are_created_once(store: Store) -> None:
    row = CollectionRow("t1", "kb", "local", {"max_tokens": 100}, "d", 1.0, 1.0)
    assert store.create_collection(row) == (row, True)
    again, created = store.create_collection(CollectionRow("t1", "kb", "hash:8", {}, None, 2.0, 2.0))
    assert (again, created) == (row, False)
    assert store.list_collections("t1") == [row] and store.list_collections("t2") == []
    changed = store.set_collection_spec("t1", "kb", "hash:8", {"max_tokens": 50}, 3.0)
    assert changed is not None and (changed.model, changed.chunking, changed.updated_at) == (
        "hash:8",
        {"max_tokens": 50},
        3.0,
    )


def test_a_collections_rerank_setting_is_kept_and_cleared(store: Store) -> None:
    setting = {"model": "judge", "top_n": 5, "weight": 0.5, "timeout_s": 2.0}
    row = CollectionRow("t1", "kb", "local", {}, None, 1.0, 1.0, setting)
    assert store.create_collection(row) == (row, True) and store.get_collection("t1", "kb") == row
    assert store.create_collection(CollectionRow("t1", "plain", "local", {}, None, 1.0, 1.0))[0].rerank is None
    cleared = store.set_collection_rerank("t1", "kb", None, 2.0)
    assert cleared is not None and cleared.rerank is None and cleared.updated_at == 2.0
    again = store.set_collection_rerank("t1", "kb", {**setting, "top_n": 9}, 3.0)
    assert again is not None and again.rerank == {**setting, "top_n": 9}
    assert store.list_collections("t1")[0].rerank == {**setting, "top_n": 9}
    assert store.set_collection_rerank("t1", "nope", setting, 4.0) is None
    assert store.set_collection_rerank("t2", "kb", setting, 4.0) is None


def test_versions_unchanged_puts_updates_and_tombstones(store: Store) -> None:
    first, result = store.put_document(doc(metadata={"b": 1, "a": [1]}, users=("u",)), "k1", 10.0)
    assert (first.version, first.status, result) == (1, "queued", "created")
    same, result = store.put_document(doc(metadata={"a": [1], "b": 1}, users=("u",)), "k1", 11.0)
    assert (same, result) == (first, "unchanged")
    meta, result = store.put_document(doc(metadata={"a": [2]}, users=("u",)), "k1", 12.0)
    assert (meta.version, result) == (2, "updated")  # the index keeps metadata: a new version

    assert store.update_document("t1", "kb", "a.md", 2, DocUpdate("embedding", progress_done=3, progress_total=9), 13.0)
    assert not store.update_document("t1", "kb", "a.md", 1, DocUpdate("indexed"), 13.0)  # a superseded version
    assert store.update_document("t1", "kb", "a.md", 2, DocUpdate("indexed", chunks=9, indexed=True), 14.0)
    row = store.get_document("t1", "kb", "a.md")
    assert row is not None and (row.status, row.chunks, row.indexed_version, row.progress_done) == ("indexed", 9, 2, 3)

    stone = store.tombstone_document("t1", "kb", "a.md", 15.0)
    assert stone is not None and (stone.status, stone.deleted_at) == ("deleted", 15.0)
    again = store.tombstone_document("t1", "kb", "a.md", 16.0)
    assert again is not None and again.deleted_at == 15.0
    assert not store.update_document("t1", "kb", "a.md", 2, DocUpdate("indexed"), 16.0)
    assert store.tombstone_document("t1", "kb", "nope", 16.0) is None
    assert store.expired_tombstones(15.5, 10) == [("t1", "kb", "a.md")] and store.expired_tombstones(15.0, 10) == []
    back, result = store.put_document(doc(metadata={"a": [2]}, users=("u",)), "k1", 17.0)
    assert (back.version, back.status, back.deleted_at, result) == (3, "queued", None, "updated")
    assert store.document_hashes("t1", "kb") == {"a.md": ("h1", 3, False)}


def test_concurrent_puts_of_one_id_get_distinct_versions(store: Store) -> None:
    got: list[int] = []
    errors: list[BaseException] = []

    def put(i: int) -> None:
        try:
            got.append(store.put_document(doc("same", content=f"c{i}"), f"k{i}", time.time())[0].version)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=put, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and sorted(got) == list(range(1, 9))
    assert len(store.blob_keys("t1", "kb", "same")) == 8


def test_listing_pages_blob_keys_and_tenant_deletion(store: Store) -> None:
    store.create_collection(CollectionRow("t1", "kb", "local", {}, None, 1.0, 1.0))
    for i in range(5):
        store.put_document(doc(f"d{i}"), f"key{i}", 1.0)
    store.update_document("t1", "kb", "d3", 1, DocUpdate("failed", stage="parsing", error="bad"), 2.0)
    assert [d.id for d in store.list_documents("t1", "kb", limit=2)] == ["d0", "d1"]
    assert [d.id for d in store.list_documents("t1", "kb", after="d1", limit=10)] == ["d2", "d3", "d4"]
    assert sorted(d.id for d in store.working_documents(1.5, 10)) == ["d0", "d1", "d2", "d4"]
    assert store.working_documents(0.5, 10) == []
    (failed,) = store.list_documents("t1", "kb", status="failed")
    assert (failed.id, failed.stage, failed.error) == ("d3", "parsing", "bad")
    store.add_blob_key("t1", "kb", "d0", 1, "extra")
    assert sorted(store.blob_keys("t1", "kb", "d0")) == ["extra", "key0"]
    store.forget_blob_keys("t1", "kb", "d0", ["extra"])
    assert store.blob_keys("t1", "kb", "d0") == ["key0"]
    assert store.delete_documents("t1", "kb", ["d0", "d1"]) == 2
    store.put_document(DocumentIn("t2", "kb", "x", "T", "s", "h", "txt", 1), "k", 1.0)
    assert store.delete_rag_tenant("t1") == {"rag_blob_rows": 3, "rag_documents": 3, "rag_collections": 1}
    assert store.list_documents("t1", "kb") == [] and len(store.list_documents("t2", "kb")) == 1
