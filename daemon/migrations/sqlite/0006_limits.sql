-- Limits (issue 7): webhook tokens that authenticate a user, and the
-- refusals ledger (aggregated: one row per user, limit and minute, not per request).

CREATE TABLE user_tokens (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    user        TEXT    NOT NULL,
    pipeline    TEXT,               -- NULL: any pipeline with a webhook trigger
    hash        TEXT    NOT NULL UNIQUE,  -- hex SHA-256 of the token; the token itself is never stored
    prefix      TEXT    NOT NULL,   -- first characters, to recognise a token in lists
    created_at  INTEGER NOT NULL,
    created_by  TEXT    NOT NULL,
    revoked_at  INTEGER,
    last_used_at INTEGER
);

CREATE TABLE limit_refusals (
    user        TEXT    NOT NULL,
    limit_name  TEXT    NOT NULL,
    minute      INTEGER NOT NULL,   -- Unix minute
    pipeline    TEXT    NOT NULL,
    count       INTEGER NOT NULL,
    PRIMARY KEY (user, limit_name, minute, pipeline)
) WITHOUT ROWID;
CREATE INDEX limit_refusals_minute ON limit_refusals (minute);
