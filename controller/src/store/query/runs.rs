//! The list of recent runs (the dashboard's runs page and `atropos history`).

use serde::Serialize;

use crate::report::model::Counts;
use crate::store::Store;

/// Recent runs.
#[derive(Debug, Clone, Serialize)]
pub struct RunList {
    /// Newest first.
    pub runs: Vec<RunBrief>,
}

/// The facts of one run.
#[derive(Debug, Clone, Serialize)]
pub struct RunBrief {
    /// The run id.
    pub uid: String,
    /// `manual`, `ci`, `schedule` or `api`.
    pub trigger: String,
    /// Who asked for it (`schedule`, or the name an API caller gave).
    pub requested_by: Option<String>,
    /// Why it was aborted.
    pub abort_reason: Option<String>,
    /// The run's seed.
    pub seed: u64,
    /// When it started, seconds since the epoch.
    pub started_at: f64,
    /// When it ended (for an interrupted run: its last commit).
    pub ended_at: Option<f64>,
    /// `queued`, `running`, `finished`, `interrupted`, `aborted` or `skipped`.
    pub status: String,
    /// The run's state for a person: its status, but a finished run is `passed`, `failed`
    /// or `error` by the worst of its trials.
    pub state: String,
    /// atropos's version.
    pub version: String,
    /// CI provider.
    pub ci_provider: Option<String>,
    /// CI commit.
    pub ci_commit: Option<String>,
    /// CI branch.
    pub ci_branch: Option<String>,
    /// CI job.
    pub ci_job: Option<String>,
    /// Trials planned.
    pub planned: u64,
    /// Trials recorded, by verdict.
    pub counts: Counts,
    /// The names of its experiments.
    pub experiments: Vec<String>,
}

/// A run's state for a person: its status, but a finished run is `passed`, `failed` or
/// `error` by the worst of its trials (`failed` and `errors` count them). Every page, the
/// JSON API and the metrics say it this way.
pub fn run_state(status: &str, failed: i64, errors: i64) -> String {
    match status {
        "finished" if failed > 0 => "failed",
        "finished" if errors > 0 => "error",
        "finished" => "passed",
        other => other,
    }
    .to_owned()
}

/// The columns of `runs r` that make a [`RunBrief`].
pub(crate) const RUN_COLUMNS: &str =
    "r.id, r.uid, r.trigger, r.requested_by, r.abort_reason, r.seed, r.started_at, r.ended_at,
    r.status, r.version, r.ci_provider, r.ci_commit, r.ci_branch, r.ci_job, r.planned,
    (SELECT coalesce(sum(passed), 0) FROM run_experiments WHERE run_id = r.id) AS passed,
    (SELECT coalesce(sum(failed), 0) FROM run_experiments WHERE run_id = r.id) AS failed,
    (SELECT coalesce(sum(errors), 0) FROM run_experiments WHERE run_id = r.id) AS errors,
    (SELECT group_concat(e.name, char(10)) FROM run_experiments re
        JOIN experiments e ON e.id = re.experiment_id WHERE re.run_id = r.id) AS experiments";

#[derive(sqlx::FromRow)]
pub(crate) struct RunRow {
    pub id: i64,
    uid: String,
    trigger: String,
    requested_by: Option<String>,
    abort_reason: Option<String>,
    seed: i64,
    started_at: f64,
    ended_at: Option<f64>,
    status: String,
    version: String,
    ci_provider: Option<String>,
    ci_commit: Option<String>,
    ci_branch: Option<String>,
    ci_job: Option<String>,
    planned: i64,
    passed: i64,
    failed: i64,
    errors: i64,
    experiments: Option<String>,
}

impl RunRow {
    pub(crate) fn into_brief(self) -> RunBrief {
        RunBrief {
            uid: self.uid,
            trigger: self.trigger,
            requested_by: self.requested_by,
            abort_reason: self.abort_reason,
            seed: crate::store::write::u64_from_sql(self.seed),
            started_at: self.started_at,
            ended_at: self.ended_at,
            state: run_state(&self.status, self.failed, self.errors),
            status: self.status,
            version: self.version,
            ci_provider: self.ci_provider,
            ci_commit: self.ci_commit,
            ci_branch: self.ci_branch,
            ci_job: self.ci_job,
            planned: u64::try_from(self.planned).unwrap_or(0),
            counts: Counts::new(self.passed, self.failed, self.errors),
            experiments: self
                .experiments
                .map(|s| s.lines().map(str::to_owned).collect())
                .unwrap_or_default(),
        }
    }
}

/// The latest `limit` runs, newest first; only those of experiment `experiment` if given.
pub async fn runs(store: &Store, experiment: Option<&str>, limit: u32) -> anyhow::Result<RunList> {
    let mut conn = store.pool.acquire().await?;
    let sql = format!(
        "SELECT {RUN_COLUMNS} FROM runs r
         WHERE ?1 IS NULL OR r.id IN (SELECT re.run_id FROM run_experiments re
             JOIN experiments e ON e.id = re.experiment_id WHERE e.name = ?1)
         ORDER BY r.started_at DESC, r.id DESC LIMIT ?2"
    );
    let rows: Vec<RunRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(experiment)
        .bind(limit)
        .fetch_all(&mut *conn)
        .await?;
    Ok(RunList {
        runs: rows.into_iter().map(RunRow::into_brief).collect(),
    })
}
