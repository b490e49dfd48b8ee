//! The SQL that writes runs and trials. Each function runs inside the caller's transaction.

use std::collections::{BTreeMap, HashMap};
use std::sync::OnceLock;

use anyhow::Context;
use sqlx::sqlite::SqliteConnection;

use super::owner::Owner;
use atropos_injector::record::{
    Delivery, Exit, Line, MissedPhase, Observation, Orphan, Resources, Skipped, StopReason,
    StopSignal, WatchHit,
};
use serde::Serialize;

use crate::plan::BASELINE;
use crate::record::{RunEnd, RunInfo, TrialRecord, Verdict};

/// The row ids of one experiment within a run being written.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ExperimentIds {
    pub run_experiment: i64,
    pub version: i64,
}

/// The row ids of a run being written.
#[derive(Debug, Clone)]
pub(crate) struct RunIds {
    pub run: i64,
    pub experiments: HashMap<String, ExperimentIds>,
}

impl RunIds {
    /// The ids of the experiment `trial` belongs to.
    fn experiment_of(&self, trial: &TrialRecord) -> anyhow::Result<ExperimentIds> {
        self.experiments
            .get(&trial.experiment)
            .copied()
            .with_context(|| {
                format!(
                    "trial {} belongs to experiment {}, which its run did not announce",
                    trial.id, trial.experiment
                )
            })
    }
}

/// Stores a `u64` (seeds) in SQLite's signed 64-bit integer, bit for bit.
pub(crate) fn u64_to_sql(v: u64) -> i64 {
    i64::from_ne_bytes(v.to_ne_bytes())
}

/// The inverse of [`u64_to_sql`].
pub(crate) fn u64_from_sql(v: i64) -> u64 {
    u64::from_ne_bytes(v.to_ne_bytes())
}

