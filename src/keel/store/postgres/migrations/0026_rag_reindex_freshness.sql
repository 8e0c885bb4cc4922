-- Issue 17 (decision 0060): rag_collections.freshness is a collection's default freshness for searches
-- ({half_life_days, exclude_expired}, JSON), NULL when it has none. (PostgreSQL never had SQLite's rag_fts:
-- its full text is rag_chunks.tsv, still read by the pgvector path.)
ALTER TABLE rag_collections ADD COLUMN freshness TEXT;
