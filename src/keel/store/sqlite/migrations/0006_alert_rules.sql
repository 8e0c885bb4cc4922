-- Alert rules: which rule and scope value is firing now, shared by every gateway process.
CREATE TABLE alert_states (
    key TEXT PRIMARY KEY,
    firing BOOLEAN NOT NULL,
    since DOUBLE PRECISION NOT NULL
);
