-- The durable job queue (keel/store/sql/jobs.py). A job is claimed by flipping state to running under a
-- fresh claim token and a lease: every later write of that attempt names the token. Payload and result
-- are JSON text. Indexes: the claim's pick (queued, per queue, by priority then due time, partial), the
-- lease sweep (running, by lease end, partial), idempotency keys per tenant (unique, partial), listings
-- by state or tenant, newest first (ids grow with time), retention by finish time.
CREATE TABLE jobs (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    queue TEXT NOT NULL,
    payload TEXT,
    tenant TEXT NOT NULL,
    priority INTEGER NOT NULL,
    state TEXT NOT NULL,
    run_at REAL NOT NULL,
    attempts INTEGER NOT NULL,
    max_attempts INTEGER NOT NULL,
    timeout_s REAL NOT NULL,
    created_at REAL NOT NULL,
    idempotency_key TEXT,
    started_at REAL,
    finished_at REAL,
    lease_until REAL,
    worker TEXT,
    claim TEXT,
    cancel_requested INTEGER NOT NULL,
    expiries INTEGER NOT NULL,
    progress_done BIGINT,
    progress_total BIGINT,
    progress_message TEXT,
    result TEXT,
    error TEXT
);

CREATE INDEX jobs_ready ON jobs(queue, priority DESC, run_at) WHERE state = 'queued';

CREATE INDEX jobs_leases ON jobs(lease_until) WHERE state = 'running';

CREATE UNIQUE INDEX jobs_idempotency ON jobs(tenant, idempotency_key) WHERE idempotency_key IS NOT NULL;

CREATE INDEX jobs_state ON jobs(state, id);

CREATE INDEX jobs_tenant ON jobs(tenant, id);

CREATE INDEX jobs_finished ON jobs(finished_at) WHERE finished_at IS NOT NULL;
