-- The results store of atropos: experiments by content hash, runs, trials with their phase
-- events and expectation results, and two aggregate tables kept up to date on every insert
-- so that the dashboard's overview and experiment pages never scan the trials.

-- One row per experiment name; versions hold the documents.
CREATE TABLE experiments (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    -- The version used by the newest run: its phases and faults are the matrix axes.
    latest_version_id INTEGER
);

-- A version is one YAML document: a changed document is a new version of the same name.
CREATE TABLE experiment_versions (
    id            INTEGER PRIMARY KEY,
    experiment_id INTEGER NOT NULL REFERENCES experiments(id),
    content_hash  TEXT NOT NULL,
    file          TEXT NOT NULL,
    source        TEXT NOT NULL,
    labels        TEXT NOT NULL,   -- JSON object
    phases        TEXT NOT NULL,   -- JSON array of phase names, in order
    faults        TEXT NOT NULL,   -- JSON array of fault names, in order
    first_seen_at REAL NOT NULL,
    UNIQUE (experiment_id, content_hash)
);

CREATE TABLE runs (
    id           INTEGER PRIMARY KEY,
    uid          TEXT NOT NULL UNIQUE,       -- RunInfo.id
    trigger      TEXT NOT NULL,              -- manual | ci | schedule
    seed         INTEGER NOT NULL,           -- u64 stored as its two's complement i64
    started_at   REAL NOT NULL,              -- seconds since the Unix epoch
    ended_at     REAL,
    status       TEXT NOT NULL,              -- running | finished | interrupted
    version      TEXT NOT NULL,              -- atropos's version
    ci_provider  TEXT,
    ci_commit    TEXT,
    ci_branch    TEXT,
    ci_job       TEXT,
    -- Who writes this run: used to tell a live run from one whose atropos died.
    owner_host   TEXT NOT NULL,
    owner_boot   TEXT NOT NULL,
    owner_pid    INTEGER NOT NULL,
    owner_start  INTEGER NOT NULL,           -- /proc/PID/stat starttime, clock ticks
    planned      INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX runs_by_start ON runs (started_at DESC);
CREATE INDEX runs_running ON runs (status) WHERE status = 'running';

-- One experiment within one run, with its verdict counts (maintained on insert; a run's
-- counts are the sums of its rows here).
CREATE TABLE run_experiments (
    id            INTEGER PRIMARY KEY,
    run_id        INTEGER NOT NULL REFERENCES runs(id),
    experiment_id INTEGER NOT NULL REFERENCES experiments(id),
    version_id    INTEGER NOT NULL REFERENCES experiment_versions(id),
    seed          INTEGER NOT NULL,
    planned       INTEGER NOT NULL,
    passed        INTEGER NOT NULL DEFAULT 0,
    failed        INTEGER NOT NULL DEFAULT 0,
    errors        INTEGER NOT NULL DEFAULT 0,
    started_at    REAL NOT NULL,
    updated_at    REAL NOT NULL,             -- when its last trial was committed
    UNIQUE (run_id, experiment_id)
);
CREATE INDEX run_experiments_by_experiment ON run_experiments (experiment_id, started_at DESC);

CREATE TABLE trials (
    id               INTEGER PRIMARY KEY,
    uid              TEXT NOT NULL UNIQUE,   -- TrialRecord.id
    run_id           INTEGER NOT NULL REFERENCES runs(id),
    run_experiment_id INTEGER NOT NULL REFERENCES run_experiments(id),
    fault            TEXT NOT NULL,          -- `baseline` for the trial without faults
    idx              INTEGER NOT NULL,
    offset_spec      TEXT,
    offset_fraction  REAL,
    offset_ns        INTEGER,
    injected_phase   TEXT,
    latency_ns       INTEGER,
    delivery         TEXT,
    verdict          TEXT NOT NULL,          -- pass | fail | error
    stop             TEXT NOT NULL,
    exit_code        INTEGER,
    exit_signal      TEXT,
    duration_ns      INTEGER NOT NULL,
    recorded_at      REAL NOT NULL,          -- when it was committed, seconds since the epoch
    reasons          TEXT NOT NULL,          -- JSON array of strings
    observation      TEXT NOT NULL,          -- JSON Observation without its phases
    recovery         TEXT,                   -- JSON
    check_run        TEXT                    -- JSON
);
CREATE INDEX trials_by_run ON trials (run_id, run_experiment_id, fault, idx);

-- When each phase of a trial was entered (Observation.phases, in plan order).
CREATE TABLE phase_events (
    trial_id   INTEGER NOT NULL REFERENCES trials(id),
    seq        INTEGER NOT NULL,
    name       TEXT NOT NULL,
    entered_ns INTEGER,
    evidence   TEXT,
    PRIMARY KEY (trial_id, seq)
) WITHOUT ROWID;

-- Every expectation of a trial and whether it held.
CREATE TABLE expectation_results (
    trial_id INTEGER NOT NULL REFERENCES trials(id),
    seq      INTEGER NOT NULL,
    name     TEXT NOT NULL,
    passed   INTEGER NOT NULL,
    expected TEXT NOT NULL,
    actual   TEXT NOT NULL,
    PRIMARY KEY (trial_id, seq)
) WITHOUT ROWID;

-- Coverage: trials per experiment version × injected phase × fault × verdict. A trial whose
-- fault was never delivered counts under phase ''. Baseline trials are not counted.
CREATE TABLE coverage_counts (
    version_id INTEGER NOT NULL REFERENCES experiment_versions(id),
    phase      TEXT NOT NULL,
    fault      TEXT NOT NULL,
    verdict    TEXT NOT NULL,
    trials     INTEGER NOT NULL,
    PRIMARY KEY (version_id, fault, phase, verdict)
) WITHOUT ROWID;

-- The aggregates follow every trial inside SQLite itself: one INSERT from the recorder
-- keeps them in step, in the same transaction.
CREATE TRIGGER trials_count AFTER INSERT ON trials
BEGIN
    UPDATE run_experiments SET
        passed = passed + (NEW.verdict = 'pass'),
        failed = failed + (NEW.verdict = 'fail'),
        errors = errors + (NEW.verdict = 'error'),
        updated_at = max(updated_at, NEW.recorded_at)
    WHERE id = NEW.run_experiment_id;
END;

CREATE TRIGGER trials_cover AFTER INSERT ON trials WHEN NEW.fault <> 'baseline'
BEGIN
    INSERT INTO coverage_counts (version_id, phase, fault, verdict, trials)
    SELECT version_id, coalesce(NEW.injected_phase, ''), NEW.fault, NEW.verdict, 1
    FROM run_experiments WHERE id = NEW.run_experiment_id
    ON CONFLICT (version_id, fault, phase, verdict) DO UPDATE SET trials = trials + 1;
END;
