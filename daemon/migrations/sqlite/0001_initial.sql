-- sluice store, SQLite. Times are Unix milliseconds (INTEGER); JSON is TEXT.

CREATE TABLE pipeline_versions (
    id          INTEGER PRIMARY KEY,
    pipeline    TEXT    NOT NULL,
    version     INTEGER NOT NULL,
    hash        TEXT    NOT NULL,
    definition  TEXT    NOT NULL,
    source_path TEXT,
    created_at  INTEGER NOT NULL,
    UNIQUE (pipeline, version)
);
CREATE INDEX pipeline_versions_hash ON pipeline_versions (pipeline, hash);

CREATE TABLE runs (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    pipeline     TEXT    NOT NULL,
    version_id   INTEGER NOT NULL REFERENCES pipeline_versions (id),
    state        TEXT    NOT NULL,
    trigger      TEXT    NOT NULL,
    trigger_kind TEXT    NOT NULL,
    user         TEXT,
    inputs       TEXT    NOT NULL,
    retry_of     INTEGER,
    created_at   INTEGER NOT NULL,
    started_at   INTEGER,
    finished_at  INTEGER,
    deadline     INTEGER,
    wake_at      INTEGER,
    error        TEXT
);
CREATE INDEX runs_unfinished ON runs (state) WHERE state IN ('queued', 'running', 'waiting');
CREATE INDEX runs_pipeline ON runs (pipeline, id);
CREATE INDEX runs_finished_at ON runs (finished_at) WHERE finished_at IS NOT NULL;

CREATE TABLE run_nodes (
    run_id      INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    node_id     TEXT    NOT NULL,
    position    INTEGER NOT NULL,
    state       TEXT    NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0,
    output      TEXT,
    error       TEXT,
    started_at  INTEGER,
    finished_at INTEGER,
    wake_at     INTEGER,
    reused_from INTEGER,
    PRIMARY KEY (run_id, node_id)
) WITHOUT ROWID;

CREATE TABLE attempts (
    run_id      INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    node_id     TEXT    NOT NULL,
    attempt     INTEGER NOT NULL,
    state       TEXT    NOT NULL,
    started_at  INTEGER NOT NULL,
    finished_at INTEGER,
    error       TEXT,
    PRIMARY KEY (run_id, node_id, attempt)
) WITHOUT ROWID;

-- `id` orders lines as they were stored, so readers can resume from a cursor.
CREATE TABLE logs (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id  INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    node_id TEXT    NOT NULL,
    attempt INTEGER NOT NULL,
    seq     INTEGER NOT NULL,
    at      INTEGER NOT NULL,
    stream  TEXT    NOT NULL,
    line    TEXT    NOT NULL,
    UNIQUE (run_id, node_id, attempt, seq)
);

-- Ready for approval gates: one row per approval node activation.
CREATE TABLE approvals (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id        INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    node_id       TEXT    NOT NULL,
    attempt       INTEGER NOT NULL,
    state         TEXT    NOT NULL,
    message       TEXT,
    approvers     TEXT    NOT NULL DEFAULT '[]',
    min_approvals INTEGER NOT NULL DEFAULT 1,
    votes         TEXT    NOT NULL DEFAULT '[]',
    decision      TEXT,
    decided_by    TEXT,
    reason        TEXT,
    requested_at  INTEGER NOT NULL,
    deadline      INTEGER,
    decided_at    INTEGER,
    UNIQUE (run_id, node_id, attempt)
);
CREATE INDEX approvals_pending ON approvals (state) WHERE state = 'pending';

-- Append-only; each row carries the hash of the previous one.
CREATE TABLE audit (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    at        INTEGER NOT NULL,
    user      TEXT    NOT NULL,
    action    TEXT    NOT NULL,
    target    TEXT,
    detail    TEXT    NOT NULL DEFAULT '{}',
    prev_hash TEXT    NOT NULL,
    hash      TEXT    NOT NULL
);

-- Per-user daily counters for the limits (runs, LLM tokens).
CREATE TABLE usage (
    user       TEXT    NOT NULL,
    day        TEXT    NOT NULL,
    runs       INTEGER NOT NULL DEFAULT 0,
    llm_tokens INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (user, day)
) WITHOUT ROWID;
