//! Coverage that a user can act on: each named phase × each *kind* of fault the experiment
//! uses.
//!
//! A cell (phase, kind) is covered when a trial delivered a step of that kind (outcome
//! `delivered`) while the target was in that phase; its counts are the verdicts of those
//! trials (a trial counts once per cell, however many of its steps landed there). Only the
//! cells an experiment can reach are required: its named phases × the kinds its faults use,
//! so 100 % is reachable, and every required cell not covered is a [`Gap`] with the fault
//! line that would close it.
//!
//! The implicit phases `start` and `exited` are shown, never required. **After exit** is a
//! kind of its own: a step timed `at: {exited: …}` (and the steps that follow it) aims at a
//! target that is gone, so it can only land in `exited`, and it lands when it is carried out
//! at all (`delivered`, `zombie` or `already_finished`: hitting a finished process is what
//! it is for). Its column therefore has no required cell: it shows whether the after-exit
//! faults ran, and counts neither for nor against the percentage.

use std::collections::BTreeMap;

use atropos_injector::{Action, Delivery, DeliveryOutcome, Signal};
use serde::{Deserialize, Serialize};

use super::counts::{CellState, Counts};
use crate::spec::LoweredFault;

/// The implicit phase before any marker.
pub const START: &str = "start";
/// The implicit phase after the target exited.
pub const EXITED: &str = "exited";

/// What kind of fault a step is, as the coverage columns count it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// SIGKILL.
    Sigkill,
    /// SIGTERM.
    Sigterm,
    /// SIGINT.
    Sigint,
    /// A pause (SIGSTOP, later SIGCONT).
    Pause,
    /// Any other signal (SIGHUP, SIGQUIT, SIGUSR1, ...).
    Other,
    /// A step timed after the target exited, or following one.
    AfterExit,
}

impl FaultKind {
    /// Every kind, in column order.
    pub const ALL: [FaultKind; 6] = [
        FaultKind::Sigkill,
        FaultKind::Sigterm,
        FaultKind::Sigint,
        FaultKind::Pause,
        FaultKind::Other,
        FaultKind::AfterExit,
    ];

    /// The stored name: `sigkill`, `sigterm`, `sigint`, `pause`, `other`, `after_exit`.
    pub fn key(self) -> &'static str {
        match self {
            FaultKind::Sigkill => "sigkill",
            FaultKind::Sigterm => "sigterm",
            FaultKind::Sigint => "sigint",
            FaultKind::Pause => "pause",
            FaultKind::Other => "other",
            FaultKind::AfterExit => "after_exit",
        }
    }

    /// The kind of a stored name.
    pub fn from_key(key: &str) -> Option<FaultKind> {
        FaultKind::ALL.into_iter().find(|k| k.key() == key)
    }

    /// The column heading: `SIGKILL`, `SIGTERM`, `SIGINT`, `pause`, `other signal`,
    /// `after exit`.
    pub fn label(self) -> &'static str {
        match self {
            FaultKind::Sigkill => "SIGKILL",
            FaultKind::Sigterm => "SIGTERM",
            FaultKind::Sigint => "SIGINT",
            FaultKind::Pause => "pause",
            FaultKind::Other => "other signal",
            FaultKind::AfterExit => "after exit",
        }
    }

    /// The kind of a signal or pause aimed at a live target.
    fn of_action(action: &Action) -> FaultKind {
        match action {
            Action::Pause(_) => FaultKind::Pause,
            Action::Signal(sig) if *sig == Signal::KILL => FaultKind::Sigkill,
            Action::Signal(sig) if *sig == Signal::TERM => FaultKind::Sigterm,
            Action::Signal(sig) if *sig == Signal::INT => FaultKind::Sigint,
            Action::Signal(_) => FaultKind::Other,
        }
    }

    /// A fault line that would deliver this kind in `phase`.
    fn example(self, phase: &str) -> String {
        let at = format!("at: {{phase: {phase}, offset: random}}");
        match self {
            FaultKind::Pause => format!("{{pause: 50ms, {at}}}"),
            FaultKind::Other => format!("{{signal: SIGHUP, {at}}}"),
            FaultKind::AfterExit => "{signal: SIGTERM, at: {exited: reaped}}".to_owned(),
            kind => format!("{{signal: {}, {at}}}", kind.label()),
        }
    }
}

impl std::fmt::Display for FaultKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label())
    }
}

/// The kind of each step of a fault, in step order: a step at or after the exit is
/// `after exit` whatever it sends.
pub fn step_kinds(fault: &LoweredFault) -> Vec<FaultKind> {
    fault
        .steps
        .iter()
        .zip(fault.after_exit())
        .map(|(step, after_exit)| {
            if after_exit {
                FaultKind::AfterExit
            } else {
                FaultKind::of_action(&step.action)
            }
        })
        .collect()
}

/// The kinds an experiment's faults use, in column order.
pub fn kinds_used<'a>(faults: impl IntoIterator<Item = &'a LoweredFault>) -> Vec<FaultKind> {
    let mut kinds: Vec<FaultKind> = faults.into_iter().flat_map(step_kinds).collect();
    kinds.sort_unstable();
    kinds.dedup();
    kinds
}

