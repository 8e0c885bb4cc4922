-- A trace's child spans (model attempts, retrievals, tool calls, approvals, scores, jobs) beside its
-- call row, keyed (trace_id, span_id) so a re-sent span is skipped. No foreign key: a span may reach
-- the store before its call row, and a trace (an agent run) may have no call row. Deletes of trace
-- rows delete their spans by id (keel/traces/retention.py). Indexes: by trace (the key), by time.
CREATE TABLE spans (
    trace_id TEXT NOT NULL,
    span_id TEXT NOT NULL,
    parent_id TEXT,
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    tenant TEXT,
    started_at REAL NOT NULL,
    ended_at REAL,
    status TEXT NOT NULL,
    attributes TEXT,
    input_tokens INTEGER,
    cached_input_tokens INTEGER,
    cache_write_tokens INTEGER,
    output_tokens INTEGER,
    reasoning_tokens INTEGER,
    cost_usd REAL,
    PRIMARY KEY (trace_id, span_id)
);

CREATE INDEX spans_started ON spans(started_at);

CREATE INDEX spans_tenant_started ON spans(tenant, started_at);
