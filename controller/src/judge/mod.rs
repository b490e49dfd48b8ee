//! Judging a trial: each expectation against what was observed, one line per failure.
//!
//! Judging is pure: the runner gathers every fact first (observation, file states, the
//! recovery restart, the check command) and this module only compares.

use std::time::Duration;

use atropos_injector::{Observation, StopReason, Stream};

use crate::plan::{self, PlannedTrial};
use crate::record::{CheckRun, ExpectationResult, Recovery, Verdict};
use crate::spec::{ExitExpect, OrphanPolicy};

mod exit;
#[cfg(test)]
mod fixture;
mod phases;
mod text;
mod verdict;

use text::{clip, human};
pub use text::{human_ns, what_happened};

/// A file expectation and what was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileState {
    /// The path as checked.
    pub path: String,
    /// Whether it must exist (else: must not).
    pub must_exist: bool,
    /// Whether it existed.
    pub exists: bool,
}

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
    let expect = &trial.expect;
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

    let mut results: Vec<ExpectationResult> = phases::phases(
        trial.fault.is_none(),
        phases,
        expect.reaches.as_deref(),
        obs,
    );
    let any_exit = ExitExpect::default();
    results.push(exit::exit(
        expect.exit.as_ref().unwrap_or(&any_exit),
        obs,
        grace,
    ));
    let mut push = |name: &str, passed: bool, expected: String, actual: String| {
        results.push(ExpectationResult {
            name: name.to_owned(),
            passed,
            expected,
            actual,
        });
    };

    // Output.
    for (w, hit) in plan::watches(expect).iter().zip(&obs.watches) {
        let stream = match w.stream {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        };
        if w.required {
            let actual = match &hit.first {
                Some(l) => format!("matched at {}: `{}`", human_ns(l.at_ns), clip(&l.text, 120)),
                None => format!(
                    "no {stream} line matched ({} lines read)",
                    if stream == "stdout" {
                        obs.lines.0
                    } else {
                        obs.lines.1
                    }
                ),
            };
            push(
                &w.name,
                hit.first.is_some(),
                format!("a {stream} line matching `{}`", w.pattern),
                actual,
            );
        } else {
            let actual = match &hit.first {
                Some(l) => format!(
                    "{} matched, first at {}: `{}`",
                    hit.count,
                    human_ns(l.at_ns),
                    clip(&l.text, 120)
                ),
                None => "none matched".to_owned(),
            };
            push(
                &w.name,
                hit.first.is_none(),
                format!("no {stream} line matching `{}`", w.pattern),
                actual,
            );
        }
    }

    // Orphans.
    if let Some(policy) = expect.orphans {
        let actual = if obs.orphans.is_empty() {
            "none was left".to_owned()
        } else {
            let list: Vec<String> = obs
                .orphans
                .iter()
                .map(|o| {
                    format!(
                        "pid {} `{}`{}{}",
                        o.pid,
                        clip(
                            if o.cmdline.is_empty() {
                                &o.comm
                            } else {
                                &o.cmdline
                            },
                            80
                        ),
                        if o.left_group {
                            " (outside its process group)"
                        } else {
                            ""
                        },
                        if o.killed {
                            ", killed by atropos"
                        } else {
                            ", could not be killed"
                        }
                    )
                })
                .collect();
            format!("{} left behind: {}", obs.orphans.len(), list.join("; "))
        };
        let passed = policy == OrphanPolicy::Allowed || obs.orphans.is_empty();
        push(
            "orphans",
            passed,
            "no process left behind after the main process ended".to_owned(),
            actual,
        );
    }

    // Files.
    let (mut present, mut absent) = (0, 0);
    for f in &after.files {
        let name = if f.must_exist {
            present += 1;
            format!("files.present[{}]", present - 1)
        } else {
            absent += 1;
            format!("files.absent[{}]", absent - 1)
        };
        let (expected, actual) = if f.must_exist {
            (
                format!("{} to exist", f.path),
                if f.exists {
                    "it does".to_owned()
                } else {
                    "it does not".to_owned()
                },
            )
        } else {
            (
                format!("{} to be absent", f.path),
                if f.exists {
                    "it still exists".to_owned()
                } else {
                    "it is absent".to_owned()
                },
            )
        };
        push(&name, f.exists == f.must_exist, expected, actual);
    }

    // Recovery.
    if let (Some(rec), Some(spec)) = (&after.recovery, &expect.recover) {
        let expected = format!(
            "a restart to reach `{}` within {}",
            spec.reaches,
            human(spec.within)
        );
        match rec.reached_ns {
            Some(at) if at <= u64::try_from(spec.within.as_nanos()).unwrap_or(u64::MAX) => {
                push(
                    "recover",
                    true,
                    expected,
                    format!("reached it after {}", human_ns(at)),
                );
            }
            Some(at) => push(
                "recover",
                false,
                expected,
                format!("it took {}", human_ns(at)),
            ),
            None => push(
                "recover",
                false,
                expected,
                format!("it did not: {}", what_happened(&rec.observation)),
            ),
        }
    }

    // Check command.
    if let Some(check) = &after.check {
        let shown = check.command.join(" ");
        let last = check
            .output
            .last()
            .map(|l| format!(": `{}`", clip(l, 160)))
            .unwrap_or_default();
        let actual = match check.code {
            Some(0) => format!("it exited 0{last}"),
            Some(code) => format!("it exited {code}{last}"),
            None => format!("it did not finish in time or was killed{last}"),
        };
        push(
            "check",
            check.code == Some(0),
            format!("`{}` to exit 0", clip(&shown, 120)),
            actual,
        );
    }

    // Resources.
    if let (Some(limits), Some(used)) = (&expect.resources, &obs.resources) {
        if let Some(max) = limits.max_threads {
            push(
                "resources.max_threads",
                used.max_threads <= max,
                format!("at most {max} threads"),
                format!("peaked at {}", used.max_threads),
            );
        }
        if let Some(max) = limits.max_rss {
            let peak = crate::spec::ByteSize(used.max_rss_bytes);
            push(
                "resources.max_rss",
                used.max_rss_bytes <= max.0,
                format!("RSS at most {max}"),
                format!("peaked at {peak}"),
            );
        }
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
