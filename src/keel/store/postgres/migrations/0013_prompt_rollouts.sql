-- Prompt rollouts with guards, the history of every label move, and feedback on traces
-- (keel/store/sql/prompts.py, keel/store/sql/feedback.py). One rollout row per label (the latest: its
-- `rev` makes each transition a compare-and-set, so one process of many moves the label and sends the
-- webhook). The label history is append-only: who moved a label, to what, and why. Feedback copies its
-- trace's attribution (prompt version, model) when it arrives, so a report needs no join with traces
-- and outlives their retention. One score per (trace, rater), a later one replacing it.
CREATE TABLE prompt_rollouts (
    tenant TEXT NOT NULL,
    name TEXT NOT NULL,
    label TEXT NOT NULL,
    stable INTEGER NOT NULL,
    version INTEGER NOT NULL,
    weight DOUBLE PRECISION NOT NULL,
    plan TEXT NOT NULL,
    state TEXT NOT NULL,
    started_at DOUBLE PRECISION NOT NULL,
    started_by TEXT,
    stepped_at DOUBLE PRECISION NOT NULL,
    held_since DOUBLE PRECISION,
    updated_at DOUBLE PRECISION NOT NULL,
    reason TEXT,
    rev INTEGER NOT NULL,
    PRIMARY KEY (tenant, name, label)
);

CREATE TABLE prompt_label_history (
    tenant TEXT NOT NULL,
    name TEXT NOT NULL,
    label TEXT NOT NULL,
    at DOUBLE PRECISION NOT NULL,
    version INTEGER NOT NULL,
    rollout TEXT,
    actor TEXT,
    reason TEXT
);

CREATE INDEX prompt_label_history_at ON prompt_label_history(tenant, name, at);

CREATE TABLE prompt_feedback (
    trace_id TEXT NOT NULL,
    rater TEXT NOT NULL,
    tenant TEXT NOT NULL,
    score DOUBLE PRECISION NOT NULL,
    comment TEXT,
    prompt_version TEXT,
    model TEXT,
    at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (trace_id, rater)
);

CREATE INDEX prompt_feedback_at ON prompt_feedback(tenant, at);
