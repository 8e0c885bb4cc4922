"""RAG index builds, documents, chunks and candidate queries over SQLite and PostgreSQL (`RagIndexStore`).

The two dialects differ in full text (PostgreSQL's `tsvector` with `ts_rank`; SQLite keeps none since
migration 0026, its BM25 runs in process over `rag_vectors` rows) and in how a metadata value is read (`json_extract` / `jsonb ->`); everything else is written once. Every candidate
query carries the same document conditions (`doc_conditions`): tenant and collection, the access list
joined through `rag_access`, freshness (`valid_until`) and the caller's filters, all before the LIMIT.
An access row carries its document's version and valid_until (decision 0072), so the documents a caller
may see (`rag_allowed`, for the in-process index) are one range of rag_access's key.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from keel.store.protocols.rag_index import (
    Access,
    BuildRow,
    BuildsChanged,
    BuildState,
    Candidates,
    ChunkRow,
    ChunkView,
    DocRow,
    Filter,
    VectorRows,
    query_terms,
)
from keel.store.sql.dialect import Database, Dialect, Row, Session
from keel.store.sql.rag_acl import write_access

_BUILD_COLS = "id, tenant, collection, model, spec, state, created_at, dim, error"
_DOC_COLS = "tenant, collection, document_id, version, title, metadata, users, groups_, valid_until, updated_at, source"
CHUNK_COLS = "build, doc, version, ordinal, text, heading_path, content_hash, tokens, embedding"
_COLUMNS = {"updated_at": "d.updated_at", "valid_until": "d.valid_until", "source": "d.source", "title": "d.title"}
_COLUMNS["document_id"] = "d.document_id"
_IN_CHUNK = 500
_DROP_PAGE = 2000  # chunks deleted a transaction when a build is dropped
_VECTOR_PAGE = 20_000  # rows a read of a build's vectors takes at a time
# PostgreSQL: an advisory lock's key for a name, in this schema only (two deployments or test schemas in one
# database never wait on each other's locks)
PG_LOCK_KEY = "hashtext(current_schema() || ':' || %s)"


def _build(r: Row) -> BuildRow:
    return BuildRow(r[0], r[1], r[2], r[3], r[4], r[5], float(r[6]), r[7], r[8])


def _doc(r: Row) -> DocRow:
    metadata = r[5] if isinstance(r[5], dict) else orjson.loads(r[5])
    return DocRow(
        r[0], r[1], r[2], int(r[3]), r[4], metadata, tuple(orjson.loads(r[6])), tuple(orjson.loads(r[7])),
        r[8], float(r[9]), r[10],
    )  # fmt: skip


def chunk_rows(build: str, docs: Sequence[tuple[int, int, Sequence[ChunkRow]]]) -> list[tuple[Any, ...]]:
    """rag_chunks rows (`CHUNK_COLS`) of `docs`' chunks."""
    return [
        (build, doc, version, c.ordinal, c.text, orjson.dumps(list(c.heading_path)).decode(), c.content_hash,
         c.tokens, c.embedding)
        for doc, version, chunks in docs
        for c in chunks
    ]  # fmt: skip


class Conditions:
    """SQL text and parameters of a WHERE clause, built in order."""

    def __init__(self, d: Dialect) -> None:
        self.d = d
        self.parts: list[str] = []
        self.params: list[Any] = []

    def add(self, sql: str, *params: Any) -> None:
        self.parts.append(sql)
        self.params.extend(params)

    def sql(self) -> str:
        return " AND ".join(self.parts)


def doc_conditions(
    c: Conditions,
    tenant: str,
    collection: str,
    access: Access,
    filters: Sequence[Filter],
    now: float | None,
    *,
    scoped: bool = True,
) -> None:
    """`scoped=False`: the caller already holds the documents to one tenant and collection (through their
    access rows), and the planner must not be offered the (tenant, collection) index instead of the key."""
    m = c.d.mark
    if scoped:
        c.add(f"d.tenant = {m} AND d.collection = {m}", tenant, collection)
    if not access.everything:
        principals = access.principals()
        c.add(
            f"d.id IN (SELECT a.doc FROM rag_access a WHERE a.tenant = {m} AND a.collection = {m}"
            f" AND a.principal IN ({c.d.marks(len(principals))}))",
            tenant,
            collection,
            *principals,
        )
    if now is not None:  # None: expired documents too (a search with exclude_expired false)
        c.add(f"(d.valid_until IS NULL OR d.valid_until > {m})", now)
    for f in filters:
        _filter(c, f)


