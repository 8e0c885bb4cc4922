-- Large payloads live in the blob store: the row keeps the key (request and response are then NULL).
-- The (tenant, user_id) index serves deleting one user's data on request.
ALTER TABLE traces ADD COLUMN payload_blob TEXT;

CREATE INDEX traces_tenant_user ON traces(tenant, user_id);
