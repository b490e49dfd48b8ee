//! Two runs of one experiment side by side: which cells of the coverage matrix went from
//! pass to fail, and back.

use std::collections::HashMap;

use serde::Serialize;
use sqlx::sqlite::SqliteConnection;

use super::runs::RunBrief;
use super::{BASELINE, json_list, not_found, phase_axis};
use crate::report::model::{CellState, Counts};
use crate::store::Store;

/// The comparison page.
#[derive(Debug, Clone, Serialize)]
pub struct Compare {
    /// The experiment.
    pub experiment: String,
    /// The earlier run (the base).
    pub a: RunBrief,
    /// The later run.
    pub b: RunBrief,
    /// The columns: `baseline` and the faults of both runs.
    pub faults: Vec<String>,
    /// One row per phase (`start`, the phases of both runs, `exited`), and a last one for
    /// trials not injected (the baseline's among them).
    pub rows: Vec<CompareRow>,
    /// Cells that went from pass to fail (or error).
    pub regressed: usize,
    /// Cells that went from fail (or error) to pass.
    pub fixed: usize,
}

/// One phase in both runs.
#[derive(Debug, Clone, Serialize)]
pub struct CompareRow {
    /// The phase (`not injected` for the last row).
    pub phase: String,
    /// One cell per fault column.
    pub cells: Vec<CompareCell>,
}

/// One cell in both runs.
#[derive(Debug, Clone, Serialize)]
pub struct CompareCell {
    /// The fault.
    pub fault: String,
    /// Run a's trials.
    pub a: Counts,
    /// Run b's trials.
    pub b: Counts,
    /// What changed.
    pub change: CellChange,
}

/// How a cell changed from run a to run b.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CellChange {
    /// Neither run covered it.
    None,
    /// Same state in both.
    Same,
    /// Passed in a, failed (or errored) in b.
    Regressed,
    /// Failed (or errored) in a, passed in b.
    Fixed,
    /// Covered only in b.
    NewlyCovered,
    /// Covered only in a.
    NoLongerCovered,
    /// Failed (or errored) in both the same way.
    StillFailing,
    /// Failed in one and errored in the other.
    Changed,
}

impl CellChange {
    /// The CSS class and JSON name.
    pub fn as_str(self) -> &'static str {
        match self {
            CellChange::None => "none",
            CellChange::Same => "same",
            CellChange::Regressed => "regressed",
            CellChange::Fixed => "fixed",
            CellChange::NewlyCovered => "newly_covered",
            CellChange::NoLongerCovered => "no_longer_covered",
            CellChange::StillFailing => "still_failing",
            CellChange::Changed => "changed",
        }
    }

    fn of(a: CellState, b: CellState) -> CellChange {
        use CellState::{Pass, Uncovered};
        match (a, b) {
            (Uncovered, Uncovered) => CellChange::None,
            (Uncovered, _) => CellChange::NewlyCovered,
            (_, Uncovered) => CellChange::NoLongerCovered,
            (Pass, Pass) => CellChange::Same,
            (Pass, _) => CellChange::Regressed,
            (_, Pass) => CellChange::Fixed,
            (x, y) if x == y => CellChange::StillFailing,
            _ => CellChange::Changed,
        }
    }
}

/// Label of the row of trials whose fault was never delivered.
pub const NOT_INJECTED: &str = "not injected";

type Cells = HashMap<(String, String), Counts>;

/// Trials of one run × experiment by (phase, fault); phase `""` for not injected and
/// for the baseline.
async fn cells_of(
    conn: &mut SqliteConnection,
    run: i64,
    run_experiment: i64,
) -> anyhow::Result<Cells> {
    let rows: Vec<(Option<String>, String, String, i64)> = sqlx::query_as(
        "SELECT injected_phase, fault, verdict, count(*) FROM trials
         WHERE run_id = ? AND run_experiment_id = ? GROUP BY 1, 2, 3",
    )
    .bind(run)
    .bind(run_experiment)
    .fetch_all(&mut *conn)
    .await?;
    let mut cells = Cells::new();
    for (phase, fault, verdict, n) in rows {
        cells
            .entry((phase.unwrap_or_default(), fault))
            .or_default()
            .add(&verdict, n);
    }
    Ok(cells)
}

