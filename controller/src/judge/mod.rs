//! Judging a trial: each expectation against what was observed, one line per failure.
//!
//! Judging is pure: the runner gathers every fact first (observation, file states, the
//! recovery restart, the check command) and this module only compares. Each kind of
//! expectation is one function from the facts it needs to its results, in its own file
//! with its own table of cases; [`judge`] calls them in a fixed order, which is the order
//! of the expectations and reasons in every report.

use std::time::Duration;

use atropos_injector::Observation;

use crate::plan::{self, PlannedTrial};
use crate::spec::ExitExpect;

mod check;
mod exit;
mod facts;
mod files;
#[cfg(test)]
mod fixture;
mod orphans;
mod output;
mod phases;
mod recover;
mod resources;
#[cfg(test)]
mod tests;
mod text;
mod verdict;

pub use facts::After;
pub use files::FileState;
pub use text::{human, human_ns, nanos, what_happened};
pub use verdict::Judgement;

/// Judges `obs` for `trial` of an experiment with `phases`; `attached`: its target is
/// running processes atropos did not start (their exit is judged only when the experiment
/// asks that they exit, and never by status, which is unknowable).
pub fn judge(
    trial: &PlannedTrial,
    phases: &[String],
    obs: &Observation,
    after: &After,
    grace: Duration,
    attached: bool,
) -> Judgement {
    if let Some(early) = verdict::stopped_early(obs, attached) {
        return early;
    }
    let expect = &trial.expect;
    let baseline = trial.fault.is_none();
    let any_exit = ExitExpect::default();

    let mut results = phases::phases(baseline, phases, expect.reaches.as_deref(), obs);
    if !attached || expect.exit.is_some() {
        results.push(exit::exit(
            expect.exit.as_ref().unwrap_or(&any_exit),
            obs,
            grace,
        ));
    }
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
    Judgement::of(results)
}
