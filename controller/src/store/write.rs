//! The SQL that writes runs and trials. Each function runs inside the caller's transaction.

use std::collections::HashMap;

use anyhow::Context;
use sqlx::sqlite::SqliteConnection;

use super::owner::Owner;
use crate::record::{RunEnd, RunInfo, RunStatus, TrialRecord};

/// The row ids of one experiment within a run being written.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ExperimentIds {
    pub run_experiment: i64,
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
                (experiment_id, content_hash, file, source, labels, phases, faults, first_seen_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT (experiment_id, content_hash) DO UPDATE SET file = excluded.file
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
        experiments.insert(exp.name.clone(), ExperimentIds { run_experiment });
    }
    Ok(RunIds { run, experiments })
}

/// Writes one trial with its phase events and expectation results, and updates the
/// aggregate tables.
pub(crate) async fn insert_trial(
    conn: &mut SqliteConnection,
    ids: &RunIds,
    t: &TrialRecord,
    now: f64,
) -> anyhow::Result<()> {
    let exp = ids.experiments.get(&t.experiment).with_context(|| {
        format!(
            "trial {} belongs to experiment {}, which its run did not announce",
            t.id, t.experiment
        )
    })?;
    let obs = &t.observation;
    // The phases go to their own table; the rest of the observation stays JSON.
    let mut observation = serde_json::to_value(obs)?;
    if let Some(map) = observation.as_object_mut() {
        map.insert("phases".into(), serde_json::Value::Array(Vec::new()));
    }
    // One statement: the view's trigger spreads it over trials, phase_events and
    // expectation_results, and the triggers on trials update the aggregates.
    sqlx::query(
        "INSERT INTO trial_records (uid, run_id, run_experiment_id, fault, idx, offset_spec,
            offset_fraction, offset_ns, injected_phase, latency_ns, delivery, verdict, stop,
            exit_code, exit_signal, duration_ns, recorded_at, reasons, observation, recovery,
            check_run, phases, expectations)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(&t.id)
    .bind(ids.run)
    .bind(exp.run_experiment)
    .bind(&t.fault)
    .bind(t.index)
    .bind(&t.offset_spec)
    .bind(t.offset_fraction)
    .bind(t.offset_ns.map(ns_to_sql))
    .bind(&t.injected_phase)
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
    .bind(serde_json::to_string(&observation)?)
    .bind(t.recovery.as_ref().map(serde_json::to_string).transpose()?)
    .bind(t.check.as_ref().map(serde_json::to_string).transpose()?)
    .bind(serde_json::to_string(&obs.phases)?)
    .bind(serde_json::to_string(&t.expectations)?)
    .execute(&mut *conn)
    .await
    .with_context(|| format!("failed to store trial {}", t.id))?;
    Ok(())
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
