-- Named agents per tenant (keel agents add): the spec is JSON text (model alias, tools, max_steps, system
-- prompt, roles). A run started with {agent: NAME} takes them from here.
CREATE TABLE agent_defs (
    tenant TEXT NOT NULL,
    name TEXT NOT NULL,
    spec TEXT NOT NULL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (tenant, name)
);
