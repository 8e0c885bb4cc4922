-- Named leases (keel/store/sql/leases.py): one holder per name at a time, until expires_at unless renewed.
-- token grows each time the lease changes hands (a fencing number). The audit log's SIEM shipper holds
-- 'audit-siem', so one process per deployment ships the stream.
CREATE TABLE leases (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    token BIGINT NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL,
    acquired_at DOUBLE PRECISION NOT NULL
)
