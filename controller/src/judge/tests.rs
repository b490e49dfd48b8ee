//! [`judge`](super::judge) as a whole: the trials judged before any expectation, the verdict,
//! and the order of expectations and reasons across kinds.

use std::time::Duration;

use atropos_injector::{Signal, StopReason, Stream};

use super::fixture::obs;
use super::*;
use crate::record::{CheckRun, Recovery, Verdict};
use crate::spec::{Expect, OrphanPolicy, OutputExpect, Recover, ResourceLimits};

struct Case {
    name: &'static str,
    fault: Option<usize>,
    expect: Expect,
    obs: Observation,
    after: After,
    verdict: Verdict,
    names: &'static [&'static str],
    reasons: &'static [&'static str],
}

fn trial(fault: Option<usize>, expect: Expect) -> PlannedTrial {
    PlannedTrial {
        id: "run-1-t0".to_owned(),
        fault,
        fault_name: if fault.is_some() { "kill" } else { "baseline" }.to_owned(),
        index: 0,
        fractions: Vec::new(),
        expect: expect.into(),
    }
}

fn every_kind() -> Expect {
    Expect {
        exit: Some(ExitExpect {
            codes: vec![0],
            signals: vec![],
            within: None,
        }),
        reaches: Some(vec!["ready".to_owned()]),
        stdout: Some(OutputExpect {
            contains: vec!["^done$".to_owned()],
            not_contains: vec![],
        }),
        stderr: None,
        orphans: Some(OrphanPolicy::None),
        files: None,
        recover: Some(Recover {
            reaches: "ready".to_owned(),
            within: Duration::from_secs(2),
        }),
        check: None,
        resources: Some(ResourceLimits {
            max_threads: Some(1),
            max_rss: None,
        }),
    }
}

#[test]
fn judge_runs_every_kind_in_a_fixed_order_and_fails_on_any_failure() {
    let cases = vec![
        Case {
            name: "a harness error is an error with nothing judged",
            fault: Some(0),
            expect: every_kind(),
            obs: obs()
                .error("failed to spawn `./app`: no such file")
                .exited(0, 1)
                .build(),
            after: After::default(),
            verdict: Verdict::Error,
            names: &[],
            reasons: &["harness: failed to spawn `./app`: no such file"],
        },
        Case {
            name: "an interrupted trial is an error with nothing judged",
            fault: None,
            expect: Expect::default(),
            obs: obs()
                .stop(StopReason::Interrupted)
                .killed(Signal::KILL, 1)
                .build(),
            after: After::default(),
            verdict: Verdict::Error,
            names: &[],
            reasons: &[
                "interrupted: atropos was stopped before the trial ended; the target was killed",
            ],
        },
        Case {
            name: "a baseline that entered its phases and stopped passes",
            fault: None,
            expect: Expect::default(),
            obs: obs()
                .phase("ready", Some(1_000_000))
                .stop_signal(Signal::TERM)
                .stop(StopReason::Stopped)
                .killed(Signal::TERM, 2_000_000)
                .build(),
            after: After::default(),
            verdict: Verdict::Pass,
            names: &["reaches ready", "exit"],
            reasons: &[],
        },
        Case {
            name: "every kind is judged, in order, with a reason per failure",
            fault: Some(0),
            expect: every_kind(),
            obs: obs()
                .phase("ready", None)
                .missed("ready", 2_000_000_000, "start")
                .skipped(0, "phase `ready` was never entered")
                .stop(StopReason::PhaseDeadline)
                .killed(Signal::KILL, 2_000_000_000)
                .unmatched(Stream::Stdout, "^done$")
                .peak(2, 1 << 20)
                .build(),
            after: After {
                files: vec![FileState {
                    path: "out".to_owned(),
                    must_exist: true,
                    exists: false,
                }],
                recovery: Some(Recovery {
                    phase: "ready".to_owned(),
                    reached_ns: Some(1_000_000_000),
                    observation: obs().phase("ready", Some(1_000_000_000)).build(),
                    attached: None,
                }),
                check: Some(CheckRun {
                    command: vec!["true".to_owned()],
                    code: Some(0),
                    duration_ns: 1_000_000,
                    output: vec![],
                }),
            },
            verdict: Verdict::Fail,
            names: &[
                "reaches ready",
                "reaches ready within",
                "fault step 1",
                "exit",
                "stdout.contains[0]",
                "orphans",
                "files.present[0]",
                "recover",
                "check",
                "resources.max_threads",
            ],
            reasons: &[
                "reaches ready: expected phase `ready` to be entered, but it never was: killed by SIGKILL at 2s",
                "reaches ready within: expected phase `ready` entered within 2s, but it was not: the target was still in phase `start` at 2s; killed with SIGKILL",
                "fault step 1: expected the step to be delivered, but phase `ready` was never entered; killed by SIGKILL at 2s",
                "exit: expected exit code 0, but not reached: a phase missed its deadline and atropos killed the target",
                "stdout.contains[0]: expected a stdout line matching `^done$`, but no stdout line matched (0 lines read)",
                "files.present[0]: expected out to exist, but it does not",
                "resources.max_threads: expected at most 1 threads, but peaked at 2",
            ],
        },
    ];
    assert_eq!(cases.len(), 4);
    let declared = vec!["ready".to_owned()];
    for c in &cases {
        let trial = trial(c.fault, c.expect.clone());
        let got = judge(
            &trial,
            &declared,
            &c.obs,
            &c.after,
            Duration::from_secs(5),
            false,
        );
        let names: Vec<&str> = got.expectations.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(got.verdict, c.verdict, "case `{}`: verdict", c.name);
        assert_eq!(names, c.names, "case `{}`: expectations", c.name);
        assert_eq!(got.reasons, c.reasons, "case `{}`: reasons", c.name);
    }
}
