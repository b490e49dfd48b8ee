//! The coverage matrix of one experiment: faults × phases, each cell the verdicts of the
//! trials that delivered that fault while the target was in that phase.

use std::collections::HashMap;

use serde::Serialize;

use super::counts::{CellState, Counts};

/// The coverage matrix.
#[derive(Debug, Clone, Serialize)]
pub struct Matrix {
    /// The columns: `start`, the experiment's phases, `exited`.
    pub phases: Vec<String>,
    /// One row per fault of the experiment (the baseline has none: it injects nothing).
    pub rows: Vec<MatrixRow>,
    /// Cells with at least one trial.
    pub covered: usize,
    /// All cells.
    pub cells: usize,
    /// Trials of faults or phases that the experiment no longer has (older versions).
    pub other_trials: u64,
}

/// One fault's row.
#[derive(Debug, Clone, Serialize)]
pub struct MatrixRow {
    /// The fault.
    pub fault: String,
    /// One cell per phase column.
    pub cells: Vec<Cell>,
    /// Trials of this fault whose first step was never delivered (its phase not reached).
    pub not_injected: Counts,
}

/// One cell.
#[derive(Debug, Clone, Serialize)]
pub struct Cell {
    /// The phase (column).
    pub phase: String,
    /// Trials by verdict.
    pub counts: Counts,
    /// What the cell shows.
    pub state: CellState,
}

impl Matrix {
    /// Builds the matrix over `phases` (the full axis) × `faults` from counts keyed by
    /// (injected phase, fault); the phase `""` means "not injected".
    pub fn build(
        phases: Vec<String>,
        faults: &[String],
        counts: &HashMap<(String, String), Counts>,
    ) -> Matrix {
        let mut used = 0;
        let rows: Vec<MatrixRow> = faults
            .iter()
            .map(|fault| {
                let cells = phases
                    .iter()
                    .map(|phase| {
                        let counts = counts
                            .get(&(phase.clone(), fault.clone()))
                            .copied()
                            .unwrap_or_default();
                        used += counts.total();
                        Cell {
                            phase: phase.clone(),
                            counts,
                            state: counts.state(),
                        }
                    })
                    .collect();
                let not_injected = counts
                    .get(&(String::new(), fault.clone()))
                    .copied()
                    .unwrap_or_default();
                used += not_injected.total();
                MatrixRow {
                    fault: fault.clone(),
                    cells,
                    not_injected,
                }
            })
            .collect();
        let all: u64 = counts.values().map(Counts::total).sum();
        let covered = rows
            .iter()
            .flat_map(|r| &r.cells)
            .filter(|c| c.state != CellState::Uncovered)
            .count();
        Matrix {
            cells: phases.len() * faults.len(),
            phases,
            rows,
            covered,
            other_trials: all - used,
        }
    }

    /// Covered cells in whole percent; `None` for an experiment without faults.
    pub fn percent(&self) -> Option<u64> {
        (self.cells > 0).then(|| (self.covered * 100 / self.cells) as u64)
    }

    /// The cell of `fault` × `phase`.
    pub fn cell(&self, fault: &str, phase: &str) -> Option<&Cell> {
        self.rows
            .iter()
            .find(|r| r.fault == fault)?
            .cells
            .iter()
            .find(|c| c.phase == phase)
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
        let phases = vec!["start".into(), "ready".into(), "exited".into()];
        let faults = vec!["term".to_owned(), "kill".to_owned()];
        let mut counts = HashMap::new();
        counts.insert(key("ready", "term"), Counts::new(3, 1, 0));
        counts.insert(key("start", "kill"), Counts::new(2, 0, 0));
        counts.insert(key("", "kill"), Counts::new(0, 0, 1));
        counts.insert(key("ready", "gone-fault"), Counts::new(5, 0, 0));
        let m = Matrix::build(phases, &faults, &counts);
        assert_eq!((m.covered, m.cells), (2, 6));
        assert_eq!(m.percent(), Some(33));
        assert_eq!(
            m.cell("term", "ready").map(|c| c.state),
            Some(CellState::Fail)
        );
        assert_eq!(
            m.cell("kill", "start").map(|c| c.state),
            Some(CellState::Pass)
        );
        assert_eq!(
            m.cell("kill", "exited").map(|c| c.state),
            Some(CellState::Uncovered)
        );
        assert_eq!(m.rows[1].not_injected.error, 1);
        assert_eq!(m.other_trials, 5);
    }
}
