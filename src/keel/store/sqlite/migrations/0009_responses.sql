-- Stored Responses API responses (keel/store/protocols/responses.py): the Response object as the
-- client got it, and its own input items, so `previous_response_id` rebuilds a conversation by
-- following previous_id within one tenant. Deleted by age with the traces' retention, and by tenant
-- or user on a purge. Indexes: the id (key), by tenant and age, by age, by tenant and user.
CREATE TABLE responses (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    user_id TEXT,
    created_at REAL NOT NULL,
    previous_id TEXT,
    trace_id TEXT,
    input_items TEXT NOT NULL,
    response TEXT NOT NULL
);

CREATE INDEX responses_tenant_created ON responses(tenant, created_at);

CREATE INDEX responses_created ON responses(created_at);

CREATE INDEX responses_tenant_user ON responses(tenant, user_id);
