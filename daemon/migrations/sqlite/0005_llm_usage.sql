-- LLM token usage (issue 9): per user, per pipeline, per day, beside the
-- per-user daily total in `usage.llm_tokens` that the daily caps read.
-- `user` is the run's user ('-' for none); `day` is that user's day as the
-- limits define it (YYYY-MM-DD in the configured zone). Kept apart from runs,
-- so that pruning old runs never lowers a day's count.
CREATE TABLE llm_usage (
    user               TEXT    NOT NULL,
    pipeline           TEXT    NOT NULL,
    day                TEXT    NOT NULL,
    tokens_in          INTEGER NOT NULL DEFAULT 0,
    tokens_out         INTEGER NOT NULL DEFAULT 0,
    requests           INTEGER NOT NULL DEFAULT 0,
    -- Requests whose counts were estimated (the provider reported none).
    estimated_requests INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (user, pipeline, day)
) WITHOUT ROWID;
CREATE INDEX llm_usage_day ON llm_usage (day);
