-- RAG indexes (keel/store/sql/rag_index.py), and the groups a virtual key searches as (rag_key_groups). A build is one collection's index under one embedding model
-- version: shadow while it fills, active while it serves (one per collection), then retired. Documents are
-- per collection and shared by its builds, with their access list spread into rag_access (principals '*',
-- 'u:<user>', 'g:<group>') so the access filter is an indexed join inside every candidate query. Chunks are
-- per build and carry the document version they were cut from, and tsv is their full text (english). Vectors
-- are float32 bytes here, and where pgvector is installed the store keeps them also in rag_vectors_<dim>
-- (HNSW), created on first use, since a vector column has one dimension.
CREATE TABLE rag_builds (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    collection TEXT NOT NULL,
    model TEXT NOT NULL,
    spec TEXT NOT NULL,
    state TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    dim INTEGER,
    error TEXT
);

CREATE UNIQUE INDEX rag_builds_active ON rag_builds(tenant, collection) WHERE state = 'active';

CREATE TABLE rag_index_docs (
    id BIGSERIAL PRIMARY KEY,
    tenant TEXT NOT NULL,
    collection TEXT NOT NULL,
    document_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    title TEXT NOT NULL,
    metadata JSONB NOT NULL,
    users TEXT NOT NULL,
    groups_ TEXT NOT NULL,
    valid_until DOUBLE PRECISION,
    updated_at DOUBLE PRECISION NOT NULL,
    source TEXT NOT NULL,
    UNIQUE (tenant, collection, document_id)
);

CREATE TABLE rag_access (
    tenant TEXT NOT NULL,
    collection TEXT NOT NULL,
    principal TEXT NOT NULL,
    doc BIGINT NOT NULL,
    PRIMARY KEY (tenant, collection, principal, doc)
);

CREATE INDEX rag_access_doc ON rag_access(doc);

CREATE TABLE rag_chunks (
    id BIGSERIAL PRIMARY KEY,
    build TEXT NOT NULL,
    doc BIGINT NOT NULL,
    version INTEGER NOT NULL,
    ordinal INTEGER NOT NULL,
    text TEXT NOT NULL,
    heading_path TEXT NOT NULL,
    content_hash TEXT NOT NULL,
    tokens INTEGER NOT NULL,
    embedding BYTEA NOT NULL,
    tsv TSVECTOR GENERATED ALWAYS AS (to_tsvector('english', text)) STORED
);

CREATE INDEX rag_chunks_build ON rag_chunks(build, id);

CREATE INDEX rag_chunks_doc ON rag_chunks(doc, build);

CREATE INDEX rag_chunks_tsv ON rag_chunks USING gin(tsv);

CREATE TABLE rag_key_groups (
    key_id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    groups_ TEXT NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL
)
