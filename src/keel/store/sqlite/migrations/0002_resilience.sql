ALTER TABLE tenants ADD COLUMN regions TEXT;

ALTER TABLE tenants ADD COLUMN updated_at REAL NOT NULL DEFAULT 0;

CREATE INDEX tenants_updated ON tenants(updated_at);

ALTER TABLE traces ADD COLUMN route TEXT;

ALTER TABLE traces ADD COLUMN attempt_log TEXT;

ALTER TABLE traces ADD COLUMN fallback TEXT;
