//! One run: its facts, its experiments, and its trials filtered by verdict, fault and
//! experiment, a page at a time, failures first.

use serde::{Deserialize, Serialize};

use super::latency::{Latency, latency_of};
use super::runs::{RUN_COLUMNS, RunBrief, RunRow};
use super::trial::{TRIAL_COLUMNS, TRIAL_JOINS, TrialRow, TrialView};
use super::{json_list, not_found};
use crate::report::model::Counts;
use crate::store::Store;

/// Trials per page.
pub const PAGE_SIZE: u32 = 50;

/// Which trials of a run to show (the query string of the run page).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunFilter {
    /// Only this verdict: `pass`, `fail`, `error`.
    #[serde(default, deserialize_with = "empty_is_none")]
    pub verdict: Option<String>,
    /// Only this fault (`baseline` for the trial without faults).
    #[serde(default, deserialize_with = "empty_is_none")]
    pub fault: Option<String>,
    /// Only this experiment.
    #[serde(default, deserialize_with = "empty_is_none")]
    pub experiment: Option<String>,
    /// The page, from 1.
    #[serde(default)]
    pub page: Option<u32>,
}

/// An HTML form sends an unset `<select>` as `name=`: that means "any".
fn empty_is_none<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let v: Option<String> = Option::deserialize(d)?;
    Ok(v.filter(|s| !s.is_empty()))
}

/// The run page.
#[derive(Debug, Clone, Serialize)]
pub struct RunPage {
    /// The run's facts.
    pub run: RunBrief,
    /// Its experiments.
    pub experiments: Vec<RunExperiment>,
    /// The faults its trials used (for the filter).
    pub faults: Vec<String>,
    /// The filter applied.
    pub filter: RunFilter,
    /// Trials matching the filter.
    pub matching: u64,
    /// The page shown, from 1.
    pub page: u32,
    /// Pages in all.
    pub pages: u32,
    /// The trials of this page.
    pub trials: Vec<TrialView>,
    /// The injection latency of its trials.
    pub latency: Latency,
    /// Its stop-condition probes' answers, in time order (at most the last
    /// [`PROBE_ANSWERS`] healthy ones and every failure).
    pub probes: Vec<ProbeAnswer>,
}

/// How many probe answers the run page shows.
pub const PROBE_ANSWERS: u32 = 500;

/// One answer of a stop-condition probe.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct ProbeAnswer {
    /// The probe.
    pub probe: String,
    /// When, seconds since the epoch.
    pub at: f64,
    /// `before`, `during` or `after` the trials.
    pub stage: String,
    /// Healthy or not.
    pub ok: bool,
    /// What it said.
    pub said: String,
}

/// One experiment of a run.
#[derive(Debug, Clone, Serialize)]
pub struct RunExperiment {
    /// Its name.
    pub name: String,
    /// The seed it used.
    pub seed: u64,
    /// Trials planned.
    pub planned: u64,
    /// Trials recorded, by verdict.
    pub counts: Counts,
    /// Its phases in this run's version.
    pub phases: Vec<String>,
    /// Its faults in this run's version.
    pub faults: Vec<String>,
    /// The version's content hash.
    pub content_hash: String,
}

/// Looks up run `uid`.
pub(crate) async fn run_brief(
    conn: &mut sqlx::SqliteConnection,
    uid: &str,
) -> anyhow::Result<(i64, RunBrief)> {
    let sql = format!("SELECT {RUN_COLUMNS} FROM runs r WHERE r.uid = ?");
    let row: RunRow = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(uid)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or_else(|| not_found("run", uid))?;
    Ok((row.id, row.into_brief()))
}

/// Reads the page of run `uid`.
pub async fn run(store: &Store, uid: &str, filter: RunFilter) -> anyhow::Result<RunPage> {
    let mut conn = store.pool.acquire().await?;
    let (id, brief) = run_brief(&mut conn, uid).await?;
    #[expect(clippy::type_complexity, reason = "one row of a query")]
    let rows: Vec<(String, i64, i64, i64, i64, i64, String, String, String)> = sqlx::query_as(
        "SELECT e.name, re.seed, re.planned, re.passed, re.failed, re.errors,
            v.phases, v.faults, v.content_hash
         FROM run_experiments re
         JOIN experiments e ON e.id = re.experiment_id
         JOIN experiment_versions v ON v.id = re.version_id
         WHERE re.run_id = ? ORDER BY re.id",
    )
    .bind(id)
    .fetch_all(&mut *conn)
    .await?;
    let experiments = rows
        .into_iter()
        .map(
            |(name, seed, planned, p, f, e, phases, faults, content_hash)| RunExperiment {
                name,
                seed: crate::store::write::u64_from_sql(seed),
                planned: u64::try_from(planned).unwrap_or(0),
                counts: Counts::new(p, f, e),
                phases: json_list(&phases),
                faults: json_list(&faults),
                content_hash,
            },
        )
        .collect();
    let faults: Vec<String> =
        sqlx::query_scalar("SELECT DISTINCT fault FROM trials WHERE run_id = ? ORDER BY fault")
            .bind(id)
            .fetch_all(&mut *conn)
            .await?;

    let conditions = "t.run_id = ?1 AND (?2 IS NULL OR t.verdict = ?2)
        AND (?3 IS NULL OR t.fault = ?3) AND (?4 IS NULL OR e.name = ?4)";
    let count_sql = format!("SELECT count(*) FROM trials t {TRIAL_JOINS} WHERE {conditions}");
    let matching: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(count_sql))
        .bind(id)
        .bind(&filter.verdict)
        .bind(&filter.fault)
        .bind(&filter.experiment)
        .fetch_one(&mut *conn)
        .await?;
    let matching = u64::try_from(matching).unwrap_or(0);
    let pages = u32::try_from(matching.div_ceil(u64::from(PAGE_SIZE)))
        .unwrap_or(u32::MAX)
        .max(1);
    let page = filter.page.unwrap_or(1).clamp(1, pages);
    let sql = format!(
        "SELECT {TRIAL_COLUMNS} FROM trials t {TRIAL_JOINS} WHERE {conditions}
         ORDER BY re.id, t.verdict = 'pass', t.verdict = 'error', t.fault <> 'baseline', t.fault,
             t.idx LIMIT ?5 OFFSET ?6"
    );
    let rows: Vec<TrialRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .bind(&filter.verdict)
        .bind(&filter.fault)
        .bind(&filter.experiment)
        .bind(PAGE_SIZE)
        .bind((page - 1) * PAGE_SIZE)
        .fetch_all(&mut *conn)
        .await?;
    let mut trials = Vec::with_capacity(rows.len());
    for row in rows {
        trials.push(row.into_view(&mut conn).await?);
    }
    let latency = latency_of(&mut conn, id, &brief.uid, filter.experiment.as_deref()).await?;
    let probes: Vec<ProbeAnswer> = sqlx::query_as(
        "SELECT probe, at, stage, ok, said FROM (
            SELECT * FROM probe_answers WHERE run_id = ?1 AND ok = 0
            UNION ALL
            SELECT * FROM (SELECT * FROM probe_answers WHERE run_id = ?1 AND ok = 1
                ORDER BY at DESC LIMIT ?2)
         ) ORDER BY at",
    )
    .bind(id)
    .bind(PROBE_ANSWERS)
    .fetch_all(&mut *conn)
    .await?;
    Ok(RunPage {
        probes,
        run: brief,
        experiments,
        faults,
        filter,
        matching,
        page,
        pages,
        trials,
        latency,
    })
}
