-- Trials are written in batches, by the recorder, in one transaction per batch: the trials
-- in one multi-row INSERT, their phase events and expectation results in one more each, and
-- the aggregates (`run_experiments` counts, `coverage_counts`) updated once per batch with
-- the batch's sums. Per-row triggers cost more than the insert itself (about 30 µs of 60 per
-- trial), so the view `trial_records` and the triggers behind it go.
DROP TRIGGER trial_records_insert;
DROP VIEW trial_records;
DROP TRIGGER trials_count;
DROP TRIGGER trials_cover;
