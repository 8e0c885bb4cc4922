-- Issue 19 (decision 0064): prompts and RAG collections belong to a team, as keys do (0019). A prompt's
-- identity is (tenant, name) across its versions and labels, so its team lives in a row per prompt name
-- (prompts), made for every prompt that exists; team NULL: tenant-wide (an admin's, or made before this).
CREATE TABLE prompts (
    tenant TEXT NOT NULL,
    name TEXT NOT NULL,
    team TEXT,
    PRIMARY KEY (tenant, name)
);

INSERT INTO prompts (tenant, name, team) SELECT DISTINCT tenant, name, NULL FROM prompt_versions;

ALTER TABLE rag_collections ADD COLUMN team TEXT;
