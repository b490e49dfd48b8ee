//! The overview: every experiment with its last verdict, pass rate, coverage and trend,
//! those whose last run failed first.

use std::collections::BTreeMap;

use serde::Serialize;
use sqlx::sqlite::SqliteConnection;

use super::json_list;
use crate::report::model::Counts;
use crate::store::Store;

/// How many recent runs the pass rate and the trend cover.
pub const TREND_RUNS: i64 = 30;

/// The overview page.
#[derive(Debug, Clone, Serialize)]
pub struct Overview {
    /// Experiments: failing first, then by name.
    pub experiments: Vec<ExperimentSummary>,
    /// Runs in the store.
    pub runs: u64,
    /// Trials of the experiments' last [`TREND_RUNS`] runs, by verdict.
    pub recent_trials: Counts,
    /// Runs still being written.
    pub running: u64,
}

/// One experiment on the overview.
#[derive(Debug, Clone, Serialize)]
pub struct ExperimentSummary {
    /// Its name.
    pub name: String,
    /// Labels of its latest version.
    pub labels: BTreeMap<String, String>,
    /// Its latest run, if any.
    pub last: Option<TrendPoint>,
    /// Trials of the last [`TREND_RUNS`] runs by verdict.
    pub recent: Counts,
    /// Covered cells of the coverage matrix.
    pub covered: usize,
    /// All cells of the coverage matrix.
    pub cells: usize,
    /// Covered cells in percent (none without faults).
    pub coverage_percent: Option<u64>,
    /// The last runs, oldest first.
    pub trend: Vec<TrendPoint>,
}

/// One run of one experiment in a trend.
#[derive(Debug, Clone, Serialize)]
pub struct TrendPoint {
    /// The run id.
    pub run: String,
    /// When it started, seconds since the epoch.
    pub started_at: f64,
    /// `running`, `finished` or `interrupted`.
    pub status: String,
    /// Its trials of this experiment by verdict.
    pub counts: Counts,
}

#[derive(sqlx::FromRow)]
struct ExperimentRow {
    id: i64,
    name: String,
    labels: String,
    phases: String,
    fault_kinds: Option<String>,
}

#[derive(sqlx::FromRow)]
struct TrendRow {
    uid: String,
    started_at: f64,
    status: String,
    passed: i64,
    failed: i64,
    errors: i64,
}

/// The latest `limit` runs of experiment `id`, oldest first.
pub(crate) async fn trend(
    conn: &mut SqliteConnection,
    id: i64,
    limit: i64,
) -> anyhow::Result<Vec<TrendPoint>> {
    let rows: Vec<TrendRow> = sqlx::query_as(
        "SELECT r.uid, re.started_at, r.status, re.passed, re.failed, re.errors
         FROM run_experiments re JOIN runs r ON r.id = re.run_id
         WHERE re.experiment_id = ?
         ORDER BY re.started_at DESC, re.id DESC LIMIT ?",
    )
    .bind(id)
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows
        .into_iter()
        .rev()
        .map(|r| TrendPoint {
            run: r.uid,
            started_at: r.started_at,
            status: r.status,
            counts: Counts::new(r.passed, r.failed, r.errors),
        })
        .collect())
}

/// Reads the overview.
pub async fn overview(store: &Store) -> anyhow::Result<Overview> {
    let mut conn = store.pool.acquire().await?;
    let rows: Vec<ExperimentRow> = sqlx::query_as(
        "SELECT e.id, e.name, v.labels, v.phases, v.fault_kinds
         FROM experiments e JOIN experiment_versions v ON v.id = e.latest_version_id
         ORDER BY e.name",
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut experiments = Vec::with_capacity(rows.len());
    for row in rows {
        let trend = trend(&mut conn, row.id, TREND_RUNS).await?;
        let matrix = super::matrix::coverage(
            &mut conn,
            row.id,
            None,
            &json_list(&row.phases),
            &super::matrix::kinds_of(row.fault_kinds.as_deref()),
        )
        .await?;
        let mut recent = Counts::default();
        for point in &trend {
            recent.merge(point.counts);
        }
        experiments.push(ExperimentSummary {
            name: row.name,
            labels: serde_json::from_str(&row.labels).unwrap_or_default(),
            last: trend.last().cloned(),
            recent,
            covered: matrix.covered,
            cells: matrix.required,
            coverage_percent: matrix.percent(),
            trend,
        });
    }
    // What needs attention first: failing, then erroring, running, passing, never run.
    experiments.sort_by_key(|e| {
        let rank = match &e.last {
            Some(p) if p.status == "running" => 2,
            Some(p) => match p.counts.state() {
                super::CellState::Fail => 0,
                super::CellState::Error => 1,
                super::CellState::Pass => 3,
                super::CellState::Uncovered => 4,
            },
            None => 4,
        };
        (rank, e.name.clone())
    });
    let (runs, running): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM runs), (SELECT count(*) FROM runs WHERE status = 'running')",
    )
    .fetch_one(&mut *conn)
    .await?;
    let mut recent_trials = Counts::default();
    for e in &experiments {
        recent_trials.merge(e.recent);
    }
    Ok(Overview {
        experiments,
        runs: u64::try_from(runs).unwrap_or(0),
        running: u64::try_from(running).unwrap_or(0),
        recent_trials,
    })
}
