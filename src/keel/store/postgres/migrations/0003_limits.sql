CREATE TABLE limit_overrides (
    scope TEXT NOT NULL,
    subject TEXT NOT NULL,
    limits JSONB NOT NULL,
    on_store_error TEXT,
    updated_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (scope, subject)
);

CREATE TABLE limit_alerts (
    counter TEXT NOT NULL,
    period TEXT NOT NULL,
    threshold DOUBLE PRECISION NOT NULL,
    sent_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (counter, period, threshold)
);
