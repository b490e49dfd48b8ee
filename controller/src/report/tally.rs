//! What a run keeps of its trials while it goes: counters, not records.
//!
//! Every judged record passes through [`RunTally::add`] once and is dropped afterwards (the
//! JSON report and the store have it by then). What stays is bounded by the experiments,
//! their phases, kinds and faults, never by the number of trials: verdict counts, coverage
//! cells, latency values rounded to what is shown, each experiment's baseline, and per fault
//! at most [`KEPT_DETAILS`] lines about its failed trials and its first trials.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::model::{CellCounts, Counts, CoverageMatrix, LatencyStats, count_landings};
use crate::plan::BASELINE;
use crate::record::{ExperimentInfo, RunInfo, TrialRecord, Verdict};

/// Most lines kept per fault about its failed trials, and about its trials in general.
pub const KEPT_DETAILS: usize = 100;

/// What a run keeps of the trials of one experiment.
#[derive(Debug, Clone)]
pub struct ExperimentTally {
    /// The experiment.
    pub info: ExperimentInfo,
    /// The kinds of fault it uses (coverage columns).
    pub kinds: Vec<super::model::FaultKind>,
    /// Every trial by verdict, the baseline included.
    pub counts: Counts,
    /// The baseline's record, once it ran.
    pub baseline: Option<Arc<TrialRecord>>,
    /// Trials per covered (phase, kind).
    pub cells: CellCounts,
    /// Per fault, its trials whose first step never fired (no delivery at all), as the
    /// store's "not injected" row counts them.
    pub not_injected: BTreeMap<String, Counts>,
    /// First-step injection latency of every trial that has one.
    pub latency: LatencyStats,
    /// Per fault (the baseline included), in the order the experiment lists them.
    pub faults: Vec<FaultTally>,
}

/// What a run keeps of the trials of one fault (for JUnit).
#[derive(Debug, Clone, Default)]
pub struct FaultTally {
    /// The fault's name (`baseline` for the trial without faults).
    pub name: String,
    /// Its trials by verdict.
    pub counts: Counts,
    /// Their wall time, summed.
    pub duration_ns: u64,
    /// The first reason of the first trial that did not pass.
    pub first_reason: Option<String>,
    /// A line per failed or erroring trial, the first [`KEPT_DETAILS`] of them.
    pub failures: Vec<String>,
    /// A line per trial, the first [`KEPT_DETAILS`] of them.
    pub trials: Vec<String>,
}

impl FaultTally {
    fn add(&mut self, r: &TrialRecord) {
        self.counts.count(r.verdict);
        self.duration_ns = self.duration_ns.saturating_add(r.duration_ns);
        if r.verdict != Verdict::Pass {
            if self.first_reason.is_none() {
                self.first_reason = r.reasons.first().cloned();
            }
            if self.failures.len() < KEPT_DETAILS {
                self.failures.push(format!(
                    "trial {} ({}): {}",
                    r.index,
                    r.id,
                    r.reasons.join(" | ")
                ));
            }
        }
        if self.trials.len() < KEPT_DETAILS {
            self.trials.push(format!(
                "trial {} {}: phase {} latency {} delivery {}",
                r.index,
                r.verdict,
                r.injected_phase.as_deref().unwrap_or("-"),
                r.latency_ns
                    .map_or_else(|| "-".to_owned(), super::model::human_ns),
                r.delivery.map_or("-", |d| d.as_str())
            ));
        }
    }

    /// Trials not kept in `failures`, or in `trials`.
    pub fn left_out(&self) -> (u64, u64) {
        let bad = self.counts.fail + self.counts.error;
        (
            bad.saturating_sub(self.failures.len() as u64),
            self.counts.total().saturating_sub(self.trials.len() as u64),
        )
    }
}

impl ExperimentTally {
    fn new(info: &ExperimentInfo, run: &RunInfo) -> ExperimentTally {
        let mut names = vec![BASELINE.to_owned()];
        names.extend(info.faults.iter().cloned());
        ExperimentTally {
            info: info.clone(),
            kinds: run.kinds_of(&info.name).to_vec(),
            counts: Counts::default(),
            baseline: None,
            cells: CellCounts::new(),
            not_injected: BTreeMap::new(),
            latency: LatencyStats::default(),
            faults: names
                .into_iter()
                .map(|name| FaultTally {
                    name,
                    ..FaultTally::default()
                })
                .collect(),
        }
    }

