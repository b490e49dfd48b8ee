//! What the runner gathers after a trial, beside the observation, for judging.

use crate::record::{CheckRun, Recovery};

use super::FileState;

/// Facts gathered after the trial.
#[derive(Debug, Clone, Default)]
pub struct After {
    /// File expectations.
    pub files: Vec<FileState>,
    /// The recovery restart.
    pub recovery: Option<Recovery>,
    /// The check command.
    pub check: Option<CheckRun>,
}
