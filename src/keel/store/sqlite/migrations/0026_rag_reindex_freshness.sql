-- Issue 17 (decision 0060). rag_fts, the chunks' FTS5 copy, is dropped: since 0055 nothing searches it
-- (BM25 runs in process over the postings built from rag_chunks), yet every ingestion and re-index
-- wrote each chunk's text into it a second time. rag_collections.freshness is a collection's default
-- freshness for searches ({half_life_days, exclude_expired}, JSON), NULL when it has none.
DROP TABLE IF EXISTS rag_fts;

ALTER TABLE rag_collections ADD COLUMN freshness TEXT;