/// Nanosecond counts: saturating, they never reach `i64::MAX` in practice (292 years).
pub(crate) fn ns_to_sql(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Writes the run, its experiments (by content hash) and its per-experiment rows.
pub(crate) async fn insert_run(
    conn: &mut SqliteConnection,
    info: &RunInfo,
    owner: &Owner,
) -> anyhow::Result<RunIds> {
    let planned: usize = info.experiments.iter().map(|e| e.planned_trials).sum();
    let run: i64 = sqlx::query_scalar(
        "INSERT INTO runs (uid, trigger, seed, started_at, status, version,
            ci_provider, ci_commit, ci_branch, ci_job,
            owner_host, owner_boot, owner_pid, owner_start, planned)
         VALUES (?, ?, ?, ?, 'running', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
         -- A run the controller queued (a scheduled tick) is taken over by the process
         -- that runs it; any other run of the same id is an error.
         ON CONFLICT (uid) DO UPDATE SET
            trigger = excluded.trigger, seed = excluded.seed,
            started_at = excluded.started_at, status = 'running',
            version = excluded.version, ci_provider = excluded.ci_provider,
            ci_commit = excluded.ci_commit, ci_branch = excluded.ci_branch,
            ci_job = excluded.ci_job, owner_host = excluded.owner_host,
            owner_boot = excluded.owner_boot, owner_pid = excluded.owner_pid,
            owner_start = excluded.owner_start, planned = excluded.planned
         WHERE runs.status = 'queued'
         RETURNING id",
    )
    .bind(&info.id)
    .bind(info.trigger.as_str())
    .bind(u64_to_sql(info.seed))
    .bind(info.started_at)
    .bind(&info.version)
    .bind(&info.ci.provider)
    .bind(&info.ci.commit)
    .bind(&info.ci.branch)
    .bind(&info.ci.job)
    .bind(&owner.host)
    .bind(&owner.boot)
    .bind(owner.pid)
    .bind(ns_to_sql(owner.start))
    .bind(i64::try_from(planned).unwrap_or(i64::MAX))
    .fetch_one(&mut *conn)
    .await
    .with_context(|| format!("failed to store run {} (is it stored already?)", info.id))?;

    let mut experiments = HashMap::new();
    for exp in &info.experiments {
        let experiment: i64 = sqlx::query_scalar(
            "INSERT INTO experiments (name) VALUES (?)
             ON CONFLICT (name) DO UPDATE SET name = excluded.name
             RETURNING id",
        )
        .bind(&exp.name)
        .fetch_one(&mut *conn)
        .await?;
        let version: i64 = sqlx::query_scalar(
            "INSERT INTO experiment_versions
                (experiment_id, content_hash, file, source, labels, phases, faults, first_seen_at,
                 fault_kinds)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT (experiment_id, content_hash) DO UPDATE SET file = excluded.file,
                fault_kinds = excluded.fault_kinds
             RETURNING id",
        )
        .bind(experiment)
        .bind(&exp.content_hash)
        .bind(exp.file.display().to_string())
        .bind(&exp.source)
        .bind(serde_json::to_string(&exp.labels)?)
        .bind(serde_json::to_string(&exp.phases)?)
        .bind(serde_json::to_string(&exp.faults)?)
        .bind(info.started_at)
        .bind(serde_json::to_string(info.kinds_of(&exp.name))?)
        .fetch_one(&mut *conn)
        .await?;
        sqlx::query("UPDATE experiments SET latest_version_id = ? WHERE id = ?")
            .bind(version)
            .bind(experiment)
            .execute(&mut *conn)
            .await?;
        let run_experiment: i64 = sqlx::query_scalar(
            "INSERT INTO run_experiments
                (run_id, experiment_id, version_id, seed, planned, started_at, updated_at)
             VALUES (?, ?, ?, ?, ?, ?, ?)
             RETURNING id",
        )
        .bind(run)
        .bind(experiment)
        .bind(version)
        .bind(u64_to_sql(exp.seed))
        .bind(i64::try_from(exp.planned_trials).unwrap_or(i64::MAX))
        .bind(info.started_at)
        .bind(info.started_at)
        .fetch_one(&mut *conn)
        .await
        .with_context(|| format!("experiment {} is listed twice in run {}", exp.name, info.id))?;
        experiments.insert(
            exp.name.clone(),
            ExperimentIds {
                run_experiment,
                version,
            },
        );
    }
    Ok(RunIds { run, experiments })
}

/// How many trials of one verdict a batch adds to one aggregate row.
#[derive(Default)]
struct Counts {
    passed: i64,
    failed: i64,
    errors: i64,
}

/// The row counts of the statements that write `trials`: a batch goes out in its binary
/// decomposition (25 trials: 16 + 8 + 1 rows), so `trials` is written with at most seven
/// statement texts, whatever the batch sizes, and sqlx keeps each prepared on the
/// connection. (Statements whose text changed with every batch's size were parsed by SQLite
/// anew for every batch.)
const TRIAL_SHAPES: [usize; 7] = [64, 32, 16, 8, 4, 2, 1];

/// The `INSERT INTO trials` of `TRIAL_SHAPES[shape]` rows, built once.
fn insert_trials_sql(shape: usize) -> &'static str {
    static TEXTS: OnceLock<[String; TRIAL_SHAPES.len()]> = OnceLock::new();
    let texts = TEXTS.get_or_init(|| {
        TRIAL_SHAPES.map(|rows| {
            let row = "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";
            let mut sql = format!("INSERT INTO trials ({TRIAL_COLUMNS}) VALUES {row}");
            for _ in 1..rows {
                sql.push_str(", ");
                sql.push_str(row);
            }
            sql
        })
    });
    &texts[shape]
}

/// The pieces `n` rows are written in: (index in [`TRIAL_SHAPES`], first row, rows).
fn pieces(n: usize) -> Vec<(usize, usize, usize)> {
    let mut pieces = Vec::new();
    let mut start = 0;
    for (shape, &rows) in TRIAL_SHAPES.iter().enumerate() {
        while n - start >= rows {
            pieces.push((shape, start, rows));
            start += rows;
        }
    }
    pieces
}

