-- The overview reads the latest runs of each experiment: an index in exactly that order lets
-- it stop after the runs it shows instead of sorting all of them.
DROP INDEX run_experiments_by_experiment;
CREATE INDEX run_experiments_by_experiment
    ON run_experiments (experiment_id, started_at DESC, id DESC);
