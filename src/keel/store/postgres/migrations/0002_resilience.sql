ALTER TABLE tenants ADD COLUMN regions JSONB;

ALTER TABLE tenants ADD COLUMN updated_at DOUBLE PRECISION NOT NULL DEFAULT 0;

CREATE INDEX tenants_updated ON tenants(updated_at);

ALTER TABLE traces ADD COLUMN route JSONB;

ALTER TABLE traces ADD COLUMN attempt_log JSONB;

ALTER TABLE traces ADD COLUMN fallback TEXT;