/// Everything a batch writes besides its trials, in one statement of fixed text: each
/// table's rows arrive as one JSON array of small scalar rows bound to one parameter and are
/// spread by `json_each`, so SQLite prepares it once per connection whatever the batch.
/// The parameters, in order (positional: sqlx counts them across the statements): the rows
/// of phase events, of expectation results, the commit time, the verdict counts per run ×
/// experiment, the coverage cells (version × phase × fault × verdict), and the coverage
/// cells by kind of fault (version × phase × kind × verdict).
const INSERT_REST: &str = "\
INSERT INTO phase_events (trial_id, seq, name, entered_ns, evidence)
SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4
FROM json_each(?);
INSERT INTO expectation_results (trial_id, seq, name, passed, expected, actual)
SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4, value ->> 5
FROM json_each(?);
UPDATE run_experiments SET passed = passed + (v.value ->> 1), failed = failed + (v.value ->> 2),
    errors = errors + (v.value ->> 3), updated_at = max(updated_at, ?)
FROM json_each(?) AS v WHERE run_experiments.id = v.value ->> 0;
INSERT INTO coverage_counts (version_id, phase, fault, verdict, trials)
SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4
FROM json_each(?) WHERE true
ON CONFLICT (version_id, fault, phase, verdict) DO UPDATE SET trials = trials + excluded.trials;
INSERT INTO kind_coverage (version_id, phase, kind, verdict, trials)
SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4
FROM json_each(?) WHERE true
ON CONFLICT (version_id, phase, kind, verdict) DO UPDATE SET trials = trials + excluded.trials;
";

/// Writes trials with their phase events and expectation results, and adds them to the
/// aggregate tables (verdict counts per run × experiment, coverage per version × phase ×
/// fault × verdict). Call it inside a transaction. Every statement has a fixed text (see
/// [`TRIAL_SHAPES`] and [`INSERT_REST`]): a batch of 25 trials is four round trips to the
/// connection's thread, each with a statement prepared once per connection.
pub(crate) async fn insert_trials(
    conn: &mut SqliteConnection,
    ids: &RunIds,
    trials: &[&TrialRecord],
    now: f64,
) -> anyhow::Result<()> {
    if trials.is_empty() {
        return Ok(());
    }
    insert_batch(conn, ids, trials, now).await.with_context(|| {
        let first = trials.first().map_or("", |t| t.id.as_str());
        match trials.len() {
            1 => format!("failed to store trial {first}"),
            n => format!("failed to store trials {first} and {} more", n - 1),
        }
    })
}

type Query<'q> = sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments>;

