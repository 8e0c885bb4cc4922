-- The OpenAI Files and Batch APIs (keel/api/files.py, keel/api/batches.py, keel/jobs/batch.py).
-- A file's bytes live in the blob store (blob_key), its row says whose it is. Ids are time-ordered:
-- listings are ORDER BY id DESC, paged with id < cursor. A batch line's result is recorded once per
-- (batch_id, custom_id), so a worker that resumes after a crash never writes a line twice: the output
-- file is assembled from these rows at finalize.
CREATE TABLE files (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    filename TEXT NOT NULL,
    purpose TEXT NOT NULL,
    bytes BIGINT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    blob_key TEXT NOT NULL,
    lines INTEGER NOT NULL,
    status TEXT NOT NULL
);

CREATE INDEX files_tenant_id ON files(tenant, id);

CREATE TABLE batches (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    key_id TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    input_file_id TEXT NOT NULL,
    completion_window TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL,
    status TEXT NOT NULL,
    metadata JSONB,
    errors JSONB,
    job_id TEXT,
    output_file_id TEXT,
    error_file_id TEXT,
    total INTEGER NOT NULL,
    completed INTEGER NOT NULL,
    failed INTEGER NOT NULL,
    in_progress_at DOUBLE PRECISION,
    finalizing_at DOUBLE PRECISION,
    completed_at DOUBLE PRECISION,
    failed_at DOUBLE PRECISION,
    expired_at DOUBLE PRECISION,
    cancelling_at DOUBLE PRECISION,
    cancelled_at DOUBLE PRECISION
);

CREATE INDEX batches_tenant_id ON batches(tenant, id);

CREATE TABLE batch_results (
    batch_id TEXT NOT NULL,
    custom_id TEXT NOT NULL,
    line INTEGER NOT NULL,
    ok BOOLEAN NOT NULL,
    text TEXT NOT NULL,
    PRIMARY KEY (batch_id, custom_id)
);
