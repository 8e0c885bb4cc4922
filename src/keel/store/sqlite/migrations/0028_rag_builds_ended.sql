-- Issue 17 (decision 0069): a build that a swap retired or that failed is dropped (chunks, vectors, row)
-- once it has been over for a grace: ended_at is when it was retired or failed (builds over before this
-- migration count from their creation). (PostgreSQL's migration 0028 also makes pgvector's HNSW index
-- one per build; SQLite keeps no vector index in the database.)
ALTER TABLE rag_builds ADD COLUMN ended_at REAL;

UPDATE rag_builds SET ended_at = created_at WHERE state IN ('retired', 'failed');

CREATE INDEX rag_builds_ended ON rag_builds(ended_at) WHERE ended_at IS NOT NULL;
