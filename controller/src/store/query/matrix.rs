//! The coverage matrix of one experiment: phases (rows, with the implicit `start` and
//! `exited`) × faults (columns), each cell the verdicts of the trials that delivered that
//! fault while the target was in that phase. As in `atropos run`'s report, coverage counts
//! the named phases only: `start` and `exited` are shown, never required.

use std::collections::HashMap;

use serde::Serialize;

use super::{EXITED, START};
use crate::report::model::{CellState, Counts};

/// The coverage matrix.
#[derive(Debug, Clone, Serialize)]
pub struct Matrix {
    /// The columns: the experiment's faults (the baseline injects nothing).
    pub faults: Vec<String>,
    /// One row per phase: `start`, the experiment's phases, `exited`.
    pub rows: Vec<MatrixRow>,
    /// Per fault, its trials whose first step was never delivered (phase not reached).
    pub not_injected: Vec<Counts>,
    /// Covered cells of the named phases.
    pub covered: usize,
    /// Cells of the named phases: phases × faults.
    pub cells: usize,
    /// Trials of faults or phases that the experiment no longer has (older versions).
    pub other_trials: u64,
}

/// One phase's row.
#[derive(Debug, Clone, Serialize)]
pub struct MatrixRow {
    /// The phase.
    pub phase: String,
    /// `start` or `exited`: shown, not counted in the coverage.
    pub implicit: bool,
    /// One cell per fault column.
    pub cells: Vec<Cell>,
}

/// One cell.
#[derive(Debug, Clone, Serialize)]
pub struct Cell {
    /// The fault (column).
    pub fault: String,
    /// Trials by verdict.
    pub counts: Counts,
    /// What the cell shows.
    pub state: CellState,
}

impl Matrix {
    /// Builds the matrix over `phases` (the full axis, `start` … `exited`) × `faults` from
    /// counts keyed by (injected phase, fault); the phase `""` means "not injected".
    pub fn build(
        phases: &[String],
        faults: &[String],
        counts: &HashMap<(String, String), Counts>,
    ) -> Matrix {
        let get = |phase: &str, fault: &str| {
            counts
                .get(&(phase.to_owned(), fault.to_owned()))
                .copied()
                .unwrap_or_default()
        };
        let mut used = 0;
        let rows: Vec<MatrixRow> = phases
            .iter()
            .map(|phase| MatrixRow {
                phase: phase.clone(),
                implicit: phase == START || phase == EXITED,
                cells: faults
                    .iter()
                    .map(|fault| {
                        let counts = get(phase, fault);
                        used += counts.total();
                        Cell {
                            fault: fault.clone(),
                            counts,
                            state: counts.state(),
                        }
                    })
                    .collect(),
            })
            .collect();
        let not_injected: Vec<Counts> = faults.iter().map(|f| get("", f)).collect();
        used += not_injected.iter().map(Counts::total).sum::<u64>();
        let all: u64 = counts.values().map(Counts::total).sum();
        let named = rows.iter().filter(|r| !r.implicit);
        let covered = named
            .clone()
            .flat_map(|r| &r.cells)
            .filter(|c| c.state != CellState::Uncovered)
            .count();
        Matrix {
            cells: named.count() * faults.len(),
            faults: faults.to_vec(),
            rows,
            not_injected,
            covered,
            other_trials: all - used,
        }
    }

    /// Covered cells in whole percent; `None` without named phases or faults.
    pub fn percent(&self) -> Option<u64> {
        (self.cells > 0).then(|| (self.covered * 100 / self.cells) as u64)
    }

    /// The cell of `phase` × `fault`.
    pub fn cell(&self, phase: &str, fault: &str) -> Option<&Cell> {
        self.rows
            .iter()
            .find(|r| r.phase == phase)?
            .cells
            .iter()
            .find(|c| c.fault == fault)
    }

    /// Whether any trial of a fault was never delivered.
    pub fn has_not_injected(&self) -> bool {
        self.not_injected.iter().any(|c| c.total() > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(p: &str, f: &str) -> (String, String) {
        (p.to_owned(), f.to_owned())
    }

    #[test]
    fn cells_are_coloured_by_their_trials_and_gaps_stay_uncovered() {
        let phases = vec![
            "start".into(),
            "init".into(),
            "ready".into(),
            "exited".into(),
        ];
        let faults = vec!["term".to_owned(), "kill".to_owned()];
        let mut counts = HashMap::new();
        counts.insert(key("ready", "term"), Counts::new(3, 1, 0));
        counts.insert(key("start", "kill"), Counts::new(2, 0, 0));
        counts.insert(key("", "kill"), Counts::new(0, 0, 1));
        counts.insert(key("ready", "gone-fault"), Counts::new(5, 0, 0));
        let m = Matrix::build(&phases, &faults, &counts);
        assert_eq!(
            (m.covered, m.cells),
            (1, 4),
            "start and exited do not count"
        );
        assert_eq!(m.percent(), Some(25));
        let state = |p: &str, f: &str| m.cell(p, f).map(|c| c.state);
        assert_eq!(state("ready", "term"), Some(CellState::Fail));
        assert_eq!(state("start", "kill"), Some(CellState::Pass));
        assert_eq!(state("exited", "kill"), Some(CellState::Uncovered));
        assert_eq!(m.not_injected[1].error, 1);
        assert!(m.has_not_injected());
        assert_eq!(m.other_trials, 5);
    }
}
