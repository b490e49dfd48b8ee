-- Scheduled game days (`atropos serve`): the last tick each experiment's schedule decided,
-- and every decision with its reason. The decision to fire and the run it queues are
-- written in one transaction that first moves `last_tick` forward: a second controller on
-- the same file, or one restarted after a crash, finds the tick taken and fires nothing.
CREATE TABLE schedules (
    experiment TEXT PRIMARY KEY,
    last_tick  REAL NOT NULL              -- seconds since the Unix epoch
);

CREATE TABLE schedule_ticks (
    experiment TEXT NOT NULL,
    tick_at    REAL NOT NULL,             -- the tick, seconds since the Unix epoch
    decided_at REAL NOT NULL,
    outcome    TEXT NOT NULL,             -- fired | skipped
    reason     TEXT,                      -- why a tick was skipped
    run_uid    TEXT,                      -- the run a fired tick queued (runs.uid)
    PRIMARY KEY (experiment, tick_at)
);

-- Who asked for a run (`schedule`, or the name an API caller gave), and why it was aborted.
ALTER TABLE runs ADD COLUMN requested_by TEXT;
ALTER TABLE runs ADD COLUMN abort_reason TEXT;

-- The answers of a run's stop-condition probes (`abort:`), for its timeline.
CREATE TABLE probe_answers (
    run_id INTEGER NOT NULL REFERENCES runs(id),
    probe  TEXT NOT NULL,
    at     REAL NOT NULL,                 -- seconds since the Unix epoch
    stage  TEXT NOT NULL,                 -- before | during | after
    ok     INTEGER NOT NULL,
    said   TEXT NOT NULL
);
CREATE INDEX probe_answers_of_run ON probe_answers (run_id, at);
