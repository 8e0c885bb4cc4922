CREATE TABLE limit_overrides (
    scope TEXT NOT NULL,
    subject TEXT NOT NULL,
    limits TEXT NOT NULL,
    on_store_error TEXT,
    updated_at REAL NOT NULL,
    PRIMARY KEY (scope, subject)
);

CREATE TABLE limit_alerts (
    counter TEXT NOT NULL,
    period TEXT NOT NULL,
    threshold REAL NOT NULL,
    sent_at REAL NOT NULL,
    PRIMARY KEY (counter, period, threshold)
);
