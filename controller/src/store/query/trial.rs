//! One trial as stored, rebuilt into the [`TrialRecord`] that `atropos run` recorded.

use serde::Serialize;
use sqlx::sqlite::SqliteConnection;

use super::not_found;
use crate::record::{ExpectationResult, TrialRecord};
use crate::store::Store;
use atropos_injector::PhaseEntry;

/// A stored trial.
#[derive(Debug, Clone, Serialize)]
pub struct TrialView {
    /// The run it belongs to.
    pub run: String,
    /// When it was committed, seconds since the epoch.
    pub recorded_at: f64,
    /// The record as `atropos run` wrote it.
    pub record: TrialRecord,
}

/// The columns of `trials` (and the experiment name) that rebuild a record.
pub(crate) const TRIAL_COLUMNS: &str = "t.id, t.uid, r.uid AS run_uid, e.name AS experiment,
    t.fault, t.idx, t.offset_spec, t.offset_fraction, t.offset_ns, t.injected_phase,
    t.latency_ns, t.delivery, t.verdict, t.duration_ns, t.recorded_at, t.reasons,
    t.observation, t.recovery, t.check_run, t.node";

/// The joins [`TRIAL_COLUMNS`] needs, after `FROM trials t`.
pub(crate) const TRIAL_JOINS: &str = "JOIN runs r ON r.id = t.run_id
    JOIN run_experiments re ON re.id = t.run_experiment_id
    JOIN experiments e ON e.id = re.experiment_id";

#[derive(sqlx::FromRow)]
pub(crate) struct TrialRow {
    id: i64,
    uid: String,
    run_uid: String,
    experiment: String,
    fault: String,
    idx: i64,
    offset_spec: Option<String>,
    offset_fraction: Option<f64>,
    offset_ns: Option<i64>,
    injected_phase: Option<String>,
    latency_ns: Option<i64>,
    delivery: Option<String>,
    verdict: String,
    duration_ns: i64,
    recorded_at: f64,
    reasons: String,
    observation: String,
    recovery: Option<String>,
    check_run: Option<String>,
    node: Option<String>,
}

fn ns(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// A stored enum name (`pass`, `already_finished`) back into its type.
fn parse_name<T: serde::de::DeserializeOwned>(name: &str) -> anyhow::Result<T> {
    Ok(serde_json::from_value(serde_json::Value::String(
        name.to_owned(),
    ))?)
}

impl TrialRow {
    /// Rebuilds the view, reading the trial's phase events and expectation results.
    pub(crate) async fn into_view(self, conn: &mut SqliteConnection) -> anyhow::Result<TrialView> {
        let phases: Vec<(String, Option<i64>, Option<String>)> = sqlx::query_as(
            "SELECT name, entered_ns, evidence FROM phase_events WHERE trial_id = ? ORDER BY seq",
        )
        .bind(self.id)
        .fetch_all(&mut *conn)
        .await?;
        let expectations: Vec<(String, bool, String, String)> = sqlx::query_as(
            "SELECT name, passed, expected, actual FROM expectation_results
             WHERE trial_id = ? ORDER BY seq",
        )
        .bind(self.id)
        .fetch_all(&mut *conn)
        .await?;
        let mut observation: atropos_injector::Observation =
            serde_json::from_str(&self.observation)?;
        observation.phases = phases
            .into_iter()
            .map(|(name, entered_ns, evidence)| PhaseEntry {
                name,
                entered_ns: entered_ns.map(ns),
                evidence,
            })
            .collect();
        let record = TrialRecord {
            id: self.uid,
            experiment: self.experiment,
            fault: self.fault,
            index: u32::try_from(self.idx).unwrap_or(0),
            offset_spec: self.offset_spec,
            offset_fraction: self.offset_fraction,
            offset_ns: self.offset_ns.map(ns),
            injected_phase: self.injected_phase,
            latency_ns: self.latency_ns.map(ns),
            delivery: self.delivery.as_deref().map(parse_name).transpose()?,
            landed: Vec::new(),
            observation,
            recovery: self
                .recovery
                .as_deref()
                .map(serde_json::from_str)
                .transpose()?,
            check: self
                .check_run
                .as_deref()
                .map(serde_json::from_str)
                .transpose()?,
            expectations: expectations
                .into_iter()
                .map(|(name, passed, expected, actual)| ExpectationResult {
                    name,
                    passed,
                    expected,
                    actual,
                })
                .collect(),
            verdict: parse_name(&self.verdict)?,
            reasons: serde_json::from_str(&self.reasons)?,
            duration_ns: ns(self.duration_ns),
            node: self.node,
        };
        Ok(TrialView {
            run: self.run_uid,
            recorded_at: self.recorded_at,
            record,
        })
    }
}

/// Reads trial `uid`.
pub async fn trial(store: &Store, uid: &str) -> anyhow::Result<TrialView> {
    let mut conn = store.pool.acquire().await?;
    let sql = format!("SELECT {TRIAL_COLUMNS} FROM trials t {TRIAL_JOINS} WHERE t.uid = ?");
    let row: TrialRow = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(uid)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or_else(|| not_found("trial", uid))?;
    row.into_view(&mut conn).await
}
