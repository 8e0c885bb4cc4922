"""The SQL `Store`: every SQL capability's store over one `Database`, and numbered migrations.

A backend subclasses `SqlStore` and hands it a `Database` (its connections); the statements live in
the capability modules beside this one, written once for every dialect.
"""

from __future__ import annotations

import time

from keel.store import migrations
from keel.store.sql.agents import SqlAgents
from keel.store.sql.audit import SqlAudit
from keel.store.sql.batches import SqlBatches
from keel.store.sql.dialect import Database
from keel.store.sql.erase import SqlErasure
from keel.store.sql.evals import SqlEvals
from keel.store.sql.feedback import SqlFeedback
from keel.store.sql.jobs import SqlJobs
from keel.store.sql.keys import SqlKeys
from keel.store.sql.leases import SqlLeases
from keel.store.sql.limits import SqlLimits
from keel.store.sql.online import SqlOnline
from keel.store.sql.prompts import SqlPrompts
from keel.store.sql.purge import SqlPurge
from keel.store.sql.rag_acl import SqlRagAcl
from keel.store.sql.rag_docs import SqlRagDocs
from keel.store.sql.rag_index import SqlRagIndex
from keel.store.sql.responses import SqlResponses
from keel.store.sql.spans import SqlSpans
from keel.store.sql.tenancy import SqlTenancy
from keel.store.sql.traces import SqlTraces


class SqlStore(
    SqlKeys,
    SqlTraces,
    SqlPurge,
    SqlErasure,
    SqlRagAcl,
    SqlLimits,
    SqlLeases,
    SqlSpans,
    SqlJobs,
    SqlBatches,
    SqlResponses,
    SqlPrompts,
    SqlRagDocs,
    SqlRagIndex,
    SqlOnline,
    SqlEvals,
    SqlFeedback,
    SqlAudit,
    SqlAgents,
    SqlTenancy,
):
    def __init__(self, url: str, db: Database) -> None:
        self.url = url
        self._db = db

    def close(self) -> None:
        self._db.close()

    def migrate(self) -> list[str]:
        """Apply pending migrations one per transaction, each under the dialect's migration lock."""
        done = []
        while (name := self._migrate_next()) is not None:
            done.append(name)
        return done

    def _migrate_next(self) -> str | None:
        """Apply the first pending migration, so concurrent migrators agree on what is applied."""
        d = self._db.dialect
        with self._db.transaction() as s:
            if d.migration_lock is not None:
                s.execute(d.migration_lock)
            s.execute(d.ledger)
            applied = {version for (version,) in s.fetchall("SELECT version FROM keel_migrations")}
            todo = migrations.pending(d.name, applied)
            if not todo:
                return None
            version, name, sql = todo[0]
            for statement in migrations.statements(sql):
                s.execute(statement)
            s.execute(f"INSERT INTO keel_migrations VALUES ({d.marks(3)})", (version, name, time.time()))
            return name
