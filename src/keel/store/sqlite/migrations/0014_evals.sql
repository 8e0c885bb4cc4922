-- Evals (keel/store/sql/evals.py): datasets as immutable numbered versions of items (JSON text: input,
-- expected, context, metadata), each item keeping the trace it came from, suite runs (the suite as it
-- runs is JSON text in spec) and one result per (run, item, repeat), recorded once.
CREATE TABLE datasets (
    tenant TEXT NOT NULL,
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    items INTEGER NOT NULL,
    note TEXT,
    created_at REAL NOT NULL,
    PRIMARY KEY (tenant, name, version)
);

CREATE TABLE dataset_items (
    tenant TEXT NOT NULL,
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    idx INTEGER NOT NULL,
    body TEXT NOT NULL,
    trace_id TEXT,
    PRIMARY KEY (tenant, name, version, idx)
);

CREATE TABLE eval_runs (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    key_id TEXT NOT NULL,
    suite TEXT NOT NULL,
    label TEXT,
    status TEXT NOT NULL,
    spec TEXT NOT NULL,
    total INTEGER NOT NULL,
    done INTEGER NOT NULL,
    created_at REAL NOT NULL,
    finished_at REAL,
    job_id TEXT,
    summary TEXT,
    error TEXT
);

CREATE INDEX eval_runs_suite ON eval_runs(tenant, suite, created_at);

CREATE TABLE eval_results (
    run_id TEXT NOT NULL,
    item TEXT NOT NULL,
    rep INTEGER NOT NULL,
    passed INTEGER NOT NULL,
    score REAL NOT NULL,
    output TEXT NOT NULL,
    trace_id TEXT,
    latency_ms REAL NOT NULL,
    cost_usd REAL NOT NULL,
    verdicts TEXT NOT NULL,
    error TEXT,
    PRIMARY KEY (run_id, item, rep)
);
