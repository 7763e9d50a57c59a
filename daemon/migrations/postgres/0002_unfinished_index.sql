-- Same predicate as SQLite's 0011 (there an IN list cost a temporary b-tree on
-- every write of a run): a run is unfinished exactly while `finished_at` is NULL.
DROP INDEX runs_unfinished;
CREATE INDEX runs_unfinished ON runs (state) WHERE finished_at IS NULL;
