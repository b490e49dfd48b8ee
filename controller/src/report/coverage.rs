//! The coverage matrix: phases (rows, with the implicit `start` and `exited`) × faults
//! (columns); a cell counts the trials whose first step was delivered in that phase.

use std::collections::BTreeMap;
use std::fmt::Write;

use crate::judge::human_ns;
use crate::record::{ExperimentInfo, TrialRecord, Verdict};

/// Verdict counts of the trials in one cell.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cell {
    /// Passed trials.
    pub pass: usize,
    /// Failed trials.
    pub fail: usize,
    /// Trials in error.
    pub error: usize,
}

impl Cell {
    /// All trials in the cell.
    pub fn total(&self) -> usize {
        self.pass + self.fail + self.error
    }
}

/// The matrix of one experiment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Coverage {
    /// Row names: `start`, the phases, `exited`.
    pub phases: Vec<String>,
    /// Column names: the faults.
    pub faults: Vec<String>,
    /// (phase, fault) → counts; absent = uncovered.
    pub cells: BTreeMap<(String, String), Cell>,
    /// Fault trials whose step was never delivered, by fault.
    pub undelivered: BTreeMap<String, Cell>,
}

impl Coverage {
    /// Builds the matrix from the records of one experiment.
    pub fn build(info: &ExperimentInfo, records: &[&TrialRecord]) -> Coverage {
        let mut phases = vec!["start".to_owned()];
        phases.extend(info.phases.iter().cloned());
        phases.push("exited".to_owned());
        let mut cells: BTreeMap<(String, String), Cell> = BTreeMap::new();
        let mut undelivered: BTreeMap<String, Cell> = BTreeMap::new();
        for r in records.iter().filter(|r| r.fault != crate::plan::BASELINE) {
            let cell = match &r.injected_phase {
                Some(phase) => cells.entry((phase.clone(), r.fault.clone())).or_default(),
                None => undelivered.entry(r.fault.clone()).or_default(),
            };
            match r.verdict {
                Verdict::Pass => cell.pass += 1,
                Verdict::Fail => cell.fail += 1,
                Verdict::Error => cell.error += 1,
            }
        }
        Coverage {
            phases,
            faults: info.faults.clone(),
            cells,
            undelivered,
        }
    }

    /// Covered cells over phases × faults (the implicit rows count only when covered).
    pub fn percent(&self) -> f64 {
        let total = (self.phases.len() - 2) * self.faults.len();
        if total == 0 {
            return 0.0;
        }
        let covered = self
            .cells
            .keys()
            .filter(|(p, _)| p != "start" && p != "exited")
            .count();
        100.0 * covered as f64 / total as f64
    }
}

/// The text summary of one experiment: verdict counts, baseline, the matrix, latency.
pub fn summary(info: &ExperimentInfo, records: &[&TrialRecord]) -> String {
    let mut out = String::new();
    let count = |v: Verdict| records.iter().filter(|r| r.verdict == v).count();
    let _ = writeln!(
        out,
        "{} (seed {}): {} passed, {} failed, {} errors",
        info.name,
        info.seed,
        count(Verdict::Pass),
        count(Verdict::Fail),
        count(Verdict::Error)
    );
    if let Some(b) = records.iter().find(|r| r.fault == crate::plan::BASELINE) {
        let phases: Vec<String> = b
            .observation
            .phases
            .iter()
            .map(|p| match p.entered_ns {
                Some(at) => format!("{} @{}", p.name, human_ns(at)),
                None => format!("{} never", p.name),
            })
            .collect();
        let _ = writeln!(
            out,
            "  baseline: {} — {}",
            b.verdict,
            if phases.is_empty() {
                "no phases".to_owned()
            } else {
                phases.join(", ")
            }
        );
    }
    let cov = Coverage::build(info, records);
    let row_w = cov.phases.iter().map(String::len).max().unwrap_or(5).max(5);
    let col_w: Vec<usize> = cov.faults.iter().map(|f| f.len().max(7)).collect();
    let _ = write!(out, "  {:row_w$}", "phase");
    for (f, w) in cov.faults.iter().zip(&col_w) {
        let _ = write!(out, "  {f:>w$}");
    }
    let _ = writeln!(out);
    for phase in &cov.phases {
        let implicit = phase == "start" || phase == "exited";
        let any = cov
            .faults
            .iter()
            .any(|f| cov.cells.contains_key(&(phase.clone(), f.clone())));
        if implicit && !any {
            continue;
        }
        let _ = write!(out, "  {phase:row_w$}");
        for (f, w) in cov.faults.iter().zip(&col_w) {
            let text = match cov.cells.get(&(phase.clone(), f.clone())) {
                None => "·".to_owned(),
                Some(c) if c.fail + c.error == 0 => format!("{}/{} ok", c.pass, c.total()),
                Some(c) => format!("{}/{} ✗", c.pass, c.total()),
            };
            let _ = write!(out, "  {text:>w$}");
        }
        let _ = writeln!(out);
    }
    if !cov.undelivered.is_empty() {
        let _ = write!(out, "  {:row_w$}", "(none)");
        for (f, w) in cov.faults.iter().zip(&col_w) {
            let text = cov
                .undelivered
                .get(f)
                .map_or_else(|| "·".to_owned(), |c| format!("{}/{} ✗", c.pass, c.total()));
            let _ = write!(out, "  {text:>w$}");
        }
        let _ = writeln!(out);
    }
    let mut lat: Vec<u64> = records.iter().filter_map(|r| r.latency_ns).collect();
    if let Some((p50, p99, max)) = super::percentiles(&mut lat) {
        let _ = writeln!(
            out,
            "  coverage {:.0}% · injection latency p50 {} p99 {} max {} over {} deliveries",
            cov.percent(),
            human_ns(p50),
            human_ns(p99),
            human_ns(max),
            lat.len()
        );
    } else {
        let _ = writeln!(out, "  coverage {:.0}% · no deliveries", cov.percent());
    }
    out
}
