-- A run's trigger details and inputs (a webhook body can be kilobytes) move to
-- their own table. They are written once and never change, while the run row
-- is updated several times per run: kept small, many rows share a page, and an
-- update no longer rewrites (and logs to the WAL) a page-sized record.
CREATE TABLE run_payloads (
    run_id  INTEGER PRIMARY KEY REFERENCES runs (id) ON DELETE CASCADE,
    trigger TEXT NOT NULL,
    inputs  TEXT NOT NULL
);
INSERT INTO run_payloads (run_id, trigger, inputs) SELECT id, trigger, inputs FROM runs;
ALTER TABLE runs DROP COLUMN trigger;
ALTER TABLE runs DROP COLUMN inputs;

-- What readers of whole runs select from. Every run has its payload: both
-- rows are inserted in one transaction by the single writer.
CREATE VIEW runs_full AS
    SELECT runs.*, p.trigger AS trigger, p.inputs AS inputs
    FROM runs JOIN run_payloads p ON p.run_id = runs.id;