    fn add(&mut self, record: &Arc<TrialRecord>) {
        let r = record.as_ref();
        self.counts.count(r.verdict);
        if let Some(l) = r.latency_ns {
            self.latency.add(l);
        }
        if r.fault == BASELINE {
            self.baseline = Some(record.clone());
        } else if r.injected_phase.is_none() {
            self.not_injected
                .entry(r.fault.clone())
                .or_default()
                .count(r.verdict);
        }
        count_landings(&mut self.cells, &r.landed, r.verdict);
        match self.faults.iter_mut().find(|f| f.name == r.fault) {
            Some(fault) => fault.add(r),
            None => {
                let mut fault = FaultTally {
                    name: r.fault.clone(),
                    ..FaultTally::default()
                };
                fault.add(r);
                self.faults.push(fault);
            }
        }
    }

    /// Its coverage matrix.
    pub fn coverage(&self) -> CoverageMatrix {
        CoverageMatrix::build(&self.info.phases, &self.kinds, &self.cells)
    }
}

/// What a run keeps of all its trials.
#[derive(Debug, Clone)]
pub struct RunTally {
    /// One per experiment, in run order.
    pub experiments: Vec<ExperimentTally>,
}

impl RunTally {
    /// An empty tally for the experiments of `run`.
    pub fn new(run: &RunInfo) -> RunTally {
        RunTally {
            experiments: run
                .experiments
                .iter()
                .map(|e| ExperimentTally::new(e, run))
                .collect(),
        }
    }

    /// Counts one judged trial.
    pub fn add(&mut self, record: &Arc<TrialRecord>) {
        if let Some(e) = self
            .experiments
            .iter_mut()
            .find(|e| e.info.name == record.experiment)
        {
            e.add(record);
        }
    }

    /// Every trial by verdict.
    pub fn counts(&self) -> Counts {
        let mut all = Counts::default();
        for e in &self.experiments {
            all.merge(e.counts);
        }
        all
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly")]

    use super::*;
    use crate::record::RunEvent;
    use crate::store::synthetic;

    /// Twenty thousand failing trials leave a tally of the same size as a hundred would:
    /// counters grow, kept lines stop at [`KEPT_DETAILS`] per fault.
    #[test]
    fn a_tally_keeps_counters_and_a_bounded_number_of_lines_whatever_the_trials() {
        let exp = synthetic::experiment(0, 3, 1);
        let events = synthetic::run("r", 0.0, 1, std::slice::from_ref(&exp), 20_000);
        let RunEvent::Started(run) = &events[0] else {
            panic!("a run starts first")
        };
        let mut tally = RunTally::new(run);
        let mut added = 0;
        for event in &events {
            if let RunEvent::Trial(t) = event {
                let mut t = t.as_ref().clone();
                t.verdict = Verdict::Fail;
                t.reasons = vec!["exit: expected 0, but 1".into()];
                tally.add(&Arc::new(t));
                added += 1;
            }
        }
        assert_eq!(added, 20_001);
        let e = &tally.experiments[0];
        assert_eq!(e.counts.fail, 20_001);
        assert_eq!(e.faults.len(), 2, "the baseline and one fault");
        let fault = &e.faults[1];
        assert_eq!(fault.counts.total(), 20_000);
        assert_eq!(fault.failures.len(), KEPT_DETAILS);
        assert_eq!(fault.trials.len(), KEPT_DETAILS);
        assert_eq!(fault.left_out(), (20_000 - 100, 20_000 - 100));
        // Latencies are kept per rounded value: at most 900 per power of ten they span.
        let values: Vec<u64> = e.latency.values().map(|(v, _)| v).collect();
        let decades = values.last().unwrap().ilog10() - values.first().unwrap().ilog10() + 1;
        assert!(values.len() <= 900 * decades as usize, "{}", values.len());
        assert_eq!(e.latency.count(), 20_000);
        assert!(e.cells.len() <= 5, "cells: phases × kinds");
    }
}
