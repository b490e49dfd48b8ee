-- The injector node a trial ran on (`target.node`/`target.nodes`); NULL for a trial run
-- in-process by atropos itself.
ALTER TABLE trials ADD COLUMN node TEXT;
