"""RAG: collections and documents, ingestion as jobs, chunking, versioned indexes, hybrid search with access control."""
