-- The tenancy directory (keel/store/sql/tenancy.py): users with roles per tenant (tenant NULL: a platform
-- operator), teams, and personal access tokens stored as sha256 hashes. An SSO user is keyed on
-- (issuer, subject). roles and scopes are JSON arrays as text (scopes NULL: all the user's permissions).
-- Keys belong to a team (limits per team), and a tenant decides whether viewers see traces' content.
CREATE TABLE tenancy_users (
    id TEXT PRIMARY KEY,
    tenant TEXT,
    email TEXT,
    name TEXT,
    roles TEXT NOT NULL,
    team TEXT,
    issuer TEXT,
    subject TEXT,
    created_at REAL NOT NULL,
    disabled_at REAL
);

CREATE INDEX tenancy_users_tenant ON tenancy_users(tenant, id);

CREATE UNIQUE INDEX tenancy_users_subject ON tenancy_users(issuer, subject);

CREATE TABLE tenancy_teams (
    tenant TEXT NOT NULL,
    name TEXT NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (tenant, name)
);

CREATE TABLE tenancy_tokens (
    id TEXT PRIMARY KEY,
    token_hash TEXT NOT NULL UNIQUE,
    user_id TEXT NOT NULL,
    tenant TEXT,
    name TEXT,
    scopes TEXT,
    created_at REAL NOT NULL,
    expires_at REAL,
    last_used_at REAL,
    revoked_at REAL
);

CREATE INDEX tenancy_tokens_user ON tenancy_tokens(user_id);

ALTER TABLE api_keys ADD COLUMN team TEXT;

ALTER TABLE tenants ADD COLUMN viewer_content INTEGER NOT NULL DEFAULT 0;
