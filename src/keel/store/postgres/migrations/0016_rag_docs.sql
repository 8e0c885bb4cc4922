-- RAG collections and documents (keel/store/sql/rag_docs.py). A collection names its embedding model and its
-- chunking spec (JSON). A document is one row per (tenant, collection, id) holding its latest version:
-- hash, title, metadata and access lists (JSON), its ingestion status (the stage and reason when failed)
-- and the version the index serves. A tombstone keeps its row (status 'deleted', deleted_at) until
-- retention. rag_blobs records every blob a document's versions wrote, so purges find them all.
-- Indexes: documents by status (listings filtered by it), tombstones by time (retention), documents by
-- status and age (the sweep for working documents whose job is gone).
CREATE TABLE rag_collections (
    tenant TEXT NOT NULL,
    name TEXT NOT NULL,
    model TEXT NOT NULL,
    chunking TEXT NOT NULL,
    description TEXT,
    created_at DOUBLE PRECISION NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (tenant, name)
);

CREATE TABLE rag_documents (
    tenant TEXT NOT NULL,
    collection TEXT NOT NULL,
    id TEXT NOT NULL,
    version INTEGER NOT NULL,
    title TEXT NOT NULL,
    source TEXT NOT NULL,
    content_hash TEXT NOT NULL,
    content_type TEXT NOT NULL,
    bytes BIGINT NOT NULL,
    metadata TEXT NOT NULL,
    users TEXT NOT NULL,
    acl_groups TEXT NOT NULL,
    valid_until DOUBLE PRECISION,
    status TEXT NOT NULL,
    stage TEXT,
    error TEXT,
    progress_done INTEGER,
    progress_total INTEGER,
    chunks INTEGER,
    indexed_version INTEGER,
    job_id TEXT,
    created_at DOUBLE PRECISION NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL,
    deleted_at DOUBLE PRECISION,
    PRIMARY KEY (tenant, collection, id)
);

CREATE INDEX rag_documents_status ON rag_documents(tenant, collection, status);

CREATE INDEX rag_documents_deleted ON rag_documents(deleted_at);

CREATE INDEX rag_documents_working ON rag_documents(status, updated_at);

CREATE TABLE rag_blobs (
    tenant TEXT NOT NULL,
    collection TEXT NOT NULL,
    id TEXT NOT NULL,
    version INTEGER NOT NULL,
    blob_key TEXT NOT NULL,
    PRIMARY KEY (tenant, collection, id, blob_key)
);
