//! The SQL that writes runs and trials. Each function runs inside the caller's transaction.

use std::collections::HashMap;

use anyhow::Context;
use sqlx::sqlite::SqliteConnection;

use super::owner::Owner;
use atropos_injector::record::{
    Delivery, Exit, Line, Observation, Orphan, PhaseEntry, Resources, Skipped, StopReason,
    StopSignal, WatchHit,
};
use serde::Serialize;

use crate::plan::BASELINE;
use crate::record::{ExpectationResult, RunEnd, RunInfo, RunStatus, TrialRecord, Verdict};

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

/// The columns of `trials` that [`insert_trials`] writes, in the order it binds them.
const TRIAL_COLUMNS: &str = "uid, run_id, run_experiment_id, fault, idx, offset_spec, \
    offset_fraction, offset_ns, injected_phase, latency_ns, delivery, verdict, stop, exit_code, \
    exit_signal, duration_ns, recorded_at, reasons, observation, recovery, check_run";

/// Most rows in one `INSERT` (SQLite allows 32,766 bound values in a statement; a trial has
/// 21, a phase event 5, an expectation result 6).
const MAX_ROWS: usize = 1000;

/// `head` followed by `rows` copies of `row` separated by commas, then `tail`, as one
/// statement of `sql`.
fn push_values(sql: &mut String, head: &str, row: &str, rows: usize, tail: &str) {
    sql.push_str(head);
    sql.push_str(" VALUES ");
    for i in 0..rows {
        if i > 0 {
            sql.push_str(", ");
        }
        sql.push_str(row);
    }
    sql.push_str(tail);
    sql.push_str(";\n");
}

/// How many trials of one verdict a batch adds to one aggregate row.
#[derive(Default)]
struct Counts {
    passed: i64,
    failed: i64,
    errors: i64,
}

/// Writes trials with their phase events and expectation results, and adds them to the
/// aggregate tables (verdict counts per run × experiment, coverage per version × phase ×
/// fault × verdict). Call it inside a transaction: it is one round trip to the connection's
/// thread, a few statements long, whatever the number of trials.
pub(crate) async fn insert_trials(
    conn: &mut SqliteConnection,
    ids: &RunIds,
    trials: &[&TrialRecord],
    now: f64,
) -> anyhow::Result<()> {
    for chunk in trials.chunks(MAX_ROWS) {
        insert_chunk(conn, ids, chunk, now).await.with_context(|| {
            let first = chunk.first().map_or("", |t| t.id.as_str());
            match chunk.len() {
                1 => format!("failed to store trial {first}"),
                n => format!("failed to store trials {first} and {} more", n - 1),
            }
        })?;
    }
    Ok(())
}

type Query<'q> = sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments>;

