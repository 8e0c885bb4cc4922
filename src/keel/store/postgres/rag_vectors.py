"""pgvector for the RAG index: chunk vectors also in `rag_vectors_<dim>`, with an HNSW index per build
(partial: `WHERE build = '<id>'`), searched in the database with the access filter and the caller's filters
in the same query.

The table of a dimension is made on the first write of vectors that wide (pgvector's column has one
dimension), outside the write's transaction and under an advisory lock; where the extension cannot be
created the index searches vectors in process as on SQLite (`rag_vector_search` → None). Rows go with their
chunk (ON DELETE CASCADE). Chunks and vectors are written by binary COPY (decision 0072). A build's HNSW
index is made when it starts to serve: at its first write when it is made active (a new collection's, still
empty), else by `rag_prepare` just before a shadow is activated, built in one pass, concurrently, in one
backend (decision 0069: filling a shadow of 100,000 chunks into an HNSW index shared by every build cost ~5
ms of database CPU a chunk, one insert at a time, and slowed every search on a shared machine for the 18
minutes it took). A build without its index (a shadow searched by name) is searched exactly. Dropping a
build drops its index first, so its deletes never walk an HNSW graph. pgvector before 0.8 filters after the
HNSW scan, which can come back short of `limit` when the caller may read a small share of the build: then
the query runs again exact (ordered by an expression no index serves), so a filter never starves the
candidates; from 0.8 on, iterative scans do it. Such a caller's next searches of the build go exact at once
for `SHORT_S` (decision 0067: at 100,000 chunks and an ACL admitting 10 %, the HNSW attempt was half the
vector query's time, and always short).
"""

from __future__ import annotations

import re
import struct
import threading
import time
from collections.abc import Sequence
from typing import Protocol, cast

from keel.store.protocols.rag_index import Access, Candidates, ChunkRow, Filter
from keel.store.sql.dialect import Database, Row, Session
from keel.store.sql.rag_index import CHUNK_COLS, PG_LOCK_KEY, Conditions, chunk_rows, doc_conditions

_DDL = """
CREATE TABLE IF NOT EXISTS rag_vectors_{dim} (
  chunk BIGINT PRIMARY KEY REFERENCES rag_chunks(id) ON DELETE CASCADE,
  build TEXT NOT NULL,
  doc BIGINT NOT NULL,
  version INTEGER NOT NULL,
  embedding vector({dim}) NOT NULL
);
CREATE INDEX IF NOT EXISTS rag_vectors_{dim}_build ON rag_vectors_{dim} (build, doc)
"""
EF_SEARCH = 200
SHORT_S = 60.0  # how long a search found short after the HNSW scan sends the same caller's straight to exact
_SHORT_KEPT = 4096
_BUILD_ID = re.compile(r"[a-z0-9_]{1,48}")  # ids `Index` makes ("b_" + hex): safe in a name and a literal
_HNSW_MEMORY_MB = (64, 4096)  # maintenance_work_mem bounds for one build's index (the graph fits: one pass)
HNSW_WAIT_S = 3600.0  # how long a swap or a drop waits for another session's index change
_HNSW_ROW_BYTES = 600  # an element's neighbour lists and header beside its vector, for the memory asked


def hnsw_name(build: str) -> str | None:
    """The name of `build`'s HNSW index (None: an id this store never makes, searched exactly)."""
    return f"rag_hnsw_{build}" if _BUILD_ID.fullmatch(build) else None


# One concurrent index change at a time over a schema's RAG vector tables: a CREATE INDEX CONCURRENTLY
# (a build's HNSW index) and a DROP INDEX CONCURRENTLY (an ended build's) on one table deadlocked, each
# waiting for the other's snapshot (decision 0070).
_INDEX_CHANGES = "keel_rag_index_changes"


def _take(s: Session, key: str, *, wait: bool, what: str) -> bool:
    """This session's advisory lock on `key` (per schema), only ever tried: a session blocked in
    `pg_advisory_lock` holds a snapshot, which the holder's CREATE INDEX CONCURRENTLY waits for — a deadlock
    (decision 0070: four writers on a new collection hit it at once). `wait`: try every 0.2 s for at most
    HNSW_WAIT_S; else False at once when another session holds it."""
    deadline = time.monotonic() + HNSW_WAIT_S
    while True:
        got = s.fetchone(f"SELECT pg_try_advisory_lock({PG_LOCK_KEY})", (key,))
        if got is not None and got[0]:
            return True
        if not wait:
            return False
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited over {HNSW_WAIT_S:.0f} s for another session's index change {what}")
        time.sleep(0.2)


def _release(s: Session, key: str) -> None:
    s.execute(f"SELECT pg_advisory_unlock({PG_LOCK_KEY})", (key,))


