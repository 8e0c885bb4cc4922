"""A purged user's id leaves every RAG access list of its tenant, on SQLite and PostgreSQL: the documents'
lists, the index's copies and its access rows. A list the user was alone on becomes closed (admin
searches only), never the whole tenant; another tenant's lists are untouched; an ingestion that read the
document before the purge and writes after it writes the rewritten list."""

from __future__ import annotations

import asyncio
import time

from keel.rag.index import ChunkIn, DocumentRef, Index, IndexSpec
from keel.rag.search import SearchQuery
from keel.store.open import open_store
from keel.store.protocols import DocumentIn, Store

SPEC = IndexSpec("hash:64", {"max_tokens": 200})
ULY, VERA = "uly7", "vera5"


def put(store: Store, tenant: str, doc_id: str, users: tuple[str, ...], groups: tuple[str, ...] = ()) -> DocumentRef:
    row, _ = store.put_document(
        DocumentIn(tenant, "kb", doc_id, "T", "s", doc_id, "txt", 1, users=users, groups=groups), "k", 1.0
    )
    return DocumentRef(tenant, "kb", doc_id, row.version, "T", {}, users, groups, None, time.time(), "s")


def found(index: Index, tenant: str, user: str | None, everything: bool = False) -> list[str]:
    async def go() -> list[str]:
        q = SearchQuery(tenant, "kb", "alpha", user=user, everything=everything, mode="lexical")
        return sorted(h.document_id for h in (await index.search(q)).hits)

    return asyncio.run(go())


def principals(store: Store, tenant: str) -> set[tuple[str, str]]:
    db = store._db  # type: ignore[attr-defined]
    m = db.dialect.mark
    with db.session() as s:
        rows = s.fetchall(
            "SELECT d.document_id, a.principal FROM rag_access a JOIN rag_index_docs d ON d.id = a.doc"
            f" WHERE a.tenant = {m}",
            (tenant,),
        )
    return {(r[0], r[1]) for r in rows}


def test_a_purged_user_leaves_every_access_list_and_a_list_left_empty_is_closed(store: Store) -> None:
    refs = [
        put(store, "acl1", "both", (ULY, VERA)),
        put(store, "acl1", "alone", (ULY,)),
        put(store, "acl1", "grouped", (ULY,), ("ops",)),
        put(store, "acl1", "open", ()),
        put(store, "acl2", "other", (ULY,)),
    ]
    stale = put(store, "acl1", "racing", (ULY,))  # an ingestion job read it before the purge...
    index = Index(store)

    async def write() -> None:
        for t in ("acl1", "acl2"):
            await index.ensure(t, "kb", SPEC)
        for ref in refs:
            await index.replace(ref, [ChunkIn(0, "alpha text", (), ref.document_id, 2)])

    asyncio.run(write())
    assert found(index, "acl1", ULY) == ["alone", "both", "grouped", "open"]

    counts = store.erase_rag_user("acl1", ULY, 2)  # batches of 2: the paging is exercised
    assert counts == {"rag_acls": 4, "rag_acl_index": 3}, counts
    asyncio.run(index.replace(stale, [ChunkIn(0, "alpha text", (), "racing", 2)]))  # ...and writes after it

    lists = {d.id: (d.users, d.groups) for d in store.list_documents("acl1", "kb")}
    assert lists == {
        "both": ((VERA,), ()),
        "alone": (("",), ()),
        "grouped": ((), ("ops",)),
        "open": ((), ()),
        "racing": (("",), ()),
    }
    assert not {p for p in principals(store, "acl1") if ULY in p[1]}
    assert ("alone", "u:") in principals(store, "acl1") and ("racing", "u:") in principals(store, "acl1")
    assert found(index, "acl1", ULY) == ["open"]
    assert found(index, "acl1", VERA) == ["both", "open"]
    assert found(index, "acl1", None) == ["open"]  # the closed lists are not the whole tenant's
    assert found(index, "acl1", None, everything=True) == ["alone", "both", "grouped", "open", "racing"]
    assert found(index, "acl2", ULY) == ["other"]  # another tenant's lists: untouched
    assert store.erase_rag_user("acl1", ULY, 2) == {"rag_acls": 0, "rag_acl_index": 0}  # idempotent
    asyncio.run(index.aclose())


_BEFORE_0029 = {  # rag_access as migration 0017 made it
    "sqlite": "CREATE TABLE old (tenant TEXT NOT NULL, collection TEXT NOT NULL, principal TEXT NOT NULL,"
    " doc INTEGER NOT NULL, PRIMARY KEY (tenant, collection, principal, doc));"
    " INSERT INTO old SELECT tenant, collection, principal, doc FROM rag_access; DROP TABLE rag_access;"
    " ALTER TABLE old RENAME TO rag_access; CREATE INDEX rag_access_doc ON rag_access(doc)",
    "postgres": "ALTER TABLE rag_access DROP CONSTRAINT rag_access_pkey;"
    " ALTER TABLE rag_access DROP COLUMN version; ALTER TABLE rag_access DROP COLUMN valid_until;"
    " ALTER TABLE rag_access ADD PRIMARY KEY (tenant, collection, principal, doc)",
}


def test_migration_0029_gives_each_access_row_its_documents_version_and_expiry(storage_url: str) -> None:
    """Access rows written before 0029 (no version, no valid_until): after it they carry their document's,
    so searches admit exactly what they did, the expired document still left out."""
    later, earlier = time.time() + 3600, time.time() - 3600
    docs = {"kept": (("amy",), None), "later": (("amy",), later), "gone": (("amy",), earlier), "open": ((), None)}

    def search(store: Store) -> list[str]:
        index = Index(store)

        async def go() -> list[str]:
            if await index.active("m1", "kb") is None:
                await index.ensure("m1", "kb", SPEC)
                for n, (doc_id, (users, until)) in enumerate(docs.items()):
                    ref = DocumentRef("m1", "kb", doc_id, n + 2, "T", {}, users, (), until, time.time(), "s")
                    await index.replace(ref, [ChunkIn(0, "alpha text", (), doc_id, 2)])
            q = SearchQuery("m1", "kb", "alpha", user="amy", mode="lexical")
            found = sorted(h.document_id for h in (await index.search(q)).hits)
            await index.aclose()
            return found

        return asyncio.run(go())

    store = open_store(storage_url)
    try:
        assert search(store) == ["kept", "later", "open"]
        db = store._db  # type: ignore[attr-defined]
        with db.transaction() as s:
            for statement in _BEFORE_0029[db.dialect.name].split(";"):
                s.execute(statement)
            s.execute("DELETE FROM keel_migrations WHERE version = 29")
    finally:
        store.close()
    store = open_store(storage_url)  # migrates
    try:
        db = store._db  # type: ignore[attr-defined]
        with db.session() as s:
            rows = s.fetchall(
                "SELECT d.document_id, a.version, a.valid_until FROM rag_access a JOIN rag_index_docs d"
                " ON d.id = a.doc WHERE a.principal = 'u:amy'"
            )
        assert sorted(rows) == sorted(
            (doc_id, n + 2, until) for n, (doc_id, (users, until)) in enumerate(docs.items()) if users
        )
        assert search(store) == ["kept", "later", "open"]
    finally:
        store.close()
