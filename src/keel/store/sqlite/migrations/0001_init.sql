CREATE TABLE tenants (
    name TEXT PRIMARY KEY,
    created_at REAL NOT NULL
);

CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL REFERENCES tenants(name),
    key_hash TEXT NOT NULL UNIQUE,
    prefix TEXT NOT NULL,
    created_at REAL NOT NULL,
    name TEXT,
    user_id TEXT,
    models TEXT,
    revoked_at REAL
);
CREATE INDEX api_keys_revoked ON api_keys(revoked_at) WHERE revoked_at IS NOT NULL;

CREATE TABLE traces (
    id TEXT PRIMARY KEY,
    started_at REAL NOT NULL,
    endpoint TEXT NOT NULL,
    tenant TEXT,
    key_id TEXT,
    user_id TEXT,
    feature TEXT,
    session TEXT,
    tags TEXT,
    alias TEXT,
    provider TEXT,
    model TEXT,
    request TEXT,
    response TEXT,
    status TEXT NOT NULL,
    error_kind TEXT,
    error_message TEXT,
    http_status INTEGER,
    input_tokens INTEGER,
    cached_input_tokens INTEGER,
    cache_write_tokens INTEGER,
    output_tokens INTEGER,
    reasoning_tokens INTEGER,
    cost_usd REAL,
    latency_ms REAL,
    ttft_ms REAL,
    attempts INTEGER NOT NULL,
    overhead_ms REAL,
    stream INTEGER NOT NULL
);
CREATE INDEX traces_time ON traces(started_at);
CREATE INDEX traces_tenant_time ON traces(tenant, started_at);
CREATE INDEX traces_session ON traces(session) WHERE session IS NOT NULL;
