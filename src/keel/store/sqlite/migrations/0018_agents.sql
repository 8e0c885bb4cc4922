-- The audit log and the agents' tool runtime (keel/store/sql/audit.py, keel/store/sql/agents.py).
-- audit_log: append-only, one global chain ordered by seq, each entry holds the hash of the one before it
-- (prev_hash) and its own hash over every column (detail is the JSON text exactly as hashed). audit_head
-- holds the chain's last seq and hash: an append updates it first (the row lock serialises appenders on
-- PostgreSQL, SQLite's BEGIN IMMEDIATE does), and verify checks the tail against it (a deleted last entry).
CREATE TABLE audit_log (
    seq INTEGER PRIMARY KEY,
    at REAL NOT NULL,
    tenant TEXT,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT,
    detail TEXT NOT NULL,
    source_ip TEXT,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);

CREATE INDEX audit_log_at ON audit_log(at);

CREATE TABLE audit_head (
    chain TEXT PRIMARY KEY,
    seq INTEGER NOT NULL,
    hash TEXT NOT NULL
);

INSERT INTO audit_head VALUES ('main', 0, '0000000000000000000000000000000000000000000000000000000000000000');

-- Secrets per tenant: AES-GCM ciphertext (nonce || ciphertext+tag, base64) under the master key key_id.
CREATE TABLE agent_secrets (
    tenant TEXT NOT NULL,
    name TEXT NOT NULL,
    sealed TEXT NOT NULL,
    key_id TEXT NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (tenant, name)
);

-- Tools per tenant: the spec is JSON text (kind, description, parameters, policy, secrets, limits).
CREATE TABLE agent_tools (
    tenant TEXT NOT NULL,
    name TEXT NOT NULL,
    spec TEXT NOT NULL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (tenant, name)
);

-- A run's durable state (JSON: messages, steps) and its tool calls, each keyed by its idempotency key.
-- A call moves pending -> approved|denied|expired, approved|allowed -> running -> done, the move to
-- running is a conditional UPDATE, so a call's side effect happens at most once.
CREATE TABLE agent_runs (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    state TEXT NOT NULL,
    data TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);

CREATE INDEX agent_runs_state ON agent_runs(state, updated_at);

CREATE TABLE agent_calls (
    id TEXT PRIMARY KEY,
    run_id TEXT NOT NULL,
    tenant TEXT NOT NULL,
    tool TEXT NOT NULL,
    arguments TEXT NOT NULL,
    state TEXT NOT NULL,
    result TEXT,
    decided_by TEXT,
    expires_at REAL NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);

CREATE INDEX agent_calls_run ON agent_calls(run_id);

CREATE INDEX agent_calls_state ON agent_calls(tenant, state);