def _filter(c: Conditions, f: Filter) -> None:
    """One filter on a column or a metadata value; a value of another type than the bound never matches."""
    m, pg = c.d.mark, c.d.name == "postgres"
    column = _COLUMNS.get(f.key)
    args: tuple[str, ...]
    kind: str | None
    if column is not None:
        value, kind, args = column, None, ()
    elif pg:
        value, kind, args = f"(d.metadata -> {m})", f"jsonb_typeof(d.metadata -> {m})", (f.key,)
    else:
        path = '$."' + f.key + '"'
        value, kind, args = f"json_extract(d.metadata, {m})", f"json_type(d.metadata, {m})", (path,)
    bound = c.d.json_mark if (pg and column is None) else m

    def enc(v: object) -> object:
        return orjson.dumps(v).decode() if (pg and column is None) else v

    if f.op == "exists":
        c.add(f"{value} IS {'NOT ' if f.value else ''}NULL", *args)
    elif f.op == "eq":
        c.add(f"{value} = {bound}", *args, enc(f.value))
    elif f.op == "ne":
        c.add(f"{value} IS DISTINCT FROM {bound}" if pg else f"{value} IS NOT {bound}", *args, enc(f.value))
    elif f.op in ("in", "nin"):
        values = list(f.value) if isinstance(f.value, (list, tuple)) else [f.value]
        marks = ", ".join([bound] * len(values)) or "NULL"
        test = f"{value} IN ({marks})"
        if f.op == "nin":
            test = f"({value} IS NULL OR NOT {test})"
            c.add(test, *args, *args, *map(enc, values))
        else:
            c.add(test, *args, *map(enc, values))
    else:
        op = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}[f.op]
        numeric = isinstance(f.value, (int, float)) and not isinstance(f.value, bool)
        if column is not None:
            c.add(f"{value} {op} {bound}", f.value)
        elif pg:
            c.add(
                f"{kind} = {m} AND {value} {op} {bound}", *args, "number" if numeric else "string", *args, enc(f.value)
            )
        else:
            kinds = "('integer', 'real')" if numeric else "('text')"
            c.add(f"{kind} IN {kinds} AND {value} {op} {bound}", *args, *args, f.value)


