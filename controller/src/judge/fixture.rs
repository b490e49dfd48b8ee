//! Test fixtures: observations built by a few chained calls rather than struct literals,
//! and the expectation results a table expects.

use atropos_injector::record::{Line, Resources, Skipped, StopSignal, WatchHit};
use atropos_injector::{
    Aim, Delivery, DeliveryOutcome, Exit, MissedPhase, Observation, PhaseEntry, Signal, StopReason,
    Stream,
};

use crate::record::ExpectationResult;

/// An observation under construction; [`obs`] starts one.
pub(super) struct Obs(Observation);

/// An observation of a target that showed nothing: no phase, no output, no exit, no fault.
pub(super) fn obs() -> Obs {
    Obs(Observation {
        pid: Some(4242),
        started_ns: 1_000,
        stop: StopReason::Exited,
        ..Observation::unstarted("t-0", &[])
    })
}

impl Obs {
    /// A declared phase, entered at `entered_ns` or never.
    pub(super) fn phase(mut self, name: &str, entered_ns: Option<u64>) -> Self {
        self.0.phases.push(PhaseEntry {
            name: name.to_owned(),
            entered_ns,
            evidence: None,
        });
        self
    }

    /// The main process exited with `code` at `at_ns`.
    pub(super) fn exited(mut self, code: i32, at_ns: u64) -> Self {
        self.0.exit = Some(Exit {
            code: Some(code),
            signal: None,
            core_dumped: false,
            at_ns,
        });
        self.0.ended_ns = at_ns;
        self
    }

    /// The main process was killed by `signal` at `at_ns`.
    pub(super) fn killed(mut self, signal: Signal, at_ns: u64) -> Self {
        self.0.exit = Some(Exit {
            code: None,
            signal: Some(signal),
            core_dumped: false,
            at_ns,
        });
        self.0.ended_ns = at_ns;
        self
    }

    /// Why the trial stopped watching.
    pub(super) fn stop(mut self, stop: StopReason) -> Self {
        self.0.stop = stop;
        self
    }

    /// When the trial ended.
    pub(super) fn ended(mut self, ended_ns: u64) -> Self {
        self.0.ended_ns = ended_ns;
        self
    }

    /// A fault step delivered `signal` to the main process.
    pub(super) fn delivered(mut self, signal: Signal) -> Self {
        let step = self.0.deliveries.len();
        self.0.deliveries.push(Delivery {
            step,
            signal,
            aim: Aim::Main,
            pids: vec![4242],
            phase: "start".to_owned(),
            trigger_ns: 0,
            offset_ns: 0,
            delivered_ns: 0,
            latency_ns: 0,
            outcome: DeliveryOutcome::Delivered,
            resumed_ns: None,
        });
        self
    }

    /// atropos stopped the target with `signal`.
    pub(super) fn stop_signal(mut self, signal: Signal) -> Self {
        self.0.stop_signal = Some(StopSignal {
            signal,
            at_ns: 0,
            outcome: DeliveryOutcome::Delivered,
        });
        self
    }

    /// Step `step` (0-based) was not carried out, for `reason`.
    pub(super) fn skipped(mut self, step: usize, reason: &str) -> Self {
        self.0.skipped.push(Skipped {
            step,
            reason: reason.to_owned(),
        });
        self
    }

    /// Phase `phase` was due within `within_ns` while the target was still in `in_phase`.
    pub(super) fn missed(mut self, phase: &str, within_ns: u64, in_phase: &str) -> Self {
        self.0.missed = Some(MissedPhase {
            phase: phase.to_owned(),
            within_ns,
            in_phase: in_phase.to_owned(),
        });
        self
    }

    /// The last stdout lines, read 1ms apart.
    pub(super) fn stdout(mut self, lines: &[&str]) -> Self {
        self.0.stdout_tail = tail(lines);
        self
    }

    /// The last stderr lines, read 1ms apart.
    pub(super) fn stderr(mut self, lines: &[&str]) -> Self {
        self.0.stderr_tail = tail(lines);
        self
    }

    /// A watched `pattern` on `stream` that no line matched.
    pub(super) fn unmatched(mut self, stream: Stream, pattern: &str) -> Self {
        self.0.watches.push(WatchHit {
            stream,
            pattern: pattern.to_owned(),
            first: None,
            count: 0,
        });
        self
    }

    /// Peak threads and RSS, as sampled.
    pub(super) fn peak(mut self, max_threads: u64, max_rss_bytes: u64) -> Self {
        self.0.resources = Some(Resources {
            max_threads,
            max_rss_bytes,
            samples: 10,
        });
        self
    }

    /// The harness could not do its part.
    pub(super) fn error(mut self, error: &str) -> Self {
        self.0.error = Some(error.to_owned());
        self
    }

    /// The observation.
    pub(super) fn build(self) -> Observation {
        self.0
    }
}

fn tail(lines: &[&str]) -> Vec<Line> {
    (1..)
        .zip(lines)
        .map(|(ms, text)| Line {
            at_ns: ms * 1_000_000,
            text: (*text).to_owned(),
        })
        .collect()
}

/// The result a table case expects.
pub(super) fn want(name: &str, passed: bool, expected: &str, actual: &str) -> ExpectationResult {
    ExpectationResult {
        name: name.to_owned(),
        passed,
        expected: expected.to_owned(),
        actual: actual.to_owned(),
    }
}

/// Asserts that `got` is exactly `want`, naming the table case and the result that differs.
pub(super) fn assert_results(case: &str, got: &[ExpectationResult], want: &[ExpectationResult]) {
    assert_eq!(
        got.len(),
        want.len(),
        "case `{case}`: {} results, expected {}: {got:#?}",
        got.len(),
        want.len()
    );
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(g, w, "case `{case}`, result {i}");
    }
}
