-- Operator choices about pipelines that outlive restarts and file edits.
CREATE TABLE pipeline_state (
    name       TEXT    PRIMARY KEY,
    enabled    INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    updated_by TEXT
) WITHOUT ROWID;