/// The run × experiment row of `run` and `experiment`: (id, phases, faults).
async fn run_experiment(
    conn: &mut SqliteConnection,
    run: i64,
    experiment: &str,
    uid: &str,
) -> anyhow::Result<(i64, Vec<String>, Vec<String>)> {
    let (id, phases, faults): (i64, String, String) = sqlx::query_as(
        "SELECT re.id, v.phases, v.faults FROM run_experiments re
         JOIN experiments e ON e.id = re.experiment_id
         JOIN experiment_versions v ON v.id = re.version_id
         WHERE re.run_id = ? AND e.name = ?",
    )
    .bind(run)
    .bind(experiment)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or_else(|| not_found("run of this experiment", uid))?;
    Ok((id, json_list(&phases), json_list(&faults)))
}

/// The latest two runs of `experiment`, older first.
pub(crate) async fn latest_two(
    store: &Store,
    experiment: &str,
) -> anyhow::Result<Option<(String, String)>> {
    let mut conn = store.pool.acquire().await?;
    let uids: Vec<String> = sqlx::query_scalar(
        "SELECT r.uid FROM run_experiments re
         JOIN runs r ON r.id = re.run_id JOIN experiments e ON e.id = re.experiment_id
         WHERE e.name = ? ORDER BY re.started_at DESC, re.id DESC LIMIT 2",
    )
    .bind(experiment)
    .fetch_all(&mut *conn)
    .await?;
    Ok(match uids.as_slice() {
        [b, a] => Some((a.clone(), b.clone())),
        _ => None,
    })
}

/// Compares runs `a` and `b` of `experiment`; without run ids, its latest two runs.
pub async fn compare(
    store: &Store,
    experiment: &str,
    runs: Option<(String, String)>,
) -> anyhow::Result<Compare> {
    let (a_uid, b_uid) = match runs {
        Some(pair) => pair,
        None => latest_two(store, experiment)
            .await?
            .ok_or_else(|| not_found("pair of runs of experiment", experiment))?,
    };
    let mut conn = store.pool.acquire().await?;
    let (a_id, a) = super::run::run_brief(&mut conn, &a_uid).await?;
    let (b_id, b) = super::run::run_brief(&mut conn, &b_uid).await?;
    let (a_re, a_phases, a_faults) = run_experiment(&mut conn, a_id, experiment, &a_uid).await?;
    let (b_re, b_phases, b_faults) = run_experiment(&mut conn, b_id, experiment, &b_uid).await?;
    let a_cells = cells_of(&mut conn, a_id, a_re).await?;
    let b_cells = cells_of(&mut conn, b_id, b_re).await?;

    let mut phases = phase_axis(&b_phases);
    for p in phase_axis(&a_phases) {
        if !phases.contains(&p) {
            phases.insert(phases.len() - 1, p);
        }
    }
    let mut faults = vec![BASELINE.to_owned()];
    for f in b_faults.iter().chain(&a_faults) {
        if !faults.contains(f) {
            faults.push(f.clone());
        }
    }
    let mut rows_axis = phases;
    rows_axis.push(String::new());
    let (mut regressed, mut fixed) = (0, 0);
    let rows = rows_axis
        .into_iter()
        .map(|phase| {
            let cells = faults
                .iter()
                .map(|fault| {
                    let key = (phase.clone(), fault.clone());
                    let a = a_cells.get(&key).copied().unwrap_or_default();
                    let b = b_cells.get(&key).copied().unwrap_or_default();
                    let change = CellChange::of(a.state(), b.state());
                    match change {
                        CellChange::Regressed => regressed += 1,
                        CellChange::Fixed => fixed += 1,
                        _ => {}
                    }
                    CompareCell {
                        fault: fault.clone(),
                        a,
                        b,
                        change,
                    }
                })
                .collect();
            CompareRow {
                phase: if phase.is_empty() {
                    NOT_INJECTED.to_owned()
                } else {
                    phase
                },
                cells,
            }
        })
        .collect();
    Ok(Compare {
        experiment: experiment.to_owned(),
        a,
        b,
        faults,
        rows,
        regressed,
        fixed,
    })
}
