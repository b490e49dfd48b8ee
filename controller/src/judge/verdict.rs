//! From expectation results to a verdict, and the trials that end before any is judged.

use atropos_injector::{Observation, StopReason};

use crate::record::{ExpectationResult, Verdict};

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

impl Judgement {
    /// Pass when every expectation held, else fail with one reason per failed one.
    pub(super) fn of(expectations: Vec<ExpectationResult>) -> Judgement {
        let reasons: Vec<String> = expectations
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
            expectations,
            verdict,
            reasons,
        }
    }

    /// An error with one reason and nothing judged.
    fn error(reason: String) -> Judgement {
        Judgement {
            expectations: Vec::new(),
            verdict: Verdict::Error,
            reasons: vec![reason],
        }
    }
}

/// The error judgement of a trial that says nothing about the target: the harness failed,
/// or atropos was interrupted and killed the target itself.
pub(super) fn stopped_early(obs: &Observation, attached: bool) -> Option<Judgement> {
    if let Some(error) = &obs.error {
        return Some(Judgement::error(format!("harness: {error}")));
    }
    if obs.stop == StopReason::Interrupted {
        let target = if attached {
            "the attached process was left as it was"
        } else {
            "the target was killed"
        };
        return Some(Judgement::error(format!(
            "interrupted: atropos was stopped before the trial ended; {target}"
        )));
    }
    None
}

/// One expectation's result.
pub(super) fn result(
    name: impl Into<String>,
    passed: bool,
    expected: impl Into<String>,
    actual: impl Into<String>,
) -> ExpectationResult {
    ExpectationResult {
        name: name.into(),
        passed,
        expected: expected.into(),
        actual: actual.into(),
    }
}
