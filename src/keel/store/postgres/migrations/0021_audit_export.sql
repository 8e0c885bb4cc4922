-- Audit queries and export (keel/store/sql/audit.py): indexes for the filters GET /api/audit takes,
-- and audit_marks, small named values the audit capability keeps between runs: the SIEM shipper's
-- durable cursor (the last seq delivered) and the last config it recorded (to audit what a start changed).
CREATE INDEX audit_log_tenant ON audit_log(tenant, seq);

CREATE INDEX audit_log_actor ON audit_log(actor, seq);

CREATE TABLE audit_marks (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    at DOUBLE PRECISION NOT NULL
);
