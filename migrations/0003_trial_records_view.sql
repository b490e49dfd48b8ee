-- One statement per trial: `atropos run` inserts a row into this view, with the trial's
-- phases and expectation results as JSON arrays, and the trigger below spreads it over
-- trials, phase_events and expectation_results (and, through the triggers on trials, the
-- aggregates). A single statement is its own transaction in SQLite: the trial is committed
-- whole or not at all, in one round trip.
CREATE VIEW trial_records AS
SELECT uid, run_id, run_experiment_id, fault, idx, offset_spec, offset_fraction, offset_ns,
    injected_phase, latency_ns, delivery, verdict, stop, exit_code, exit_signal, duration_ns,
    recorded_at, reasons, observation, recovery, check_run,
    NULL AS phases, NULL AS expectations
FROM trials WHERE 0;

CREATE TRIGGER trial_records_insert INSTEAD OF INSERT ON trial_records
BEGIN
    INSERT INTO trials (uid, run_id, run_experiment_id, fault, idx, offset_spec,
        offset_fraction, offset_ns, injected_phase, latency_ns, delivery, verdict, stop,
        exit_code, exit_signal, duration_ns, recorded_at, reasons, observation, recovery,
        check_run)
    VALUES (NEW.uid, NEW.run_id, NEW.run_experiment_id, NEW.fault, NEW.idx, NEW.offset_spec,
        NEW.offset_fraction, NEW.offset_ns, NEW.injected_phase, NEW.latency_ns, NEW.delivery,
        NEW.verdict, NEW.stop, NEW.exit_code, NEW.exit_signal, NEW.duration_ns,
        NEW.recorded_at, NEW.reasons, NEW.observation, NEW.recovery, NEW.check_run);
    INSERT INTO phase_events (trial_id, seq, name, entered_ns, evidence)
    SELECT (SELECT id FROM trials WHERE uid = NEW.uid), key, value ->> '$.name',
        value ->> '$.entered_ns', value ->> '$.evidence'
    FROM json_each(NEW.phases);
    INSERT INTO expectation_results (trial_id, seq, name, passed, expected, actual)
    SELECT (SELECT id FROM trials WHERE uid = NEW.uid), key, value ->> '$.name',
        value ->> '$.passed', value ->> '$.expected', value ->> '$.actual'
    FROM json_each(NEW.expectations);
END;