def _literal(blob: bytes) -> str:
    import numpy as np

    return "[" + ",".join(map(repr, np.frombuffer(blob, dtype=np.float32).astype(float).tolist())) + "]"


def _big_endian(blob: bytes) -> bytes:
    import numpy as np

    return np.frombuffer(blob, dtype=np.float32).astype(">f4").tobytes()


class _Copies(Protocol):
    def copy_rows(self, table: str, columns: Sequence[str], types: Sequence[str], rows: Sequence[Row]) -> None: ...


_CHUNK_TYPES = ("int8", "text", "int8", "int4", "int4", "text", "text", "text", "int4", "bytea")  # id, CHUNK_COLS
_VECTOR_TYPES = ("int8", "text", "int8", "int4", "bytea")


class PgRagVectors:
    _db: Database
    _rag_dims: dict[int, bool]
    _rag_lock: threading.Lock
    _rag_short: dict[tuple[object, ...], float]  # (build, who, filters) -> until when to go exact at once
    _rag_indexed: set[str]  # builds whose HNSW index this process made or found not due (shadows)

    def _before_write(self, dim: int, builds: Sequence[str]) -> None:
        """An empty active build (a new collection's) gets its HNSW index before its first chunk, and inserts
        keep it current; a shadow, or a build swapped in without one, gets it from `rag_prepare` (before its
        swap, or once a process searches it in the database), never from a write."""
        if not self._vector_table(dim):
            return
        for build in builds:
            if build not in self._rag_indexed:
                with self._db.session() as s:
                    row = s.fetchone(
                        f"SELECT state, EXISTS (SELECT 1 FROM rag_vectors_{int(dim)} WHERE build = %s)"
                        " FROM rag_builds WHERE id = %s",
                        (build, build),
                    )
                new = row is not None and row[0] == "active" and not row[1]
                if new and not self._make_hnsw(build, dim, wait=False):
                    continue  # another session is making it (its concurrent build takes this write's rows)
                self._rag_indexed.add(build)

    def rag_prepare(self, build: str) -> None:
        with self._db.session() as s:
            row = s.fetchone("SELECT dim FROM rag_builds WHERE id = %s", (build,))
        if row is not None and row[0] is not None and self._vector_table(int(row[0])):
            self._make_hnsw(build, int(row[0]), wait=True)

    def _make_hnsw(self, build: str, dim: int, *, wait: bool) -> bool:
        """`build`'s HNSW index, built concurrently (writes go on) in one pass with the memory it needs, in
        one backend; a half-made one (a failed build) is remade. One maker a build (`keel_rag_hnsw:<build>`;
        `wait` False: when another session makes it, give up at once — its build takes this write's rows),
        and one concurrent index change at a time in the schema (`_INDEX_CHANGES`). True: the index is there."""
        name = hnsw_name(build)
        if name is None:
            return True
        with self._db.session() as s:
            if not _take(s, "keel_rag_hnsw:" + build, wait=wait, what=f"making {name}"):
                return False
            try:
                valid = s.fetchone("SELECT i.indisvalid FROM pg_index i WHERE i.indexrelid = to_regclass(%s)", (name,))
                if valid is not None and valid[0]:
                    return True
                _take(s, _INDEX_CHANGES, wait=True, what=f"to make {name}")
                try:
                    if valid is not None:
                        s.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")
                    self._create_hnsw(s, name, build, dim)
                finally:
                    _release(s, _INDEX_CHANGES)
                return True
            finally:
                _release(s, "keel_rag_hnsw:" + build)

    def _create_hnsw(self, s: Session, name: str, build: str, dim: int) -> None:
        rows = s.fetchone(f"SELECT count(*) FROM rag_vectors_{int(dim)} WHERE build = %s", (build,))
        low, high = _HNSW_MEMORY_MB
        mb = min(high, max(low, int(rows[0] if rows else 0) * (dim * 4 + _HNSW_ROW_BYTES) * 5 // 4 >> 20))
        s.execute(f"SET maintenance_work_mem = '{mb}MB'")
        s.execute("SET max_parallel_maintenance_workers = 0")
        try:
            s.execute(
                f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {name} ON rag_vectors_{int(dim)}"
                f" USING hnsw (embedding vector_cosine_ops) WHERE build = '{build}'"
            )
        finally:
            s.execute("RESET maintenance_work_mem")
            s.execute("RESET max_parallel_maintenance_workers")

    def _before_drop(self, build: str) -> None:
        name = hnsw_name(build)
        if name is not None:
            with self._db.session() as s:
                if s.fetchone("SELECT to_regclass(%s)", (name,)) == (None,):
                    return
                _take(s, _INDEX_CHANGES, wait=True, what=f"to drop {name}")
                try:
                    s.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")
                finally:
                    _release(s, _INDEX_CHANGES)

    def _vector_table(self, dim: int) -> bool:
        """Is there a pgvector table for `dim` (made now if the extension can be had)?"""
        if not hasattr(self, "_rag_dims"):
            self._rag_dims, self._rag_lock, self._rag_short, self._rag_indexed = {}, threading.Lock(), {}, set()
        known = self._rag_dims.get(dim)
        if known is not None:
            return known
        if not 1 <= dim <= 16000:
            return False
        with self._rag_lock:
            if dim not in self._rag_dims:
                self._rag_dims[dim] = self._make_table(dim)
        return self._rag_dims[dim]

    def _make_table(self, dim: int) -> bool:
        try:
            with self._db.transaction() as s:
                s.execute("SELECT pg_advisory_xact_lock(hashtext('keel_rag_vectors'))")
                if s.fetchone("SELECT 1 FROM pg_extension WHERE extname = 'vector'") is None:
                    if s.fetchone("SELECT 1 FROM pg_available_extensions WHERE name = 'vector'") is None:
                        return False
                    s.execute("CREATE EXTENSION IF NOT EXISTS vector")
                for statement in _DDL.format(dim=int(dim)).split(";"):
                    s.execute(statement)
        except Exception as exc:
            if not self._db.refused(exc) and "vector" not in str(exc):
                raise
            return False
        return True

    def _insert_chunks(self, s: Session, build: str, docs: Sequence[tuple[int, int, Sequence[ChunkRow]]]) -> int:
        """A write's chunks by binary COPY (decision 0072: a re-index's database CPU about halved against an
        INSERT a chunk with each vector parsed from text), their ids taken first from the sequence, in order
        (the caller holds the build's id-order lock); with pgvector, their vectors too, in pgvector's binary
        form."""
        rows = chunk_rows(build, docs)
        if not rows:
            return 0
        copies = cast(_Copies, s)
        ids = [
            int(r[0])
            for r in s.fetchall(
                "SELECT nextval(pg_get_serial_sequence('rag_chunks', 'id')) FROM generate_series(1, %s)", (len(rows),)
            )
        ]
        ids.sort()
        copies.copy_rows(
            "rag_chunks",
            ("id", *CHUNK_COLS.split(", ")),
            _CHUNK_TYPES,
            [(i, *r) for i, r in zip(ids, rows, strict=True)],
        )
        dim = len(rows[0][-1]) // 4
        if self._rag_dims.get(dim):
            head = struct.pack(">hh", dim, 0)  # pgvector's binary form: dimensions, a zero, big-endian float4s
            copies.copy_rows(
                f"rag_vectors_{int(dim)}", ("chunk", "build", "doc", "version", "embedding"), _VECTOR_TYPES,
                [(i, r[0], r[1], r[2], head + _big_endian(r[-1])) for i, r in zip(ids, rows, strict=True)],
            )  # fmt: skip
        return len(rows)

    def rag_searches_vectors(self, dim: int) -> bool:
        return self._vector_table(dim)

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
        dim = len(vector) // 4
        if not self._vector_table(dim):
            return None
        c = Conditions(self._db.dialect)
        if hnsw_name(build) is not None:  # a literal: the planner matches it to the build's partial index
            c.add(f"v.build = '{build}' AND v.version = d.version")
        else:
            c.add("v.build = %s AND v.version = d.version", build)
        doc_conditions(c, access.tenant, collection, access, filters, now)
        q = _literal(vector)
        select = (
            f"SELECT v.chunk, 1 - (v.embedding <=> %s::vector) FROM rag_vectors_{dim} v"
            f" JOIN rag_index_docs d ON d.id = v.doc WHERE {c.sql()} ORDER BY "
        )
        params = [q, *c.params, q, limit]
        who = (build, access.everything, tuple(access.principals()), repr(filters), now is None, limit)
        now_s = time.monotonic()
        exact = self._rag_short.get(who, 0.0) > now_s
        with self._db.transaction() as s:
            rows = []
            if not exact:
                s.execute(f"SET LOCAL hnsw.ef_search = {max(EF_SEARCH, min(limit, 1000))}")
                rows = s.fetchall(select + "v.embedding <=> %s::vector LIMIT %s", params)
            if len(rows) < limit:  # perhaps starved by the filter after the HNSW scan: exact, to be sure
                # an order no index gives, so exact whatever plan the connection's prepared statement keeps
                # (a planner setting such as enable_indexscan does not re-plan one: it answered from HNSW)
                rows = s.fetchall(select + "(v.embedding <=> %s::vector) + 0 LIMIT %s", params)
                if not exact:
                    if len(self._rag_short) >= _SHORT_KEPT:
                        self._rag_short.clear()
                    self._rag_short[who] = now_s + SHORT_S
        return Candidates([int(r[0]) for r in rows], [float(r[1]) for r in rows])
