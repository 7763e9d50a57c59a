-- The process group an attempt's child runs in, and its leader's start time
-- (clock ticks since boot, /proc/<pid>/stat field 22): after a crash, a group
-- still alive is stopped before the attempt is retried, and the start time
-- tells our leader from an unrelated process that reused the pid.
ALTER TABLE attempts ADD COLUMN pgid INTEGER;
ALTER TABLE attempts ADD COLUMN pstart INTEGER;
