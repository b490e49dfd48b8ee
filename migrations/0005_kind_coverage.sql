-- Coverage by kind of fault: each named phase × each kind of fault (sigkill, sigterm,
-- sigint, pause, other, after_exit) an experiment version uses. `fault_kinds` holds the
-- version's kinds (a JSON array, the matrix columns; NULL for versions recorded before this
-- migration, filled when such a version runs again). `kind_coverage` counts, per version ×
-- phase × kind × verdict, the trials that landed a step of that kind in that phase (a trial
-- counts once per cell); it is kept up to date by the recorder, batch by batch, like
-- `coverage_counts`, which still counts trials per fault for the "not injected" row.
ALTER TABLE experiment_versions ADD COLUMN fault_kinds TEXT;

CREATE TABLE kind_coverage (
    version_id INTEGER NOT NULL REFERENCES experiment_versions(id),
    phase      TEXT NOT NULL,
    kind       TEXT NOT NULL,
    verdict    TEXT NOT NULL,
    trials     INTEGER NOT NULL,
    PRIMARY KEY (version_id, phase, kind, verdict)
) WITHOUT ROWID;
