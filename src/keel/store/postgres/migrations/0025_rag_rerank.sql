-- A collection's reranking setting (keel.rag.rerank): JSON text {model, top_n, weight, timeout_s}, or NULL for
-- none. Searches and chat `rag:` calls may override it per request.
ALTER TABLE rag_collections ADD COLUMN rerank TEXT;
