-- Online evals (keel/store/sql/online.py). A rule is JSON text under its name. A score is one scorer's
-- verdict on one trace under one rule, unique per (trace_id, rule, scorer) so a scoring job run twice
-- writes it once. It carries the trace's attribution so windows roll up per feature, model, alias and
-- prompt version with no join. Index: by the scored call's start time (every read is a window).
CREATE TABLE online_rules (
    name TEXT PRIMARY KEY,
    spec TEXT NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL
);

CREATE TABLE eval_scores (
    trace_id TEXT NOT NULL,
    rule TEXT NOT NULL,
    scorer TEXT NOT NULL,
    at DOUBLE PRECISION NOT NULL,
    value DOUBLE PRECISION NOT NULL,
    passed BOOLEAN NOT NULL,
    tenant TEXT,
    feature TEXT,
    alias TEXT,
    model TEXT,
    prompt_version TEXT,
    PRIMARY KEY (trace_id, rule, scorer)
);

CREATE INDEX eval_scores_at ON eval_scores(at);
