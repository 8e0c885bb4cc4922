-- Prompts as versioned data (keel/store/sql/prompts.py). A version is immutable: its content (messages,
-- variables schema, alias, parameters, tools, response format) is JSON text, addressed by its sha256 so
-- a push of identical content finds the version it made (unique per prompt). Labels point at versions
-- and move, and a protected label is moved only with the admin token. Indexes: versions by creation time
-- (the gateways' incremental refresh). A label's rollout is JSON text: [[version, percent], ...], the
-- stable version taking the rest.
CREATE TABLE prompt_versions (
    tenant TEXT NOT NULL,
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    hash TEXT NOT NULL,
    content TEXT NOT NULL,
    message TEXT,
    author TEXT,
    created_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (tenant, name, version)
);

CREATE UNIQUE INDEX prompt_versions_hash ON prompt_versions(tenant, name, hash);

CREATE INDEX prompt_versions_created ON prompt_versions(created_at);

CREATE TABLE prompt_labels (
    tenant TEXT NOT NULL,
    name TEXT NOT NULL,
    label TEXT NOT NULL,
    version INTEGER NOT NULL,
    protected BOOLEAN NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL,
    updated_by TEXT,
    rollout TEXT,
    PRIMARY KEY (tenant, name, label)
);