class SqlRagIndex:
    _db: Database

    # ---- builds ------------------------------------------------------------------------------

    def rag_builds(self, tenant: str, collection: str | None = None) -> list[BuildRow]:
        m = self._db.dialect.mark
        sql = f"SELECT {_BUILD_COLS} FROM rag_builds WHERE tenant = {m}"
        params: list[Any] = [tenant]
        if collection is not None:
            sql += f" AND collection = {m}"
            params.append(collection)
        with self._db.session() as s:
            return [_build(r) for r in s.fetchall(sql + " ORDER BY created_at, id", params)]

    def _lock_builds(self, s: Session, tenant: str, collection: str, *, exclusive: bool) -> None:
        """PostgreSQL: writes of documents (shared) wait for a change of a collection's builds (exclusive)
        and the other way round; SQLite's one writer already orders them."""
        if self._db.dialect.name == "postgres":
            kind = "" if exclusive else "_shared"
            s.execute(
                f"SELECT pg_advisory_xact_lock{kind}({PG_LOCK_KEY})", ("keel-rag:" + tenant + "\x1f" + collection,)
            )

    def rag_add_build(self, build: BuildRow) -> BuildRow:
        d = self._db.dialect
        with self._db.transaction() as s:
            self._lock_builds(s, build.tenant, build.collection, exclusive=True)
            if build.state == "active":
                found = s.fetchone(
                    f"SELECT {_BUILD_COLS} FROM rag_builds WHERE tenant = {d.mark} AND collection = {d.mark}"
                    " AND state = 'active'",
                    (build.tenant, build.collection),
                )
                if found is not None:
                    return _build(found)
            s.execute(
                f"INSERT INTO rag_builds ({_BUILD_COLS}) VALUES ({d.marks(9)})",
                (build.id, build.tenant, build.collection, build.model, build.spec, build.state, build.created_at,
                 build.dim, build.error),
            )  # fmt: skip
        return build

    def rag_set_state(self, build: str, state: BuildState, error: str | None = None) -> None:
        m = self._db.dialect.mark
        ended = time.time() if state in ("retired", "failed") else None
        with self._db.session() as s:
            s.execute(
                f"UPDATE rag_builds SET state = {m}, error = {m}, ended_at = {m} WHERE id = {m}",
                (state, error, ended, build),
            )

    def rag_ended_builds(self, before: float, limit: int = 100) -> list[BuildRow]:
        m = self._db.dialect.mark
        with self._db.session() as s:
            rows = s.fetchall(
                f"SELECT {_BUILD_COLS} FROM rag_builds WHERE ended_at < {m} AND state IN ('retired', 'failed')"
                f" ORDER BY ended_at LIMIT {m}",
                (before, limit),
            )
        return [_build(r) for r in rows]

    def rag_activate(self, tenant: str, collection: str, build: str) -> None:
        m = self._db.dialect.mark
        with self._db.transaction() as s:
            self._lock_builds(s, tenant, collection, exclusive=True)
            row = s.fetchone(
                f"SELECT state FROM rag_builds WHERE id = {m} AND tenant = {m} AND collection = {m}",
                (build, tenant, collection),
            )
            if row is None or row[0] not in ("shadow", "active"):
                raise ValueError(f"build {build!r} is not a shadow of {tenant}/{collection}")
            s.execute(
                f"UPDATE rag_builds SET state = 'retired', ended_at = {m} WHERE tenant = {m} AND collection = {m}"
                f" AND state = 'active' AND id <> {m}",
                (time.time(), tenant, collection, build),
            )
            s.execute(f"UPDATE rag_builds SET state = 'active' WHERE id = {m}", (build,))

    def rag_prepare(self, build: str) -> None:
        """Before `build` serves: what the database needs to search it (SQLite: nothing)."""

    def rag_drop_build(self, build: str) -> int:
        m = self._db.dialect.mark
        with self._db.session() as s:
            row = s.fetchone(f"SELECT state FROM rag_builds WHERE id = {m}", (build,))
        if row is None:
            return 0
        if row[0] not in ("retired", "failed"):
            raise ValueError(f"build {build!r} is {row[0]}: only a retired or failed build is dropped")
        self._before_drop(build)
        dropped = 0
        while True:  # a page a transaction: writers of other builds wait at most one page
            with self._db.transaction() as s:
                n = self._drop_chunks(
                    s, f"id IN (SELECT id FROM rag_chunks WHERE build = {m} LIMIT {_DROP_PAGE})", (build,)
                )
            dropped += n
            if n < _DROP_PAGE:
                break
        with self._db.session() as s:
            s.execute(f"DELETE FROM rag_builds WHERE id = {m} AND state IN ('retired', 'failed')", (build,))
        return dropped

    def _before_drop(self, build: str) -> None:
        """Before a build's chunks go: a backend that indexes each build elsewhere too drops that index."""

    # ---- writes ------------------------------------------------------------------------------

    def rag_write(self, doc: DocRow, builds: Mapping[str, Sequence[ChunkRow]], *, every: bool = False) -> int:
        d = self._db.dialect
        m = d.mark
        for dim in {len(c.embedding) // 4 for chunks in builds.values() for c in chunks}:
            self._before_write(dim, list(builds))
        with self._db.transaction() as s:
            self._lock_builds(s, doc.tenant, doc.collection, exclusive=False)
            doc = self._current_acl(s, doc)
            if every:
                now = s.fetchall(
                    f"SELECT id FROM rag_builds WHERE tenant = {m} AND collection = {m} AND state IN ('active', 'shadow')",
                    (doc.tenant, doc.collection),
                )
                if {r[0] for r in now} != set(builds):
                    raise BuildsChanged(f"{doc.tenant}/{doc.collection}: the builds being written changed")
            found = s.fetchone(
                f"SELECT id, version FROM rag_index_docs WHERE tenant = {m} AND collection = {m} AND document_id = {m}",
                (doc.tenant, doc.collection, doc.document_id),
            )
            if found is not None and int(found[1]) == doc.version and builds:
                marks = d.marks(len(builds))
                have = s.fetchall(
                    f"SELECT DISTINCT build FROM rag_chunks WHERE doc = {m} AND version = {m} AND build IN ({marks})",
                    (found[0], doc.version, *builds),
                )
                if len(have) == len(builds):
                    return 0
            values = (
                doc.tenant, doc.collection, doc.document_id, doc.version, doc.title, orjson.dumps(dict(doc.metadata)).decode(),
                orjson.dumps(list(doc.users)).decode(), orjson.dumps(list(doc.groups)).decode(), doc.valid_until,
                doc.updated_at, doc.source,
            )  # fmt: skip
            if found is None:
                cols = _DOC_COLS.split(", ")
                row = s.fetchone(
                    f"INSERT INTO rag_index_docs ({_DOC_COLS}) VALUES ({d.values(cols, frozenset({'metadata'}))})"
                    " RETURNING id",
                    values,
                )
                assert row is not None
                doc_id = int(row[0])
            else:
                doc_id = int(found[0])
                sets = ", ".join(f"{c} = {d.json_mark if c == 'metadata' else m}" for c in _DOC_COLS.split(", ")[3:])
                s.execute(f"UPDATE rag_index_docs SET {sets} WHERE id = {m}", (*values[3:], doc_id))
            write_access(s, d, doc.tenant, doc.collection, doc_id, doc.version, doc.valid_until, doc.users, doc.groups)
            written = 0
            self._order_ids(s, [b for b, chunks in builds.items() if chunks])
            for build, chunks in builds.items():
                self._drop_chunks(s, f"doc = {m} AND build = {m}", (doc_id, build))
                written += self._insert_chunks(s, build, [(doc_id, doc.version, chunks)])
                if chunks:
                    self._set_dim(s, build, len(chunks[0].embedding) // 4)
            return written

    def _current_acl(self, s: Session, doc: DocRow) -> DocRow:
        """The document's access lists as they are now (a purge may have rewritten them since the job read
        them), read under FOR SHARE so a purge's rewrite waits for this write or this write for it."""
        d = self._db.dialect
        lock = " FOR SHARE" if d.name == "postgres" else ""
        row = s.fetchone(
            f"SELECT users, acl_groups FROM rag_documents WHERE tenant = {d.mark} AND collection = {d.mark}"
            f" AND id = {d.mark}{lock}",
            (doc.tenant, doc.collection, doc.document_id),
        )
        if row is None:
            return doc
        return dataclasses.replace(doc, users=tuple(orjson.loads(row[0])), groups=tuple(orjson.loads(row[1])))

    def rag_copy(self, build: str, docs: Sequence[tuple[int, int, Sequence[ChunkRow]]]) -> int:
        d = self._db.dialect
        m = d.mark
        docs = [(doc, version, chunks) for doc, version, chunks in docs if chunks]
        if not docs:
            return 0
        dim = len(docs[0][2][0].embedding) // 4
        self._before_write(dim, [build])
        ids = sorted({doc for doc, _, _ in docs})
        within = f"IN ({d.marks(len(ids))})"
        lock = " FOR UPDATE" if d.name == "postgres" else ""  # SQLite: its one writer
        with self._db.transaction() as s:
            # the documents' rows stay locked to commit: a write or removal of one racing this copy either
            # commits first (the version check fails, or the row is gone) or waits and replaces the copy.
            # All of them before the id lock below, in id order: a writer takes its document's row before
            # that lock too, so no writer holding it ever waits for a row held here
            rows = s.fetchall(f"SELECT id, version FROM rag_index_docs WHERE id {within} ORDER BY id{lock}", ids)
            now = {int(r[0]): int(r[1]) for r in rows}
            copied = f"SELECT DISTINCT doc FROM rag_chunks WHERE build = {m} AND doc {within}"
            have = {int(r[0]) for r in s.fetchall(copied, (build, *ids))}
            due = [(doc, v, chunks) for doc, v, chunks in docs if now.get(doc) == v and doc not in have]
            self._order_ids(s, [build] if due else [])
            written = self._insert_chunks(s, build, due)
            if written:
                self._set_dim(s, build, dim)
            return written

    def _order_ids(self, s: Session, builds: Sequence[str]) -> None:
        """Before a transaction's first chunk of `builds` takes an id, and held to its commit: a build's
        chunks are committed in id order, as `rag_vectors(build, after)` (a process's in-process index reading
        "the rows since N") needs. PostgreSQL hands out a sequence's ids at insert, not at commit: a write
        that took ids below another's and committed after it was skipped for good by every process that read
        in between. Writers of one build wait for each other from insert to commit (milliseconds; the embedder
        before is not held); builds in sorted order, so no two writers wait on each other in a cycle. SQLite's
        one writer already orders them."""
        if self._db.dialect.name == "postgres":
            for build in sorted(builds):
                s.execute(f"SELECT pg_advisory_xact_lock({PG_LOCK_KEY})", ("keel-rag-ids:" + build,))

    def _insert_chunks(self, s: Session, build: str, docs: Sequence[tuple[int, int, Sequence[ChunkRow]]]) -> int:
        """The chunks of `docs` (document row, version, chunks) into `build`, ids in order; their count."""
        rows = chunk_rows(build, docs)
        if rows:
            s.executemany(f"INSERT INTO rag_chunks ({CHUNK_COLS}) VALUES ({self._db.dialect.marks(9)})", rows)
        return len(rows)

    def _set_dim(self, s: Session, build: str, dim: int) -> None:
        """A build's vector width, recorded with its first chunks (once a write, not once a document)."""
        m = self._db.dialect.mark
        s.execute(f"UPDATE rag_builds SET dim = {m} WHERE id = {m} AND dim IS NULL", (dim, build))

    def _before_write(self, dim: int, builds: Sequence[str]) -> None:
        """Before a write's transaction into `builds`: a backend that keeps vectors elsewhere too makes
        their table (and what an active build needs to be searched there)."""

    def _drop_chunks(self, s: Session, where: str, params: Sequence[Any]) -> int:
        return s.execute(f"DELETE FROM rag_chunks WHERE {where}", params)

    def rag_remove(self, tenant: str, collection: str, document_id: str) -> int:
        m = self._db.dialect.mark
        with self._db.transaction() as s:
            row = s.fetchone(
                f"SELECT id FROM rag_index_docs WHERE tenant = {m} AND collection = {m} AND document_id = {m}",
                (tenant, collection, document_id),
            )
            if row is None:
                return 0
            n = self._drop_chunks(s, f"doc = {m}", (row[0],))
            s.execute(f"DELETE FROM rag_access WHERE doc = {m}", (row[0],))
            s.execute(f"DELETE FROM rag_index_docs WHERE id = {m}", (row[0],))
            return n

    def rag_purge(self, tenant: str, collection: str | None = None) -> int:
        m = self._db.dialect.mark
        where, params = f"tenant = {m}", [tenant]
        if collection is not None:
            where, params = where + f" AND collection = {m}", [tenant, collection]
        with self._db.session() as s:
            for row in s.fetchall(f"SELECT id FROM rag_builds WHERE {where}", params):
                self._before_drop(row[0])
        with self._db.transaction() as s:
            n = self._drop_chunks(s, f"build IN (SELECT id FROM rag_builds WHERE {where})", params)
            n += self._drop_chunks(s, f"doc IN (SELECT id FROM rag_index_docs WHERE {where})", params)
            for table in ("rag_access", "rag_index_docs", "rag_builds"):
                s.execute(f"DELETE FROM {table} WHERE {where}", params)
            if collection is None:
                s.execute(f"DELETE FROM rag_key_groups WHERE tenant = {m}", (tenant,))
            return n

    # ---- reads -------------------------------------------------------------------------------

    def rag_source_chunks(self, build: str, after: int, limit: int) -> list[tuple[int, int, str, ChunkRow]]:
        m = self._db.dialect.mark
        # SQLite's planner takes the (build, id) index for `build = ?` and sorts the build's every row per
        # page (0.2 s at 100,000 chunks, 300 pages a re-index); the (doc, build) index walks documents
        # from `after` in order and stops at the limit (2-15 ms)
        by_doc = " INDEXED BY rag_chunks_doc" if self._db.dialect.name == "sqlite" else ""
        with self._db.session() as s:
            rows = s.fetchall(
                "SELECT c.doc, c.version, d.title, c.ordinal, c.text, c.heading_path, c.content_hash, c.tokens,"
                " c.embedding FROM rag_chunks c JOIN rag_index_docs d ON d.id = c.doc"
                f" WHERE c.build = {m} AND c.doc IN (SELECT DISTINCT doc FROM rag_chunks{by_doc} WHERE build = {m}"
                f" AND doc > {m} ORDER BY doc LIMIT {m}) ORDER BY c.doc, c.ordinal",
                (build, build, after, limit),
            )
        return [
            (int(r[0]), int(r[1]), r[2], ChunkRow(r[3], r[4], tuple(orjson.loads(r[5])), r[6], r[7], bytes(r[8])))
            for r in rows
        ]

    def rag_count(self, build: str) -> int:
        with self._db.session() as s:
            row = s.fetchone(f"SELECT count(*) FROM rag_chunks WHERE build = {self._db.dialect.mark}", (build,))
        return int(row[0]) if row else 0

    def rag_count_documents(self, build: str) -> int:
        with self._db.session() as s:
            row = s.fetchone(
                f"SELECT count(DISTINCT doc) FROM rag_chunks WHERE build = {self._db.dialect.mark}", (build,)
            )
        return int(row[0]) if row else 0

    def rag_vectors(self, build: str, after: int) -> VectorRows:
        m = self._db.dialect.mark
        rows: list[Row] = []
        with self._db.session() as s:
            # before each search, for every build searched in process: nothing new is the common answer,
            # and the (build, id) index gives it at once; bounded by it, the read is planned on the range
            # it reads (PostgreSQL took `build = X AND id > N` alone for a third of a re-indexed table and
            # scanned all of it, in parallel: 70-90 ms a search while a shadow held the ids above N)
            top = s.fetchone(f"SELECT max(id) FROM rag_chunks WHERE build = {m}", (build,))
            if top is None or top[0] is None or int(top[0]) <= after:
                return VectorRows([], [], [], [], [])
            while True:
                page = s.fetchall(
                    f"SELECT id, doc, version, embedding, text FROM rag_chunks WHERE build = {m} AND id > {m}"
                    f" AND id <= {m} ORDER BY id LIMIT {_VECTOR_PAGE}",
                    (build, rows[-1][0] if rows else after, top[0]),
                )
                rows += page
                if len(page) < _VECTOR_PAGE:
                    break
        return VectorRows(
            [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows], [bytes(r[3]) for r in rows],
            [r[4] for r in rows],
        )  # fmt: skip

    def rag_allowed(
        self, tenant: str, collection: str, access: Access, filters: Sequence[Filter], now: float | None
    ) -> list[tuple[int, int]]:
        c = Conditions(self._db.dialect)
        m = c.d.mark
        principals = access.principals()
        who = f"x.tenant = {m} AND x.collection = {m} AND x.principal IN ({c.d.marks(len(principals))})"
        if access.everything:
            doc_conditions(c, tenant, collection, access, filters, now)
            sql = f"SELECT d.id, d.version FROM rag_index_docs d WHERE {c.sql()}"
        elif not filters:  # the access rows alone (they carry their document's version and valid_until, 0072):
            # one range of their key, never a read of each document's row
            c.add(who, tenant, collection, *principals)
            if now is not None:
                c.add(f"(x.valid_until IS NULL OR x.valid_until > {m})", now)
            with self._db.session() as s:
                rows = s.fetchall(f"SELECT x.doc, x.version FROM rag_access x WHERE {c.sql()}", c.params)
            return list(dict.fromkeys((int(r[0]), int(r[1])) for r in rows))  # one admitted through two principals
        else:  # the caller's documents, from the access list's key: the access rows carry their document's
            # tenant and collection, so d is reached by its key
            if c.d.name == "postgres":  # as an array, each document by its key: 2.0 ms against 3.8 for the
                # join at 2,000 of 20,000 documents (PostgreSQL hashed all of them)
                clause, source, distinct = (
                    f"d.id = ANY(ARRAY(SELECT x.doc FROM rag_access x WHERE {who}))",
                    "rag_index_docs d",
                    "",
                )
            else:
                clause, source, distinct = who, "rag_access x JOIN rag_index_docs d ON d.id = x.doc", "DISTINCT "
            c.add(clause, tenant, collection, *principals)
            everything = dataclasses.replace(access, everything=True)
            doc_conditions(c, tenant, collection, everything, filters, now, scoped=False)
            sql = f"SELECT {distinct}d.id, d.version FROM {source} WHERE {c.sql()}"
        with self._db.session() as s:
            return [(int(r[0]), int(r[1])) for r in s.fetchall(sql, c.params)]

    def rag_lexical(
        self,
        build: str,
        collection: str,
        text: str,
        access: Access,
        filters: Sequence[Filter],
        now: float | None,
        limit: int,
    ) -> Candidates:
        d = self._db.dialect
        m = d.mark
        terms = query_terms(text)
        if not terms:
            return Candidates([], [])
        if d.name == "sqlite":  # rag_fts was dropped (0026): BM25 runs in process (keel.rag.index_terms)
            raise NotImplementedError("SQLite keeps no full-text table: search it through keel.rag.index.Index")
        c = Conditions(d)
        c.add(f"c.tsv @@ q.q AND c.build = {m} AND c.version = d.version", build)
        doc_conditions(c, access.tenant, collection, access, filters, now)
        sql = (
            f"SELECT c.id, ts_rank(c.tsv, q.q) AS score FROM (SELECT to_tsquery('english', {m}) AS q) q,"
            f" rag_chunks c JOIN rag_index_docs d ON d.id = c.doc WHERE {c.sql()} ORDER BY score DESC, c.id LIMIT {m}"
        )
        params = [" | ".join(terms), *c.params, limit]
        with self._db.session() as s:
            rows = s.fetchall(sql, params)
        return Candidates([int(r[0]) for r in rows], [float(r[1]) for r in rows])

    def rag_vector_search(
        self,
        build: str,
        collection: str,
        vector: bytes,
        access: Access,
        filters: Sequence[Filter],
        now: float | None,
        limit: int,
    ) -> Candidates | None:
        return None

    def rag_searches_vectors(self, dim: int) -> bool:
        return False

    def rag_embeddings(self, ids: Sequence[int]) -> VectorRows:
        rows: list[Row] = []
        with self._db.session() as s:
            for i in range(0, len(ids), _IN_CHUNK):
                part = list(ids[i : i + _IN_CHUNK])
                rows += s.fetchall(
                    f"SELECT id, doc, version, embedding FROM rag_chunks WHERE id IN ({self._db.dialect.marks(len(part))})",
                    part,
                )
        rows.sort(key=lambda r: int(r[0]))
        return VectorRows([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows], [bytes(r[3]) for r in rows])

    def rag_chunks(self, ids: Sequence[int]) -> list[ChunkView]:
        out: list[ChunkView] = []
        doc_cols = ", ".join("d." + c for c in _DOC_COLS.split(", "))
        with self._db.session() as s:
            for i in range(0, len(ids), _IN_CHUNK):
                part = list(ids[i : i + _IN_CHUNK])
                rows = s.fetchall(
                    f"SELECT c.id, c.build, c.ordinal, c.text, c.heading_path, {doc_cols} FROM rag_chunks c"
                    f" JOIN rag_index_docs d ON d.id = c.doc WHERE c.id IN ({self._db.dialect.marks(len(part))})",
                    part,
                )
                out.extend(
                    ChunkView(int(r[0]), r[1], int(r[2]), r[3], tuple(orjson.loads(r[4])), _doc(r[5:])) for r in rows
                )
        return out

    def rag_key_groups(self, key_id: str) -> tuple[str, ...]:
        with self._db.session() as s:
            row = s.fetchone(f"SELECT groups_ FROM rag_key_groups WHERE key_id = {self._db.dialect.mark}", (key_id,))
        return tuple(orjson.loads(row[0])) if row else ()

    def rag_set_key_groups(self, tenant: str, key_id: str, groups: Sequence[str], now: float) -> None:
        d = self._db.dialect
        with self._db.session() as s:
            s.execute(
                f"INSERT INTO rag_key_groups (key_id, tenant, groups_, updated_at) VALUES ({d.marks(4)})"
                " ON CONFLICT (key_id) DO UPDATE SET tenant = excluded.tenant, groups_ = excluded.groups_,"
                " updated_at = excluded.updated_at",
                (key_id, tenant, orjson.dumps(list(groups)).decode(), now),
            )