/// Where one trial's steps landed: a covered (phase, kind) cell.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Landing {
    /// The phase the target was in.
    pub phase: String,
    /// The kind of the step.
    pub kind: FaultKind,
}

/// The cells a trial covered, each once: its deliveries whose step kind is in `kinds`
/// (indexed by step) and that landed, as the module documentation defines it.
pub fn landings(kinds: &[FaultKind], deliveries: &[Delivery]) -> Vec<Landing> {
    let mut out: Vec<Landing> = deliveries
        .iter()
        .filter_map(|d| {
            let kind = *kinds.get(d.step)?;
            let landed = match kind {
                FaultKind::AfterExit => matches!(
                    d.outcome,
                    DeliveryOutcome::Delivered
                        | DeliveryOutcome::Zombie
                        | DeliveryOutcome::AlreadyFinished
                ),
                _ => d.outcome == DeliveryOutcome::Delivered,
            };
            landed.then(|| Landing {
                phase: d.phase.clone(),
                kind,
            })
        })
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// Trials per covered cell, as accumulated from records or read from the store.
pub type CellCounts = BTreeMap<(String, FaultKind), Counts>;

/// Adds one trial's landings to `counts`.
pub fn count_landings(
    counts: &mut CellCounts,
    landed: &[Landing],
    verdict: crate::record::Verdict,
) {
    for l in landed {
        counts
            .entry((l.phase.clone(), l.kind))
            .or_default()
            .count(verdict);
    }
}

/// The coverage of one experiment.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CoverageMatrix {
    /// The columns: the kinds the experiment uses.
    pub kinds: Vec<FaultKind>,
    /// One row per phase: `start`, the named phases, `exited`.
    pub rows: Vec<CoverageRow>,
    /// Required cells covered.
    pub covered: usize,
    /// Required cells: named phases × kinds, after exit left out.
    pub required: usize,
    /// Every required cell not covered, with the fault that would cover it.
    pub gaps: Vec<Gap>,
}

/// One phase's row.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CoverageRow {
    /// The phase.
    pub phase: String,
    /// `start` or `exited`: shown, never required.
    pub implicit: bool,
    /// One cell per kind column.
    pub cells: Vec<CoverageCell>,
}

/// One cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct CoverageCell {
    /// The column.
    pub kind: FaultKind,
    /// Trials that landed this kind in this phase, by verdict.
    pub counts: Counts,
    /// What the cell shows.
    pub state: CellState,
    /// Whether the percentage counts it.
    pub required: bool,
}

/// A required cell no trial covered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Gap {
    /// The phase.
    pub phase: String,
    /// The kind missing there.
    pub kind: FaultKind,
    /// A fault line that would cover it.
    pub fix: String,
}

impl std::fmt::Display for Gap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: no {} lands here; e.g. {}",
            self.phase, self.kind, self.fix
        )
    }
}

impl CoverageMatrix {
    /// The matrix of an experiment with these named `phases` and fault `kinds` (any order),
    /// from the trials counted per (phase, kind). Counts of phases or kinds the experiment
    /// no longer has are left out.
    pub fn build(phases: &[String], kinds: &[FaultKind], counts: &CellCounts) -> CoverageMatrix {
        let mut kinds = kinds.to_vec();
        kinds.sort_unstable();
        kinds.dedup();
        let mut axis = vec![START.to_owned()];
        axis.extend(
            phases
                .iter()
                .filter(|p| *p != START && *p != EXITED)
                .cloned(),
        );
        axis.push(EXITED.to_owned());
        let (mut covered, mut required, mut gaps) = (0, 0, Vec::new());
        let rows = axis
            .into_iter()
            .map(|phase| {
                let implicit = phase == START || phase == EXITED;
                let cells = kinds
                    .iter()
                    .map(|&kind| {
                        let counts = counts
                            .get(&(phase.clone(), kind))
                            .copied()
                            .unwrap_or_default();
                        let is_required = !implicit && kind != FaultKind::AfterExit;
                        if is_required {
                            required += 1;
                            if counts.total() > 0 {
                                covered += 1;
                            } else {
                                gaps.push(Gap {
                                    phase: phase.clone(),
                                    kind,
                                    fix: kind.example(&phase),
                                });
                            }
                        }
                        CoverageCell {
                            kind,
                            counts,
                            state: counts.state(),
                            required: is_required,
                        }
                    })
                    .collect();
                CoverageRow {
                    phase,
                    implicit,
                    cells,
                }
            })
            .collect();
        CoverageMatrix {
            kinds,
            rows,
            covered,
            required,
            gaps,
        }
    }

    /// Covered required cells in whole percent, rounded down (100 only when every one is
    /// covered); `None` without required cells.
    pub fn percent(&self) -> Option<u64> {
        (self.required > 0).then(|| (self.covered * 100 / self.required) as u64)
    }

