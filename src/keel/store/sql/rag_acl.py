"""Taking one user out of a tenant's RAG access lists (`RagAclErasure`), over any SQL dialect.

A user's id lives in three places: a document's access list (rag_documents.users), its copy in the
index (rag_index_docs.users) and the index's access rows (rag_access, principal 'u:<user>'). A purge
rewrites all three. A list the user was the only entry of (no users, no groups left) would read as
"the whole tenant", so it becomes closed instead: `[""]`, whose principal 'u:' no caller holds (admin
searches still see it). Each batch is one transaction that locks the document rows first (FOR UPDATE
on PostgreSQL; SQLite's one writer) and rewrites the index in the same order as `rag_write`, which
re-reads the document's lists under FOR SHARE in its own transaction: an ingestion racing the purge
either commits first (and is rewritten here) or writes the rewritten lists.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from keel.store.sql.dialect import Database, Dialect, Session

CLOSED: tuple[str, ...] = ("",)  # an access list nobody but an admin search is admitted by


def without(users: list[str], groups: list[str], user: str) -> list[str] | None:
    """The list with `user` taken out; `[""]` if nothing would be left; None if `user` is not in it."""
    if user not in users:
        return None
    rest = [u for u in users if u != user]
    return rest if rest or groups else list(CLOSED)


def principals(users: Sequence[str], groups: Sequence[str]) -> list[str]:
    """The rag_access rows of an access list ('*' for the whole tenant)."""
    if not users and not groups:
        return ["*"]
    return sorted({"u:" + u for u in users} | {"g:" + g for g in groups})


def write_access(
    s: Session,
    d: Dialect,
    tenant: str,
    collection: str,
    doc: int,
    version: int,
    valid_until: float | None,
    users: Sequence[str],
    groups: Sequence[str],
) -> None:
    """A document's access rows, replacing those it had: each carries the document's version and
    valid_until, so a search reads the documents it may see from rag_access alone (decision 0072). In the
    transaction that writes the same into the document's row (rag_index_docs)."""
    s.execute(f"DELETE FROM rag_access WHERE doc = {d.mark}", (doc,))
    s.executemany(
        f"INSERT INTO rag_access (tenant, collection, principal, doc, version, valid_until) VALUES ({d.marks(6)})",
        [(tenant, collection, p, doc, version, valid_until) for p in principals(users, groups)],
    )


def _like(user: str) -> str:
    quoted = orjson.dumps(user).decode()
    return "%" + quoted.replace("!", "!!").replace("%", "!%").replace("_", "!_") + "%"


def _loads(value: Any) -> list[str]:
    return list(value) if isinstance(value, list) else list(orjson.loads(value))


class SqlRagAcl:
    _db: Database

    def erase_rag_user(self, tenant: str, user: str, limit: int) -> dict[str, int]:
        counts = {"rag_acls": 0, "rag_acl_index": 0}
        after: tuple[str, str] = ("", "")
        while True:
            with self._db.transaction() as s:
                rows = self._documents(s, tenant, user, after, limit)
                for collection, doc_id, users, groups in rows:
                    rest = without(_loads(users), _loads(groups), user)
                    if rest is not None:
                        counts["rag_acls"] += self._rewrite_document(s, tenant, collection, doc_id, rest)
                if rows:
                    after = (rows[-1][0], rows[-1][1])
            if len(rows) < limit:
                break
        counts["rag_acl_index"] = self._rewrite_index(tenant, user, limit)
        return counts

    def _documents(self, s: Session, tenant: str, user: str, after: tuple[str, str], limit: int) -> list[Any]:
        d = self._db.dialect
        m = d.mark
        lock = " FOR UPDATE" if d.name == "postgres" else ""
        return s.fetchall(
            f"SELECT collection, id, users, acl_groups FROM rag_documents WHERE tenant = {m}"
            f" AND users LIKE {m} ESCAPE '!' AND (collection > {m} OR (collection = {m} AND id > {m}))"
            f" ORDER BY collection, id LIMIT {int(limit)}{lock}",
            (tenant, _like(user), after[0], after[0], after[1]),
        )

    def _rewrite_document(self, s: Session, tenant: str, collection: str, doc_id: str, users: list[str]) -> int:
        m = self._db.dialect.mark
        return s.execute(
            f"UPDATE rag_documents SET users = {m} WHERE tenant = {m} AND collection = {m} AND id = {m}",
            (orjson.dumps(users).decode(), tenant, collection, doc_id),
        )

    def _rewrite_index(self, tenant: str, user: str, limit: int) -> int:
        """The index's copies of the lists and their access rows; then any access row still naming the user."""
        d = self._db.dialect
        m = d.mark
        lock = " FOR UPDATE" if d.name == "postgres" else ""
        n, after = 0, 0
        while True:
            with self._db.transaction() as s:
                rows = s.fetchall(
                    f"SELECT id, collection, users, groups_, version, valid_until FROM rag_index_docs WHERE"
                    f" tenant = {m} AND users LIKE {m} ESCAPE '!' AND id > {m} ORDER BY id LIMIT {int(limit)}{lock}",
                    (tenant, _like(user), after),
                )
                for doc, collection, users, groups, version, valid_until in rows:
                    rest = without(_loads(users), _loads(groups), user)
                    if rest is None:
                        continue
                    s.execute(
                        f"UPDATE rag_index_docs SET users = {m} WHERE id = {m}", (orjson.dumps(rest).decode(), doc)
                    )
                    write_access(s, d, tenant, collection, doc, version, valid_until, rest, _loads(groups))
                    n += 1
                if rows:
                    after = int(rows[-1][0])
            if len(rows) < limit:
                break
        with self._db.transaction() as s:
            n += s.execute(f"DELETE FROM rag_access WHERE tenant = {m} AND principal = {m}", (tenant, "u:" + user))
        return n
