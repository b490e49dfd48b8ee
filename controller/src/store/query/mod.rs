//! Read models: what the dashboard pages, their JSON twins and the CLI show, as plain
//! serialisable structs, each filled by a few indexed queries.

mod compare;

mod experiment;
mod latency;
mod matrix;
mod overview;
mod run;
mod runs;
mod trial;

pub use crate::report::model::{CellState, Counts};
pub use compare::{CellChange, Compare, CompareCell, CompareRow, compare};
pub use experiment::{ExperimentPage, ExperimentRun, VersionBrief, experiment};
pub use latency::{Latency, LatencyBucket, latency};
pub use matrix::{Matrix, NotInjected};
pub use overview::{ExperimentSummary, Overview, TrendPoint, overview};
pub use run::{RunExperiment, RunFilter, RunPage, run};
pub use runs::{RunBrief, RunList, run_state, runs};
pub use trial::{TrialView, trial};

/// The fault name of the trial without faults.
pub const BASELINE: &str = "baseline";

/// The implicit phase before any marker.
pub const START: &str = "start";

/// The implicit phase after the target exited.
pub const EXITED: &str = "exited";

/// A page asked for something the store does not hold.
#[derive(Debug, thiserror::Error)]
#[error("{what} {name:?} is not in the store")]
pub struct NotFound {
    /// `experiment`, `run`, `trial`.
    pub what: &'static str,
    /// The name or id asked for.
    pub name: String,
}

pub(crate) fn not_found(what: &'static str, name: &str) -> anyhow::Error {
    NotFound {
        what,
        name: name.to_owned(),
    }
    .into()
}

/// The matrix columns of an experiment with these phases: `start`, the phases, `exited`.
pub(crate) fn phase_axis(phases: &[String]) -> Vec<String> {
    let mut axis = Vec::with_capacity(phases.len() + 2);
    axis.push(START.to_owned());
    axis.extend(
        phases
            .iter()
            .filter(|p| *p != START && *p != EXITED)
            .cloned(),
    );
    axis.push(EXITED.to_owned());
    axis
}

/// A JSON array of strings as stored in the versions table.
pub(crate) fn json_list(text: &str) -> Vec<String> {
    serde_json::from_str(text).unwrap_or_default()
}
