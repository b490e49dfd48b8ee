//! One experiment: its versions, coverage matrix and run history.

use std::collections::BTreeMap;

use serde::Serialize;

use super::matrix::Matrix;
use super::{TrendPoint, json_list, not_found};
use crate::report::model::Counts;
use crate::store::Store;

/// How many runs the history lists.
pub const HISTORY_RUNS: i64 = 100;

/// The experiment page.
#[derive(Debug, Clone, Serialize)]
pub struct ExperimentPage {
    /// Its name.
    pub name: String,
    /// Labels of its latest version.
    pub labels: BTreeMap<String, String>,
    /// Every version, newest first.
    pub versions: Vec<VersionBrief>,
    /// The version the matrix is limited to; none: all versions.
    pub version: Option<i64>,
    /// The coverage matrix (axes from the latest version, or the chosen one).
    pub matrix: Matrix,
    /// Its runs, newest first.
    pub runs: Vec<ExperimentRun>,
    /// The YAML of the version shown.
    pub source: String,
    /// The file it came from.
    pub file: String,
}

/// One version of an experiment.
#[derive(Debug, Clone, Serialize)]
pub struct VersionBrief {
    /// Its id (for `?version=`).
    pub id: i64,
    /// SHA-256 of its document.
    pub content_hash: String,
    /// When a run first used it, seconds since the epoch.
    pub first_seen_at: f64,
    /// The file it came from then.
    pub file: String,
}

/// One run in an experiment's history.
#[derive(Debug, Clone, Serialize)]
pub struct ExperimentRun {
    /// The run with its counts for this experiment.
    #[serde(flatten)]
    pub point: TrendPoint,
    /// What started it.
    pub trigger: String,
    /// The seed of this experiment in it.
    pub seed: u64,
    /// Trials planned for this experiment.
    pub planned: u64,
    /// The version's content hash.
    pub content_hash: String,
    /// CI commit, when run in CI.
    pub commit: Option<String>,
    /// CI branch, when run in CI.
    pub branch: Option<String>,
}

#[derive(sqlx::FromRow)]
struct RunRow {
    uid: String,
    started_at: f64,
    status: String,
    trigger: String,
    seed: i64,
    planned: i64,
    passed: i64,
    failed: i64,
    errors: i64,
    content_hash: String,
    ci_commit: Option<String>,
    ci_branch: Option<String>,
}

/// Reads the page of experiment `name`, its matrix limited to `version` when given.
pub async fn experiment(
    store: &Store,
    name: &str,
    version: Option<i64>,
) -> anyhow::Result<ExperimentPage> {
    let mut conn = store.pool.acquire().await?;
    let (id, latest): (i64, i64) =
        sqlx::query_as("SELECT id, latest_version_id FROM experiments WHERE name = ?")
            .bind(name)
            .fetch_optional(&mut *conn)
            .await?
            .ok_or_else(|| not_found("experiment", name))?;
    let versions: Vec<(i64, String, f64, String)> = sqlx::query_as(
        "SELECT id, content_hash, first_seen_at, file FROM experiment_versions
         WHERE experiment_id = ? ORDER BY first_seen_at DESC, id DESC",
    )
    .bind(id)
    .fetch_all(&mut *conn)
    .await?;
    let shown = version.unwrap_or(latest);
    let (labels, phases, faults, kinds, source, file): (
        String,
        String,
        String,
        Option<String>,
        String,
        String,
    ) = sqlx::query_as(
        "SELECT labels, phases, faults, fault_kinds, source, file FROM experiment_versions
             WHERE id = ? AND experiment_id = ?",
    )
    .bind(shown)
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or_else(|| not_found("version", &shown.to_string()))?;
    let matrix = super::matrix::matrix(
        &mut conn,
        id,
        version,
        &json_list(&phases),
        &json_list(&faults),
        &super::matrix::kinds_of(kinds.as_deref()),
    )
    .await?;
    let rows: Vec<RunRow> = sqlx::query_as(
        "SELECT r.uid, re.started_at, r.status, r.trigger, re.seed, re.planned, re.passed,
            re.failed, re.errors, v.content_hash, r.ci_commit, r.ci_branch
         FROM run_experiments re
         JOIN runs r ON r.id = re.run_id
         JOIN experiment_versions v ON v.id = re.version_id
         WHERE re.experiment_id = ?
         ORDER BY re.started_at DESC, re.id DESC LIMIT ?",
    )
    .bind(id)
    .bind(HISTORY_RUNS)
    .fetch_all(&mut *conn)
    .await?;
    let runs = rows
        .into_iter()
        .map(|r| ExperimentRun {
            point: TrendPoint {
                run: r.uid,
                started_at: r.started_at,
                status: r.status,
                counts: Counts::new(r.passed, r.failed, r.errors),
            },
            trigger: r.trigger,
            seed: crate::store::write::u64_from_sql(r.seed),
            planned: u64::try_from(r.planned).unwrap_or(0),
            content_hash: r.content_hash,
            commit: r.ci_commit,
            branch: r.ci_branch,
        })
        .collect();
    Ok(ExperimentPage {
        name: name.to_owned(),
        labels: serde_json::from_str(&labels).unwrap_or_default(),
        versions: versions
            .into_iter()
            .map(|(id, content_hash, first_seen_at, file)| VersionBrief {
                id,
                content_hash,
                first_seen_at,
                file,
            })
            .collect(),
        version,
        matrix,
        runs,
        source,
        file,
    })
}