async fn insert_batch(
    conn: &mut SqliteConnection,
    ids: &RunIds,
    trials: &[&TrialRecord],
    now: f64,
) -> anyhow::Result<()> {
    let run_experiments = trials
        .iter()
        .map(|t| ids.experiment_of(t).map(|e| e.run_experiment))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut rows = Vec::with_capacity(trials.len());
    for (shape, start, n) in pieces(trials.len()) {
        let mut query: Query<'_> = sqlx::query(insert_trials_sql(shape)).persistent(true);
        let piece = start..start + n;
        for (t, run_experiment) in trials[piece.clone()].iter().zip(&run_experiments[piece]) {
            query = bind_trial(query, ids.run, *run_experiment, t, now)?;
        }
        let last = query.execute(&mut *conn).await?.last_insert_rowid();
        // The rows of one INSERT get consecutive ids: SQLite gives each new row one more
        // than the largest id in the table (https://sqlite.org/autoinc.html), and this
        // connection holds the write lock for the whole transaction. So the phase and
        // expectation rows name their trial by id, not by a lookup of its uid.
        let n = i64::try_from(n).context("a piece of a batch is small")?;
        rows.extend(last - n + 1..=last);
    }
    let rest = Rest::of(ids, trials, &rows)?;
    sqlx::query(INSERT_REST)
        .persistent(true)
        .bind(rest.phases)
        .bind(rest.expectations)
        .bind(now)
        .bind(rest.verdicts)
        .bind(rest.coverage)
        .bind(rest.kinds)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// What a batch writes besides the trials' own rows: the parameters of [`INSERT_REST`],
/// each table's rows as one JSON array.
struct Rest {
    phases: String,
    expectations: String,
    verdicts: String,
    coverage: String,
    kinds: String,
}

impl Rest {
    /// `rows`: the id each trial's row was given, in the order of `trials`.
    fn of(ids: &RunIds, trials: &[&TrialRecord], rows: &[i64]) -> anyhow::Result<Rest> {
        let mut phases = Vec::new();
        let mut expectations = Vec::new();
        // The aggregates this batch adds to, in a stable order.
        let mut verdicts: BTreeMap<i64, Counts> = BTreeMap::new();
        let mut coverage: BTreeMap<(i64, &str, &str, &str), i64> = BTreeMap::new();
        let mut kinds: BTreeMap<(i64, &str, &str, &str), i64> = BTreeMap::new();
        for (t, &row) in trials.iter().zip(rows) {
            let exp = ids.experiment_of(t)?;
            for (seq, p) in t.observation.phases.iter().enumerate() {
                phases.push((
                    row,
                    seq,
                    p.name.as_str(),
                    p.entered_ns.map(ns_to_sql),
                    p.evidence.as_deref(),
                ));
            }
            for (seq, e) in t.expectations.iter().enumerate() {
                expectations.push((
                    row,
                    seq,
                    e.name.as_str(),
                    e.passed,
                    e.expected.as_str(),
                    e.actual.as_str(),
                ));
            }
            let counts = verdicts.entry(exp.run_experiment).or_default();
            match t.verdict {
                Verdict::Pass => counts.passed += 1,
                Verdict::Fail => counts.failed += 1,
                Verdict::Error => counts.errors += 1,
            }
            // Coverage by kind: each cell a trial's steps landed in, once.
            for l in &t.landed {
                *kinds
                    .entry((
                        exp.version,
                        l.phase.as_str(),
                        l.kind.key(),
                        t.verdict.as_str(),
                    ))
                    .or_default() += 1;
            }
            // Coverage leaves out the baseline; an undelivered fault counts under phase ''.
            if t.fault != BASELINE {
                let phase = t.injected_phase.as_deref().unwrap_or("");
                *coverage
                    .entry((exp.version, phase, t.fault.as_str(), t.verdict.as_str()))
                    .or_default() += 1;
            }
        }
        let kinds: Vec<_> = kinds
            .into_iter()
            .map(|((version, phase, kind, verdict), n)| (version, phase, kind, verdict, n))
            .collect();
        let verdicts: Vec<_> = verdicts
            .into_iter()
            .map(|(id, c)| (id, c.passed, c.failed, c.errors))
            .collect();
        let coverage: Vec<_> = coverage
            .into_iter()
            .map(|((version, phase, fault, verdict), n)| (version, phase, fault, verdict, n))
            .collect();
        Ok(Rest {
            phases: serde_json::to_string(&phases)?,
            expectations: serde_json::to_string(&expectations)?,
            verdicts: serde_json::to_string(&verdicts)?,
            coverage: serde_json::to_string(&coverage)?,
            kinds: serde_json::to_string(&kinds)?,
        })
    }
}

/// The columns of `trials` that [`bind_trial`] binds, in its order.
const TRIAL_COLUMNS: &str = "uid, run_id, run_experiment_id, fault, idx, offset_spec, \
    offset_fraction, offset_ns, injected_phase, latency_ns, delivery, verdict, stop, exit_code, \
    exit_signal, duration_ns, recorded_at, reasons, observation, recovery, check_run, node";

/// Binds the values of one trial's row, in the order of [`TRIAL_COLUMNS`].
fn bind_trial<'q>(
    query: Query<'q>,
    run: i64,
    run_experiment: i64,
    t: &'q TrialRecord,
    now: f64,
) -> anyhow::Result<Query<'q>> {
    // Destructured so that a field added to `TrialRecord` fails to compile here.
    let TrialRecord {
        id,
        experiment: _,
        fault,
        index,
        offset_spec,
        offset_fraction,
        offset_ns,
        injected_phase,
        latency_ns,
        delivery,
        observation,
        recovery,
        check,
        expectations: _,
        // Stored as the sums of `kind_coverage` (see `Rest::of`).
        landed: _,
        verdict,
        reasons,
        duration_ns,
        node,
    } = t;
    let exit = observation.exit.as_ref();
    Ok(query
        .bind(id.as_str())
        .bind(run)
        .bind(run_experiment)
        .bind(fault.as_str())
        .bind(*index)
        .bind(offset_spec.as_deref())
        .bind(*offset_fraction)
        .bind(offset_ns.map(ns_to_sql))
        .bind(injected_phase.as_deref())
        .bind(latency_ns.map(ns_to_sql))
        .bind(delivery.map(|d| d.as_str()))
        .bind(verdict.as_str())
        .bind(observation.stop.as_str())
        .bind(exit.and_then(|e| e.code))
        .bind(exit.and_then(|e| e.signal).map(|s| s.to_string()))
        .bind(ns_to_sql(*duration_ns))
        .bind(now)
        .bind(serde_json::to_string(reasons)?)
        .bind(serde_json::to_string(&StoredObservation::of(observation))?)
        .bind(recovery.as_ref().map(serde_json::to_string).transpose()?)
        .bind(check.as_ref().map(serde_json::to_string).transpose()?)
        .bind(node.as_deref()))
}

