//! Judging a trial: each expectation against what was observed, one line per failure.
//!
//! Judging is pure: the runner gathers every fact first (observation, file states, the
//! recovery restart, the check command) and this module only compares. Each kind of
//! expectation is one function from the facts it needs to its results, in its own file
//! with its own table of cases; [`judge`] calls them in a fixed order, which is the order
//! of the expectations and reasons in every report.

use std::time::Duration;

use atropos_injector::{Observation, StopReason};

use crate::plan::{self, PlannedTrial};
use crate::record::{CheckRun, ExpectationResult, Recovery, Verdict};
use crate::spec::ExitExpect;

mod check;
mod exit;
mod files;
#[cfg(test)]
mod fixture;
mod orphans;
mod output;
mod phases;
mod recover;
mod resources;
mod text;
mod verdict;

pub use files::FileState;
pub use text::{human_ns, what_happened};

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

/// The judgement of one trial.
#[derive(Debug, Clone)]
pub struct Judgement {
    /// Every expectation.
    pub expectations: Vec<ExpectationResult>,
    /// The verdict.
    pub verdict: Verdict,
    /// A line per failure (or the harness error).
    pub reasons: Vec<String>,
}

/// Judges `obs` for `trial` of an experiment with `phases`.
pub fn judge(
    trial: &PlannedTrial,
    phases: &[String],
    obs: &Observation,
    after: &After,
    grace: Duration,
) -> Judgement {
    if let Some(error) = &obs.error {
        let reasons = vec![format!("harness: {error}")];
        return Judgement {
            expectations: Vec::new(),
            verdict: Verdict::Error,
            reasons,
        };
    }
    if obs.stop == StopReason::Interrupted {
        let reasons = vec![
            "interrupted: atropos was stopped before the trial ended; the target was killed"
                .to_owned(),
        ];
        return Judgement {
            expectations: Vec::new(),
            verdict: Verdict::Error,
            reasons,
        };
    }

    let expect = &trial.expect;
    let baseline = trial.fault.is_none();
    let any_exit = ExitExpect::default();

    let mut results = phases::phases(baseline, phases, expect.reaches.as_deref(), obs);
    results.push(exit::exit(
        expect.exit.as_ref().unwrap_or(&any_exit),
        obs,
        grace,
    ));
    results.extend(output::output(
        &plan::watches(expect),
        &obs.watches,
        obs.lines,
    ));
    results.extend(expect.orphans.map(|p| orphans::orphans(p, &obs.orphans)));
    results.extend(files::files(&after.files));
    if let (Some(rec), Some(spec)) = (&after.recovery, &expect.recover) {
        results.push(recover::recover(spec, rec));
    }
    results.extend(after.check.as_ref().map(check::check));
    if let (Some(limits), Some(used)) = (&expect.resources, &obs.resources) {
        results.extend(resources::resources(limits, used));
    }
    let reasons: Vec<String> = results
        .iter()
        .filter(|r| !r.passed)
        .map(ExpectationResult::reason)
        .collect();
    let verdict = if reasons.is_empty() {
        Verdict::Pass
    } else {
        Verdict::Fail
    };
    Judgement {
        expectations: results,
        verdict,
        reasons,
    }
}
