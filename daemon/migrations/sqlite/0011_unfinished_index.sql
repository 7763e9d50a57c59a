-- The partial index of unfinished runs said `state IN ('queued', 'running',
-- 'waiting')`. SQLite evaluates a three-value IN list through a temporary
-- b-tree, and it evaluates the predicate on every INSERT of a run and twice on
-- every UPDATE of one: four temporary b-trees per run of instant nodes, ~19 %
-- of the daemon's instructions at webhook intake (callgrind). A run is
-- unfinished exactly while `finished_at` is NULL (every finishing write sets
-- it), a predicate that costs one comparison. Queries say both, so they still
-- match the index and still filter on the state.
DROP INDEX runs_unfinished;
CREATE INDEX runs_unfinished ON runs (state) WHERE finished_at IS NULL;