/// An observation as the `trials.observation` column keeps it: every field but the phases,
/// which go to `phase_events` (an empty array stands in for them). Serialized straight from
/// borrowed fields: building a `serde_json::Value` first and editing it cost more than the
/// rest of a trial's row.
#[derive(Serialize)]
struct StoredObservation<'a> {
    trial_id: &'a str,
    pid: Option<i32>,
    started_ns: u64,
    ended_ns: u64,
    phases: [(); 0],
    deliveries: &'a [Delivery],
    skipped: &'a [Skipped],
    stop_signal: &'a Option<StopSignal>,
    exit: &'a Option<Exit>,
    stop: StopReason,
    orphans: &'a [Orphan],
    watches: &'a [WatchHit],
    stdout_tail: &'a [Line],
    stderr_tail: &'a [Line],
    lines: (u64, u64),
    resources: &'a Option<Resources>,
    missed: &'a Option<MissedPhase>,
    error: &'a Option<String>,
}

impl<'a> StoredObservation<'a> {
    fn of(obs: &'a Observation) -> StoredObservation<'a> {
        // Destructured so that a field added to `Observation` fails to compile here.
        let Observation {
            trial_id,
            pid,
            started_ns,
            ended_ns,
            phases: _,
            deliveries,
            skipped,
            stop_signal,
            exit,
            stop,
            orphans,
            watches,
            stdout_tail,
            stderr_tail,
            lines,
            resources,
            missed,
            error,
        } = obs;
        StoredObservation {
            trial_id,
            pid: *pid,
            started_ns: *started_ns,
            ended_ns: *ended_ns,
            phases: [],
            deliveries,
            skipped,
            stop_signal,
            exit,
            stop: *stop,
            orphans,
            watches,
            stdout_tail,
            stderr_tail,
            lines: *lines,
            resources,
            missed,
            error,
        }
    }
}

/// Writes how the run ended.
pub(crate) async fn finish_run(
    conn: &mut SqliteConnection,
    run: i64,
    end: &RunEnd,
) -> anyhow::Result<()> {
    sqlx::query(
        "UPDATE runs SET status = ?, ended_at = ?, abort_reason = coalesce(?, abort_reason)
         WHERE id = ?",
    )
    .bind(end.status.as_str())
    .bind(end.ended_at)
    .bind(&end.reason)
    .bind(run)
    .execute(&mut *conn)
    .await?;
    for answer in &end.probes {
        sqlx::query(
            "INSERT INTO probe_answers (run_id, probe, at, stage, ok, said) VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(run)
        .bind(&answer.probe)
        .bind(answer.at)
        .bind(&answer.stage)
        .bind(answer.ok)
        .bind(&answer.said)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly")]

    use super::*;
    use crate::store::synthetic;
    use sqlx::Connection;

    /// The size of the batches that the edges of the sizes below are taken around.
    const ROUND_TRIP_K: usize = TRIAL_SHAPES[0];

    /// The column holds exactly what it held when it was built from a `serde_json::Value`:
    /// the whole observation, with its phases emptied.
    #[test]
    fn stored_observation_is_the_observation_without_its_phases() {
        let mut rng = synthetic::Rng::new(7);
        let exp = synthetic::experiment(0, 3, 4);
        for fault in [None, Some((1, "term-at-ready", 2))] {
            let trial = synthetic::trial(&mut rng, "r0", &exp, fault);
            let obs = &trial.observation;
            assert!(!obs.phases.is_empty() && !obs.stdout_tail.is_empty());
            let mut expected = serde_json::to_value(obs).unwrap();
            expected["phases"] = serde_json::json!([]);
            let stored: serde_json::Value =
                serde_json::from_str(&serde_json::to_string(&StoredObservation::of(obs)).unwrap())
                    .unwrap();
            assert_eq!(stored, expected);
        }
    }

    /// Batch sizes around the edges of any fixed statement shape.
    const SIZES: [usize; 5] = [
        1,
        ROUND_TRIP_K - 1,
        ROUND_TRIP_K,
        ROUND_TRIP_K + 1,
        3 * ROUND_TRIP_K + 2,
    ];

    /// The columns of a trial's row that are not JSON, as they read back.
    #[derive(Debug, PartialEq, sqlx::FromRow)]
    struct Scalars {
        uid: String,
        run_id: i64,
        run_experiment_id: i64,
        fault: String,
        idx: i64,
        offset_spec: Option<String>,
        offset_fraction: Option<f64>,
        offset_ns: Option<i64>,
        injected_phase: Option<String>,
        latency_ns: Option<i64>,
        delivery: Option<String>,
        verdict: String,
        stop: String,
        exit_code: Option<i64>,
        exit_signal: Option<String>,
        duration_ns: i64,
    }

    /// A phase event as it reads back: trial uid, seq, name, entered_ns, evidence.
    type PhaseRow = (String, i64, String, Option<i64>, Option<String>);

    fn scalars(t: &TrialRecord, run: i64, run_experiment: i64) -> Scalars {
        let exit = t.observation.exit.as_ref();
        Scalars {
            uid: t.id.clone(),
            run_id: run,
            run_experiment_id: run_experiment,
            fault: t.fault.clone(),
            idx: i64::from(t.index),
            offset_spec: t.offset_spec.clone(),
            offset_fraction: t.offset_fraction,
            offset_ns: t.offset_ns.map(ns_to_sql),
            injected_phase: t.injected_phase.clone(),
            latency_ns: t.latency_ns.map(ns_to_sql),
            delivery: t.delivery.map(|d| d.as_str().to_owned()),
            verdict: t.verdict.as_str().to_owned(),
            stop: t.observation.stop.as_str().to_owned(),
            exit_code: exit.and_then(|e| e.code).map(i64::from),
            exit_signal: exit.and_then(|e| e.signal).map(|s| s.to_string()),
            duration_ns: ns_to_sql(t.duration_ns),
        }
    }

    /// Trials of every shape the columns allow: awkward text, saturated counters, every
    /// optional column set and unset.
    fn awkward(mut trials: Vec<TrialRecord>) -> Vec<TrialRecord> {
        let n = trials.len();
        for (i, t) in trials.iter_mut().enumerate() {
            if i % 3 == 0 {
                t.reasons
                    .push("quote \" backslash \\ tab \t é 漢 \u{1} end".to_owned());
                if let Some(p) = t.observation.phases.first_mut() {
                    p.evidence = Some("line: \"ready\"\n\\".to_owned());
                    p.entered_ns = Some(u64::MAX);
                }
                t.duration_ns = u64::MAX;
                t.offset_fraction = Some(0.1 + 0.2);
            }
            if i % 5 == 1 {
                t.check = Some(crate::record::CheckRun {
                    command: vec!["sh".into(), "-c".into(), "echo '{\"a\": 1}'".into()],
                    code: Some(3),
                    duration_ns: 12_345,
                    output: vec!["{\"a\": 1}".into()],
                });
                t.recovery = Some(crate::record::Recovery {
                    phase: "ready".into(),
                    reached_ns: None,
                    observation: t.observation.clone(),
                    attached: Some(crate::record::Replacement {
                        detected_ns: Some(1_200_000),
                        replaced_ns: None,
                        pid: None,
                        survived: false,
                    }),
                });
                if let Some(e) = t.expectations.first_mut() {
                    e.actual = "exit 1 ≠ 0, \"hung\"".into();
                }
            }
            if i + 1 == n {
                t.offset_spec = None;
                t.offset_fraction = None;
                t.injected_phase = None;
                t.latency_ns = None;
                t.delivery = None;
                t.observation.exit = None;
                t.observation.phases.clear();
                t.expectations.clear();
            }
        }
        trials
    }

    #[tokio::test]
    async fn batches_of_every_size_round_trip_every_row_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.db");
        let mut conn = SqliteConnection::connect_with(&super::super::connect_options(&path, true))
            .await
            .unwrap();
        super::super::open::migrate(&mut conn, &path).await.unwrap();
        let exp = synthetic::experiment(0, 3, 4);
        let total: usize = SIZES.iter().sum();
        let per_fault = u32::try_from(total.div_ceil(4)).unwrap();
        let events = synthetic::run("r0", 1.7e9, 11, std::slice::from_ref(&exp), per_fault);
        let crate::record::RunEvent::Started(info) = &events[0] else {
            panic!("a synthetic run starts with its start");
        };
        let ids = insert_run(&mut conn, info, &Owner::current())
            .await
            .unwrap();
        let trials: Vec<TrialRecord> = events
            .iter()
            .filter_map(|e| match e {
                crate::record::RunEvent::Trial(t) => Some((**t).clone()),
                _ => None,
            })
            .take(total)
            .collect();
        assert_eq!(trials.len(), total);
        let trials = awkward(trials);
        let now = 1.7e9 + 0.25;
        let cached = conn.cached_statements_size();
        let mut rest: &[TrialRecord] = &trials;
        // The cache once batches of 1, 63 and 64 rows have used every trial shape.
        let mut every_shape_used = None;
        for (n, size) in SIZES.into_iter().enumerate() {
            let (batch, later) = rest.split_at(size);
            rest = later;
            let batch: Vec<&TrialRecord> = batch.iter().collect();
            let mut tx = conn.begin().await.unwrap();
            insert_trials(&mut tx, &ids, &batch, now).await.unwrap();
            tx.commit().await.unwrap();
            if n == 2 {
                every_shape_used = Some(conn.cached_statements_size());
            }
        }
        assert!(rest.is_empty());
        // Whatever the batch sizes, the statements have one of a few texts, each prepared
        // once: every trial shape and the rest. Batches of sizes not seen before (65, 194)
        // add no statement. (sqlx sometimes caches one statement of its own beside ours, so
        // the first growth is bounded rather than exact.)
        let every_shape_used = every_shape_used.unwrap();
        assert!(
            (cached + TRIAL_SHAPES.len() + 1..=cached + TRIAL_SHAPES.len() + 2)
                .contains(&every_shape_used),
            "{cached} → {every_shape_used}"
        );
        assert_eq!(conn.cached_statements_size(), every_shape_used);

        let exp_ids = ids.experiments[&exp.name];
        let stored: Vec<Scalars> = sqlx::query_as(
            "SELECT uid, run_id, run_experiment_id, fault, idx, offset_spec, offset_fraction,
                offset_ns, injected_phase, latency_ns, delivery, verdict, stop, exit_code,
                exit_signal, duration_ns
             FROM trials ORDER BY id",
        )
        .fetch_all(&mut conn)
        .await
        .unwrap();
        assert_eq!(stored.len(), total);
        for (t, row) in trials.iter().zip(&stored) {
            assert_eq!(
                row,
                &scalars(t, ids.run, exp_ids.run_experiment),
                "{}",
                t.id
            );
        }
        // Every value has its column's type (not, say, an integer's text).
        let mistyped: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM trials WHERE typeof(idx) <> 'integer'
                OR typeof(run_experiment_id) <> 'integer' OR typeof(duration_ns) <> 'integer'
                OR typeof(offset_fraction) NOT IN ('real', 'null')
                OR typeof(offset_ns) NOT IN ('integer', 'null')
                OR typeof(exit_code) NOT IN ('integer', 'null')
                OR typeof(recorded_at) <> 'real' OR recorded_at <> ?",
        )
        .bind(now)
        .fetch_one(&mut conn)
        .await
        .unwrap();
        assert_eq!(mistyped, 0);
        // The JSON columns hold exactly the text serde writes (not merely the same value).
        let texts: Vec<(String, String, Option<String>, Option<String>)> = sqlx::query_as(
            "SELECT reasons, observation, recovery, check_run FROM trials ORDER BY id",
        )
        .fetch_all(&mut conn)
        .await
        .unwrap();
        for (t, (reasons, observation, recovery, check)) in trials.iter().zip(&texts) {
            assert_eq!(reasons, &serde_json::to_string(&t.reasons).unwrap());
            assert_eq!(
                observation,
                &serde_json::to_string(&StoredObservation::of(&t.observation)).unwrap()
            );
            assert_eq!(
                recovery,
                &t.recovery
                    .as_ref()
                    .map(|r| serde_json::to_string(r).unwrap())
            );
            assert_eq!(
                check,
                &t.check.as_ref().map(|c| serde_json::to_string(c).unwrap())
            );
        }

        let phases: Vec<PhaseRow> = sqlx::query_as(
            "SELECT t.uid, p.seq, p.name, p.entered_ns, p.evidence
             FROM phase_events p JOIN trials t ON t.id = p.trial_id ORDER BY t.id, p.seq",
        )
        .fetch_all(&mut conn)
        .await
        .unwrap();
        let expected: Vec<PhaseRow> = trials
            .iter()
            .flat_map(|t| {
                t.observation.phases.iter().enumerate().map(|(i, p)| {
                    let seq = i64::try_from(i).unwrap();
                    (
                        t.id.clone(),
                        seq,
                        p.name.clone(),
                        p.entered_ns.map(ns_to_sql),
                        p.evidence.clone(),
                    )
                })
            })
            .collect();
        assert!(expected.len() > total, "{} phase events", expected.len());
        assert_eq!(phases, expected);

        let results: Vec<(String, i64, String, bool, String, String)> = sqlx::query_as(
            "SELECT t.uid, e.seq, e.name, e.passed, e.expected, e.actual
             FROM expectation_results e JOIN trials t ON t.id = e.trial_id ORDER BY t.id, e.seq",
        )
        .fetch_all(&mut conn)
        .await
        .unwrap();
        let expected: Vec<(String, i64, String, bool, String, String)> = trials
            .iter()
            .flat_map(|t| {
                t.expectations.iter().enumerate().map(|(i, e)| {
                    let seq = i64::try_from(i).unwrap();
                    (
                        t.id.clone(),
                        seq,
                        e.name.clone(),
                        e.passed,
                        e.expected.clone(),
                        e.actual.clone(),
                    )
                })
            })
            .collect();
        assert!(
            expected.len() > total,
            "{} expectation results",
            expected.len()
        );
        assert_eq!(results, expected);

        // The aggregates hold the sums of all batches.
        let counts: (i64, i64, i64, f64) = sqlx::query_as(
            "SELECT passed, failed, errors, updated_at FROM run_experiments WHERE id = ?",
        )
        .bind(exp_ids.run_experiment)
        .fetch_one(&mut conn)
        .await
        .unwrap();
        let count =
            |v: Verdict| i64::try_from(trials.iter().filter(|t| t.verdict == v).count()).unwrap();
        assert_eq!(
            counts,
            (
                count(Verdict::Pass),
                count(Verdict::Fail),
                count(Verdict::Error),
                now
            )
        );
        let cells: Vec<(String, String, String, i64)> = sqlx::query_as(
            "SELECT phase, fault, verdict, trials FROM coverage_counts
             WHERE version_id = ? ORDER BY phase, fault, verdict",
        )
        .bind(exp_ids.version)
        .fetch_all(&mut conn)
        .await
        .unwrap();
        let mut expected: BTreeMap<(String, String, String), i64> = BTreeMap::new();
        for t in trials.iter().filter(|t| t.fault != BASELINE) {
            let phase = t.injected_phase.clone().unwrap_or_default();
            *expected
                .entry((phase, t.fault.clone(), t.verdict.as_str().to_owned()))
                .or_default() += 1;
        }
        let expected: Vec<_> = expected
            .into_iter()
            .map(|((p, f, v), n)| (p, f, v, n))
            .collect();
        assert!(expected.len() > 1);
        assert_eq!(cells, expected);
    }
}
