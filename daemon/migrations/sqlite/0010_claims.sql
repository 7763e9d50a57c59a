-- Ready for several daemons sharing one database (designed, not built yet):
-- an executing run carries the id of the daemon that claimed it and when that
-- claim expires (Unix milliseconds). Both stay NULL while one daemon runs alone.
ALTER TABLE runs ADD COLUMN claimed_by TEXT;
ALTER TABLE runs ADD COLUMN lease_until INTEGER;
-- Finding expired claims reads only runs that hold one.
CREATE INDEX runs_lease_until ON runs (lease_until) WHERE lease_until IS NOT NULL;

-- SQLite expands `runs.*` again whenever it loads the schema, so the view
-- already shows the new columns; it is recreated anyway so that its definition
-- is stated after the change, as PostgreSQL (which expands `*` once, at
-- CREATE VIEW) needs it. Same column order on both backends.
DROP VIEW runs_full;
CREATE VIEW runs_full AS
    SELECT runs.*, p.trigger AS trigger, p.inputs AS inputs
    FROM runs JOIN run_payloads p ON p.run_id = runs.id;
