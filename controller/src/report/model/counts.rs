//! Trials counted by verdict, and the state of a coverage cell they make: the counts every
//! report and page shows.

use serde::Serialize;

use crate::record::Verdict;

/// Trials by verdict.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Trials that passed.
    pub pass: u64,
    /// Trials that failed.
    pub fail: u64,
    /// Trials the harness could not carry out.
    pub error: u64,
}

/// What a coverage cell shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CellState {
    /// No trial delivered this fault in this phase.
    Uncovered,
    /// Every trial passed.
    Pass,
    /// Some trial failed.
    Fail,
    /// No trial failed, but the harness could not carry out some.
    Error,
}

impl CellState {
    /// `uncovered`, `pass`, `fail` or `error` (also the CSS class).
    pub fn as_str(self) -> &'static str {
        match self {
            CellState::Uncovered => "uncovered",
            CellState::Pass => "pass",
            CellState::Fail => "fail",
            CellState::Error => "error",
        }
    }
}

impl std::fmt::Display for CellState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Counts {
    /// Counts from the columns of an aggregate row.
    pub fn new(pass: i64, fail: i64, error: i64) -> Counts {
        let n = |v: i64| u64::try_from(v).unwrap_or(0);
        Counts {
            pass: n(pass),
            fail: n(fail),
            error: n(error),
        }
    }

    /// Adds `n` trials of `verdict` (as stored: `pass`, `fail`, `error`).
    pub fn add(&mut self, verdict: &str, n: i64) {
        let n = u64::try_from(n).unwrap_or(0);
        match verdict {
            "pass" => self.pass += n,
            "fail" => self.fail += n,
            _ => self.error += n,
        }
    }

    /// Counts one trial of `verdict`.
    pub fn count(&mut self, verdict: Verdict) {
        match verdict {
            Verdict::Pass => self.pass += 1,
            Verdict::Fail => self.fail += 1,
            Verdict::Error => self.error += 1,
        }
    }

    /// Adds another count.
    pub fn merge(&mut self, other: Counts) {
        self.pass += other.pass;
        self.fail += other.fail;
        self.error += other.error;
    }

    /// All trials.
    pub fn total(&self) -> u64 {
        self.pass + self.fail + self.error
    }

    /// Passed ÷ all, when there is any trial.
    pub fn pass_rate(&self) -> Option<f64> {
        #[expect(
            clippy::cast_precision_loss,
            reason = "trial counts are far below 2^52"
        )]
        let rate = (self.total() > 0).then(|| self.pass as f64 / self.total() as f64);
        rate
    }

    /// The pass rate in whole percent, for display.
    pub fn pass_percent(&self) -> Option<u64> {
        #[expect(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "a rate in 0..=1 times 100"
        )]
        let percent = self.pass_rate().map(|r| (r * 100.0).floor() as u64);
        percent
    }

    /// The worst verdict: fail, then error, then pass; `Uncovered` without trials.
    pub fn state(&self) -> CellState {
        if self.fail > 0 {
            CellState::Fail
        } else if self.error > 0 {
            CellState::Error
        } else if self.pass > 0 {
            CellState::Pass
        } else {
            CellState::Uncovered
        }
    }

    /// What a run (or a run of one experiment) with these counts and `status` shows:
    /// `running`, the worst verdict of its trials, or `none` without trials.
    pub fn run_verdict(&self, status: &str) -> &'static str {
        match self.state() {
            _ if status == "running" => "running",
            CellState::Uncovered => "none",
            state => state.as_str(),
        }
    }

    /// The verdict a run with these counts gets: the worst of its trials.
    pub fn verdict(&self) -> Option<Verdict> {
        match self.state() {
            CellState::Uncovered => None,
            CellState::Pass => Some(Verdict::Pass),
            CellState::Fail => Some(Verdict::Fail),
            CellState::Error => Some(Verdict::Error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_single_failure_makes_the_cell_fail() {
        let c = Counts::new(9, 1, 0);
        assert_eq!(c.state(), CellState::Fail);
        assert_eq!(c.pass_percent(), Some(90));
        assert_eq!(Counts::default().state(), CellState::Uncovered);
        assert_eq!(Counts::new(3, 0, 1).state(), CellState::Error);
    }
}
