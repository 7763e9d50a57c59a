-- Triggers: cron schedule state, the misfire ledger and delivery keys for
-- deduplicating webhook redeliveries. Times are Unix milliseconds.

-- One row per cron schedule (pipeline + schedule id, see triggers/cron.rs).
CREATE TABLE schedules (
    pipeline      TEXT    NOT NULL,
    schedule      TEXT    NOT NULL,
    -- Every fire at or before this instant has been handled (run, skipped or
    -- recorded as missed); a gap up to "now" after a start is downtime.
    handled_until INTEGER,
    -- Scheduled time of the last fire that started a run, and that run.
    last_fired_at INTEGER,
    last_run_id   INTEGER,
    -- NULL: as the file says; 0 or 1: an operator resumed or paused it.
    paused        INTEGER,
    paused_by     TEXT,
    paused_at     INTEGER,
    PRIMARY KEY (pipeline, schedule)
) WITHOUT ROWID;

-- Every fire that did not run as scheduled: what was due, why, and what was done.
CREATE TABLE misfires (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    pipeline    TEXT    NOT NULL,
    schedule    TEXT    NOT NULL,
    due_first   INTEGER NOT NULL,
    due_last    INTEGER NOT NULL,
    missed      INTEGER NOT NULL,
    reason      TEXT    NOT NULL,
    action      TEXT    NOT NULL,
    run_id      INTEGER,
    recorded_at INTEGER NOT NULL
);
CREATE INDEX misfires_schedule ON misfires (pipeline, schedule, id);

-- Delivery keys (Idempotency-Key, webhook-id, cron fire ids): the same key
-- returns the same run until it expires. Deleting a run deletes its keys.
CREATE TABLE trigger_keys (
    pipeline   TEXT    NOT NULL,
    key        TEXT    NOT NULL,
    run_id     INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (pipeline, key)
) WITHOUT ROWID;
CREATE INDEX trigger_keys_expiry ON trigger_keys (expires_at);
CREATE INDEX trigger_keys_run ON trigger_keys (run_id);