    /// The cell of `phase` × `kind`.
    pub fn cell(&self, phase: &str, kind: FaultKind) -> Option<&CoverageCell> {
        self.rows
            .iter()
            .find(|r| r.phase == phase)?
            .cells
            .iter()
            .find(|c| c.kind == kind)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly")]

    use super::*;
    use crate::record::Verdict;
    use crate::spec::{LoweredStep, Offset, When};
    use std::time::Duration;

    fn step(action: Action, when: When) -> LoweredStep {
        LoweredStep {
            action,
            aim: atropos_injector::plan::Aim::Main,
            when,
        }
    }

    fn delivery(step: usize, phase: &str, outcome: DeliveryOutcome) -> Delivery {
        Delivery {
            step,
            signal: Signal::TERM,
            aim: atropos_injector::plan::Aim::Main,
            pids: vec![1],
            phase: phase.to_owned(),
            trigger_ns: 0,
            offset_ns: 0,
            delivered_ns: 0,
            latency_ns: 0,
            outcome,
            resumed_ns: None,
        }
    }

    #[test]
    fn steps_after_an_exited_step_are_after_exit_and_others_go_by_signal() {
        let ready = When::Phase {
            index: 0,
            offset: Offset::Fixed(Duration::ZERO),
        };
        let after = When::After(Duration::from_millis(10));
        let kinds = step_kinds(&LoweredFault {
            name: "f".into(),
            steps: vec![
                step(Action::Pause(Duration::from_millis(50)), ready),
                step(Action::Signal(Signal::TERM), after),
                step(
                    Action::Signal(Signal::from_number(1).unwrap()),
                    When::Exited(atropos_injector::ExitedState::Reaped),
                ),
                step(Action::Signal(Signal::KILL), after),
                step(Action::Signal(Signal::INT), ready),
            ],
        });
        use FaultKind::*;
        assert_eq!(kinds, vec![Pause, Sigterm, AfterExit, AfterExit, Sigint]);
    }

    #[test]
    fn only_delivered_steps_land_except_after_exit_which_lands_when_carried_out() {
        use FaultKind::*;
        let kinds = [Pause, Sigterm, AfterExit];
        let landed = landings(
            &kinds,
            &[
                delivery(0, "ready", DeliveryOutcome::Delivered),
                delivery(1, "ready", DeliveryOutcome::AlreadyFinished),
                delivery(2, "exited", DeliveryOutcome::AlreadyFinished),
                delivery(0, "ready", DeliveryOutcome::Delivered),
            ],
        );
        let cells: Vec<(&str, FaultKind)> =
            landed.iter().map(|l| (l.phase.as_str(), l.kind)).collect();
        assert_eq!(cells, vec![("exited", AfterExit), ("ready", Pause)]);
    }

    #[test]
    fn only_named_phases_times_used_kinds_are_required_and_each_gap_says_how_to_close_it() {
        use FaultKind::*;
        let phases = vec!["init.config".to_owned(), "ready".to_owned()];
        let mut counts = CellCounts::new();
        let landed = |phase: &str, kind| Landing {
            phase: phase.into(),
            kind,
        };
        count_landings(&mut counts, &[landed("ready", Sigkill)], Verdict::Pass);
        count_landings(&mut counts, &[landed("ready", Sigterm)], Verdict::Fail);
        count_landings(&mut counts, &[landed("exited", AfterExit)], Verdict::Pass);
        count_landings(&mut counts, &[landed("start", Sigkill)], Verdict::Pass);
        let m = CoverageMatrix::build(&phases, &[Sigterm, Sigkill, AfterExit], &counts);
        assert_eq!(m.kinds, vec![Sigkill, Sigterm, AfterExit]);
        assert_eq!((m.covered, m.required), (2, 4));
        assert_eq!(m.percent(), Some(50));
        assert_eq!(m.cell("ready", Sigterm).unwrap().state, CellState::Fail);
        assert!(!m.cell("exited", AfterExit).unwrap().required);
        assert_eq!(m.cell("exited", AfterExit).unwrap().state, CellState::Pass);
        let gaps: Vec<String> = m.gaps.iter().map(ToString::to_string).collect();
        assert_eq!(
            gaps,
            vec![
                "init.config: no SIGKILL lands here; e.g. {signal: SIGKILL, at: {phase: init.config, offset: random}}",
                "init.config: no SIGTERM lands here; e.g. {signal: SIGTERM, at: {phase: init.config, offset: random}}",
            ]
        );
    }

    #[test]
    fn full_coverage_is_reachable_with_after_exit_faults_in_the_experiment() {
        use FaultKind::*;
        let phases = vec!["ready".to_owned()];
        let mut counts = CellCounts::new();
        count_landings(
            &mut counts,
            &[Landing {
                phase: "ready".into(),
                kind: Sigterm,
            }],
            Verdict::Pass,
        );
        let m = CoverageMatrix::build(&phases, &[Sigterm, AfterExit], &counts);
        assert_eq!(m.percent(), Some(100));
        assert!(m.gaps.is_empty());
        let only_after_exit = CoverageMatrix::build(&phases, &[AfterExit], &counts);
        assert_eq!(only_after_exit.percent(), None, "nothing required");
    }
}