async fn insert_chunk(
    conn: &mut SqliteConnection,
    ids: &RunIds,
    trials: &[&TrialRecord],
    now: f64,
) -> anyhow::Result<()> {
    // Each trial with the ids of its experiment in this run.
    let rows = trials
        .iter()
        .map(|t| {
            let exp = ids
                .experiments
                .get(&t.experiment)
                .copied()
                .with_context(|| {
                    format!(
                        "trial {} belongs to experiment {}, which its run did not announce",
                        t.id, t.experiment
                    )
                })?;
            Ok((*t, exp))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    // The aggregates this batch adds to, in a stable order.
    let mut verdicts: std::collections::BTreeMap<i64, Counts> = Default::default();
    let mut coverage: std::collections::BTreeMap<(i64, &str, &str, &str), i64> = Default::default();
    let mut kinds: std::collections::BTreeMap<(i64, &str, &str, &str), i64> = Default::default();
    for (t, exp) in &rows {
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
    let phases: Vec<(&TrialRecord, usize, &PhaseEntry)> = trials
        .iter()
        .flat_map(|t| {
            t.observation
                .phases
                .iter()
                .enumerate()
                .map(move |(i, p)| (*t, i, p))
        })
        .collect();
    let expectations: Vec<(&TrialRecord, usize, &ExpectationResult)> = trials
        .iter()
        .flat_map(|t| {
            t.expectations
                .iter()
                .enumerate()
                .map(move |(i, e)| (*t, i, e))
        })
        .collect();

    let mut sql = String::new();
    push_values(
        &mut sql,
        &format!("INSERT INTO trials ({TRIAL_COLUMNS})"),
        "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        trials.len(),
        "",
    );
    const CHILD: &str = "(SELECT id FROM trials WHERE uid = ?)";
    for part in phases.chunks(MAX_ROWS) {
        push_values(
            &mut sql,
            "INSERT INTO phase_events (trial_id, seq, name, entered_ns, evidence)",
            &format!("({CHILD}, ?, ?, ?, ?)"),
            part.len(),
            "",
        );
    }
    for part in expectations.chunks(MAX_ROWS) {
        push_values(
            &mut sql,
            "INSERT INTO expectation_results (trial_id, seq, name, passed, expected, actual)",
            &format!("({CHILD}, ?, ?, ?, ?, ?)"),
            part.len(),
            "",
        );
    }
    for _ in &verdicts {
        sql.push_str(
            "UPDATE run_experiments SET passed = passed + ?, failed = failed + ?, \
             errors = errors + ?, updated_at = max(updated_at, ?) WHERE id = ?;\n",
        );
    }
    let cells: Vec<_> = coverage.into_iter().collect();
    for part in cells.chunks(MAX_ROWS) {
        push_values(
            &mut sql,
            "INSERT INTO coverage_counts (version_id, phase, fault, verdict, trials)",
            "(?, ?, ?, ?, ?)",
            part.len(),
            " ON CONFLICT (version_id, fault, phase, verdict) \
             DO UPDATE SET trials = trials + excluded.trials",
        );
    }
    let kind_cells: Vec<_> = kinds.into_iter().collect();
    for part in kind_cells.chunks(MAX_ROWS) {
        push_values(
            &mut sql,
            "INSERT INTO kind_coverage (version_id, phase, kind, verdict, trials)",
            "(?, ?, ?, ?, ?)",
            part.len(),
            " ON CONFLICT (version_id, phase, kind, verdict) \
             DO UPDATE SET trials = trials + excluded.trials",
        );
    }

    // The text differs with the batch's shape: not worth a place in the statement cache.
    let mut query: Query<'_> = sqlx::query(sqlx::AssertSqlSafe(sql)).persistent(false);
    for (t, exp) in &rows {
        query = bind_trial(query, ids.run, exp.run_experiment, t, now)?;
    }
    for (t, seq, p) in &phases {
        query = query
            .bind(t.id.clone())
            .bind(i64::try_from(*seq).unwrap_or(i64::MAX))
            .bind(p.name.clone())
            .bind(p.entered_ns.map(ns_to_sql))
            .bind(p.evidence.clone());
    }
    for (t, seq, e) in &expectations {
        query = query
            .bind(t.id.clone())
            .bind(i64::try_from(*seq).unwrap_or(i64::MAX))
            .bind(e.name.clone())
            .bind(e.passed)
            .bind(e.expected.clone())
            .bind(e.actual.clone());
    }
    for (run_experiment, counts) in &verdicts {
        query = query
            .bind(counts.passed)
            .bind(counts.failed)
            .bind(counts.errors)
            .bind(now)
            .bind(*run_experiment);
    }
    for ((version, phase, fault, verdict), n) in &cells {
        query = query
            .bind(*version)
            .bind(phase.to_string())
            .bind(fault.to_string())
            .bind(verdict.to_string())
            .bind(*n);
    }
    for ((version, phase, kind, verdict), n) in &kind_cells {
        query = query
            .bind(*version)
            .bind(phase.to_string())
            .bind(kind.to_string())
            .bind(verdict.to_string())
            .bind(*n);
    }
    query.execute(&mut *conn).await?;
    Ok(())
}

/// Binds the values of one trial's row, in the order of [`TRIAL_COLUMNS`].
fn bind_trial<'q>(
    query: Query<'q>,
    run: i64,
    run_experiment: i64,
    t: &TrialRecord,
    now: f64,
) -> anyhow::Result<Query<'q>> {
    let obs = &t.observation;
    Ok(query
        .bind(t.id.clone())
        .bind(run)
        .bind(run_experiment)
        .bind(t.fault.clone())
        .bind(t.index)
        .bind(t.offset_spec.clone())
        .bind(t.offset_fraction)
        .bind(t.offset_ns.map(ns_to_sql))
        .bind(t.injected_phase.clone())
        .bind(t.latency_ns.map(ns_to_sql))
        .bind(t.delivery.map(|d| d.as_str()))
        .bind(t.verdict.as_str())
        .bind(obs.stop.as_str())
        .bind(obs.exit.as_ref().and_then(|e| e.code))
        .bind(
            obs.exit
                .as_ref()
                .and_then(|e| e.signal)
                .map(|s| s.to_string()),
        )
        .bind(ns_to_sql(t.duration_ns))
        .bind(now)
        .bind(serde_json::to_string(&t.reasons)?)
        .bind(serde_json::to_string(&StoredObservation::of(obs))?)
        .bind(t.recovery.as_ref().map(serde_json::to_string).transpose()?)
        .bind(t.check.as_ref().map(serde_json::to_string).transpose()?))
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
    let status = match end.status {
        RunStatus::Finished => "finished",
        RunStatus::Interrupted => "interrupted",
    };
    sqlx::query("UPDATE runs SET status = ?, ended_at = ? WHERE id = ?")
        .bind(status)
        .bind(end.ended_at)
        .bind(run)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly")]

    use super::*;
    use crate::store::synthetic;

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
}
