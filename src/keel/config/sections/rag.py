"""`rag:`: how much of a process's memory RAG search may keep where the database could search instead."""

from __future__ import annotations

from pydantic import Field

from keel.config.parts import Model


class RagConfig(Model):
    # On PostgreSQL with pgvector, a collection's index is searched in process (vectors and BM25 loaded
    # from the database, kept current before each search: as on SQLite) while the loaded indexes fit this
    # many MiB, about 2.5 KB per 384-d chunk; the rest is searched in the database (pgvector + full text).
    # 0: always in the database. SQLite always searches in process.
    in_process_mb: int = Field(1024, ge=0, le=1_048_576)
