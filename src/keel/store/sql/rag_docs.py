"""RAG collections and documents over any SQL dialect (`RagDocStore`), each statement written once.

A put reads the document's row and writes the next version in one transaction (SQLite: under the write
lock; PostgreSQL: the row is locked FOR UPDATE, and a first insert that races another one conflicts on
the primary key and is tried again), so two puts of one id never share a version number.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from keel.store.protocols.rag_docs import CollectionRow, DocumentIn, DocumentRow, DocUpdate, PutResult
from keel.store.sql.dialect import Database, Row

_COLL = "tenant, name, model, chunking, description, created_at, updated_at, rerank, freshness, team"
_DOC = (
    "tenant, collection, id, version, title, source, content_hash, content_type, bytes, metadata, users, acl_groups,"
    " valid_until, status, stage, error, progress_done, progress_total, chunks, indexed_version, job_id, created_at,"
    " updated_at, deleted_at"
)
_PUT_TRIES = 5


def _dumps(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


def _json(value: Any) -> Any:
    return None if value is None else orjson.loads(value)


def _collection(r: Row) -> CollectionRow:
    return CollectionRow(r[0], r[1], r[2], orjson.loads(r[3]), r[4], r[5], r[6], _json(r[7]), _json(r[8]), r[9])


def _document(r: Row) -> DocumentRow:
    return DocumentRow(
        tenant=r[0], collection=r[1], id=r[2], version=r[3], title=r[4], source=r[5], content_hash=r[6],
        content_type=r[7], bytes=r[8], metadata=orjson.loads(r[9]), users=tuple(orjson.loads(r[10])),
        groups=tuple(orjson.loads(r[11])), valid_until=r[12], status=r[13], stage=r[14], error=r[15],
        progress_done=r[16], progress_total=r[17], chunks=r[18], indexed_version=r[19], job_id=r[20],
        created_at=r[21], updated_at=r[22], deleted_at=r[23],
    )  # fmt: skip


def _same(row: DocumentRow, doc: DocumentIn) -> bool:
    """Nothing the index keeps would change."""
    return (
        row.deleted_at is None
        and row.content_hash == doc.content_hash
        and row.title == doc.title
        and row.source == doc.source
        and _dumps(row.metadata) == _dumps(doc.metadata)
        and sorted(row.users) == sorted(doc.users)
        and sorted(row.groups) == sorted(doc.groups)
        and row.valid_until == doc.valid_until
    )


class SqlRagDocs:
    _db: Database

    # ---- collections -----------------------------------------------------------------------------

    def create_collection(self, row: CollectionRow) -> tuple[CollectionRow, bool]:
        d = self._db.dialect
        insert = (
            f"INSERT INTO rag_collections ({_COLL}) VALUES ({d.marks(10)}) ON CONFLICT DO NOTHING RETURNING {_COLL}"
        )
        find = f"SELECT {_COLL} FROM rag_collections WHERE tenant = {d.mark} AND name = {d.mark}"
        values = (
            row.tenant,
            row.name,
            row.model,
            _dumps(row.chunking),
            row.description,
            row.created_at,
            row.updated_at,
            None if row.rerank is None else _dumps(row.rerank),
            None if row.freshness is None else _dumps(row.freshness),
            row.team,
        )
        with self._db.transaction() as s:
            made = s.fetchone(insert, values)
            if made is not None:
                return _collection(made), True
            found = s.fetchone(find, (row.tenant, row.name))
        assert found is not None
        return _collection(found), False

    def get_collection(self, tenant: str, name: str) -> CollectionRow | None:
        m = self._db.dialect.mark
        with self._db.session() as s:
            row = s.fetchone(f"SELECT {_COLL} FROM rag_collections WHERE tenant = {m} AND name = {m}", (tenant, name))
        return None if row is None else _collection(row)

    def list_collections(self, tenant: str | None) -> list[CollectionRow]:
        m = self._db.dialect.mark
        where, params = (f" WHERE tenant = {m}", (tenant,)) if tenant is not None else ("", ())
        with self._db.session() as s:
            rows = s.fetchall(f"SELECT {_COLL} FROM rag_collections{where} ORDER BY tenant, name", params)
        return [_collection(r) for r in rows]

    def set_collection_spec(
        self, tenant: str, name: str, model: str, chunking: Mapping[str, Any], now: float
    ) -> CollectionRow | None:
        m = self._db.dialect.mark
        sql = (
            f"UPDATE rag_collections SET model = {m}, chunking = {m}, updated_at = {m}"
            f" WHERE tenant = {m} AND name = {m} RETURNING {_COLL}"
        )
        with self._db.transaction() as s:
            row = s.fetchone(sql, (model, _dumps(chunking), now, tenant, name))
        return None if row is None else _collection(row)

    def set_collection_rerank(
        self, tenant: str, name: str, rerank: Mapping[str, Any] | None, now: float
    ) -> CollectionRow | None:
        m = self._db.dialect.mark
        sql = f"UPDATE rag_collections SET rerank = {m}, updated_at = {m} WHERE tenant = {m} AND name = {m} RETURNING {_COLL}"
        with self._db.transaction() as s:
            row = s.fetchone(sql, (None if rerank is None else _dumps(rerank), now, tenant, name))
        return None if row is None else _collection(row)

    def set_collection_team(self, tenant: str, name: str, team: str | None) -> CollectionRow | None:
        m = self._db.dialect.mark
        sql = f"UPDATE rag_collections SET team = {m} WHERE tenant = {m} AND name = {m} RETURNING {_COLL}"
        with self._db.transaction() as s:
            row = s.fetchone(sql, (team, tenant, name))
        return None if row is None else _collection(row)

    def delete_collection(self, tenant: str, name: str) -> int:
        m = self._db.dialect.mark
        n = 0
        with self._db.transaction() as s:
            for table in ("rag_blobs", "rag_documents"):
                n += s.execute(f"DELETE FROM {table} WHERE tenant = {m} AND collection = {m}", (tenant, name))
            n += s.execute(f"DELETE FROM rag_collections WHERE tenant = {m} AND name = {m}", (tenant, name))
        return n

    # ---- documents -------------------------------------------------------------------------------

    def put_document(self, doc: DocumentIn, blob_key: str, now: float) -> tuple[DocumentRow, PutResult]:
        for _ in range(_PUT_TRIES):
            try:
                return self._put(doc, blob_key, now)
            except self._db.duplicate:  # a concurrent first put of the same id: read it and go again
                continue
        raise RuntimeError(f"document '{doc.id}': {_PUT_TRIES} concurrent puts collided")

    def _put(self, doc: DocumentIn, blob_key: str, now: float) -> tuple[DocumentRow, PutResult]:
        d = self._db.dialect
        m = d.mark
        key = (doc.tenant, doc.collection, doc.id)
        lock = " FOR UPDATE" if d.name == "postgres" else ""
        find = f"SELECT {_DOC} FROM rag_documents WHERE tenant = {m} AND collection = {m} AND id = {m}{lock}"
        common = (
            doc.title, doc.source, doc.content_hash, doc.content_type, doc.bytes, _dumps(dict(doc.metadata)),
            _dumps(list(doc.users)), _dumps(list(doc.groups)), doc.valid_until,
        )  # fmt: skip
        with self._db.transaction() as s:
            found = s.fetchone(find, key)
            row = None if found is None else _document(found)
            if row is not None and _same(row, doc):
                return row, "unchanged"
            if row is None:
                sql = f"INSERT INTO rag_documents ({_DOC}) VALUES ({d.marks(24)}) RETURNING {_DOC}"
                params: tuple[Any, ...] = (
                    *key, 1, *common, "queued", None, None, None, None, None, None, None, now, now, None
                )  # fmt: skip
                made = s.fetchone(sql, params)
            else:
                sql = (
                    f"UPDATE rag_documents SET version = {m}, title = {m}, source = {m}, content_hash = {m},"
                    f" content_type = {m}, bytes = {m}, metadata = {m}, users = {m}, acl_groups = {m},"
                    f" valid_until = {m}, status = 'queued', stage = NULL, error = NULL, progress_done = NULL,"
                    f" progress_total = NULL, job_id = NULL, updated_at = {m}, deleted_at = NULL"
                    f" WHERE tenant = {m} AND collection = {m} AND id = {m} RETURNING {_DOC}"
                )
                made = s.fetchone(sql, (row.version + 1, *common, now, *key))
            assert made is not None
            out = _document(made)
            s.execute(
                f"INSERT INTO rag_blobs (tenant, collection, id, version, blob_key) VALUES ({d.marks(5)})"
                " ON CONFLICT DO NOTHING",
                (*key, out.version, blob_key),
            )
        return out, "created" if row is None else "updated"

    def set_document_job(self, tenant: str, collection: str, id: str, version: int, job_id: str) -> bool:
        m = self._db.dialect.mark
        sql = (
            f"UPDATE rag_documents SET job_id = {m}"
            f" WHERE tenant = {m} AND collection = {m} AND id = {m} AND version = {m}"
        )
        with self._db.session() as s:
            return s.execute(sql, (job_id, tenant, collection, id, version)) > 0

    def update_document(
        self, tenant: str, collection: str, id: str, version: int, update: DocUpdate, now: float
    ) -> bool:
        m = self._db.dialect.mark
        sets: list[str] = [f"status = {m}", f"updated_at = {m}"]
        params: list[Any] = [update.status, now]
        for column, value in (
            ("stage", update.stage),
            ("error", update.error),
            ("progress_done", update.progress_done),
            ("progress_total", update.progress_total),
            ("chunks", update.chunks),
        ):
            if value is not None:
                sets.append(f"{column} = {m}")
                params.append(value)
            elif update.clear_error and column in ("stage", "error"):
                sets.append(f"{column} = NULL")
        if update.indexed:
            sets.append(f"indexed_version = {m}")
            params.append(version)
        sql = (
            f"UPDATE rag_documents SET {', '.join(sets)}"
            f" WHERE tenant = {m} AND collection = {m} AND id = {m} AND version = {m} AND deleted_at IS NULL"
        )
        with self._db.session() as s:
            return s.execute(sql, (*params, tenant, collection, id, version)) > 0

    def get_document(self, tenant: str, collection: str, id: str) -> DocumentRow | None:
        m = self._db.dialect.mark
        sql = f"SELECT {_DOC} FROM rag_documents WHERE tenant = {m} AND collection = {m} AND id = {m}"
        with self._db.session() as s:
            row = s.fetchone(sql, (tenant, collection, id))
        return None if row is None else _document(row)

    def list_documents(
        self,
        tenant: str,
        collection: str,
        *,
        status: str | None = None,
        after: str | None = None,
        limit: int = 100,
    ) -> list[DocumentRow]:
        m = self._db.dialect.mark
        where, params = [f"tenant = {m}", f"collection = {m}"], [tenant, collection]
        if status is not None:
            where.append(f"status = {m}")
            params.append(status)
        if after is not None:
            where.append(f"id > {m}")
            params.append(after)
        sql = f"SELECT {_DOC} FROM rag_documents WHERE {' AND '.join(where)} ORDER BY id LIMIT {m}"
        with self._db.session() as s:
            return [_document(r) for r in s.fetchall(sql, (*params, limit))]

    def document_hashes(self, tenant: str, collection: str) -> dict[str, tuple[str, int, bool]]:
        m = self._db.dialect.mark
        sql = f"SELECT id, content_hash, version, deleted_at FROM rag_documents WHERE tenant = {m} AND collection = {m}"
        with self._db.session() as s:
            return {r[0]: (r[1], r[2], r[3] is not None) for r in s.fetchall(sql, (tenant, collection))}

    def tombstone_document(self, tenant: str, collection: str, id: str, now: float) -> DocumentRow | None:
        m = self._db.dialect.mark
        sql = (
            f"UPDATE rag_documents SET status = 'deleted', deleted_at = COALESCE(deleted_at, {m}), updated_at = {m}"
            f" WHERE tenant = {m} AND collection = {m} AND id = {m} RETURNING {_DOC}"
        )
        with self._db.transaction() as s:
            row = s.fetchone(sql, (now, now, tenant, collection, id))
        return None if row is None else _document(row)

    def blob_keys(self, tenant: str, collection: str, id: str) -> list[str]:
        m = self._db.dialect.mark
        sql = f"SELECT blob_key FROM rag_blobs WHERE tenant = {m} AND collection = {m} AND id = {m} ORDER BY version"
        with self._db.session() as s:
            return [r[0] for r in s.fetchall(sql, (tenant, collection, id))]

    def add_blob_key(self, tenant: str, collection: str, id: str, version: int, key: str) -> None:
        d = self._db.dialect
        sql = (
            f"INSERT INTO rag_blobs (tenant, collection, id, version, blob_key) VALUES ({d.marks(5)})"
            " ON CONFLICT DO NOTHING"
        )
        with self._db.session() as s:
            s.execute(sql, (tenant, collection, id, version, key))

    def forget_blob_keys(self, tenant: str, collection: str, id: str, keys: Sequence[str]) -> None:
        if not keys:
            return
        d = self._db.dialect
        m = d.mark
        sql = (
            f"DELETE FROM rag_blobs WHERE tenant = {m} AND collection = {m} AND id = {m}"
            f" AND blob_key IN ({d.marks(len(keys))})"
        )
        with self._db.session() as s:
            s.execute(sql, (tenant, collection, id, *keys))

    def delete_documents(self, tenant: str, collection: str, ids: Sequence[str]) -> int:
        if not ids:
            return 0
        d = self._db.dialect
        m = d.mark
        n = 0
        with self._db.transaction() as s:
            for i in range(0, len(ids), 500):
                part = list(ids[i : i + 500])
                where = f"tenant = {m} AND collection = {m} AND id IN ({d.marks(len(part))})"
                s.execute(f"DELETE FROM rag_blobs WHERE {where}", (tenant, collection, *part))
                n += s.execute(f"DELETE FROM rag_documents WHERE {where}", (tenant, collection, *part))
        return n

    def working_documents(self, before: float, limit: int) -> list[DocumentRow]:
        m = self._db.dialect.mark
        sql = (
            f"SELECT {_DOC} FROM rag_documents WHERE status IN ('queued', 'parsing', 'chunking', 'embedding')"
            f" AND updated_at < {m} ORDER BY updated_at LIMIT {m}"
        )
        with self._db.session() as s:
            return [_document(r) for r in s.fetchall(sql, (before, limit))]

    def expired_tombstones(self, before: float, limit: int) -> list[tuple[str, str, str]]:
        m = self._db.dialect.mark
        sql = (
            "SELECT tenant, collection, id FROM rag_documents"
            f" WHERE deleted_at IS NOT NULL AND deleted_at < {m} ORDER BY deleted_at LIMIT {m}"
        )
        with self._db.session() as s:
            return [(r[0], r[1], r[2]) for r in s.fetchall(sql, (before, limit))]

    def delete_rag_tenant(self, tenant: str) -> dict[str, int]:
        m = self._db.dialect.mark
        counts = {}
        with self._db.transaction() as s:
            counts["rag_blob_rows"] = s.execute(f"DELETE FROM rag_blobs WHERE tenant = {m}", (tenant,))
            counts["rag_documents"] = s.execute(f"DELETE FROM rag_documents WHERE tenant = {m}", (tenant,))
            counts["rag_collections"] = s.execute(f"DELETE FROM rag_collections WHERE tenant = {m}", (tenant,))
        return counts
