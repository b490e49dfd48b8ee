//! Faults in the form that runs: made by validation, once, from what it accepted.
//!
//! A fault in the file is a bag of optional fields (`signal` or `pause`, `at` or `after`,
//! `phase` or `exited`) that only some combinations make sense of. Validation reads each
//! step exactly once and, where it finds no problem, returns it lowered: one action, one
//! aim, one moment with the phase resolved to its index, every default filled in. The plan,
//! the dry run, the runner and coverage take these and never re-read the optional fields,
//! so none of them needs a fallback for a combination validation refused.

use std::time::Duration;

use atropos_injector::{Action, Aim, ExitedState};

use super::Offset;
use super::load::Loaded;

/// When a lowered step fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    /// This long after the phase `index` (into `spec.phases`) is entered.
    Phase {
        /// The phase's index.
        index: usize,
        /// The offset as written; `0s` when none was.
        offset: Offset,
    },
    /// After the target exited: before or after it was reaped.
    Exited(ExitedState),
    /// This long after the previous step.
    After(Duration),
}

impl When {
    /// Whether the offset is drawn per trial.
    pub fn is_random(&self) -> bool {
        matches!(
            self,
            When::Phase {
                offset: Offset::Random | Offset::Between(..),
                ..
            }
        )
    }
}

/// One step, lowered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoweredStep {
    /// What it does.
    pub action: Action,
    /// At whom.
    pub aim: Aim,
    /// When.
    pub when: When,
}

/// One fault, lowered: its name and its steps in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoweredFault {
    /// The fault's name.
    pub name: String,
    /// Its steps (one for an inline fault).
    pub steps: Vec<LoweredStep>,
}

impl LoweredFault {
    /// Whether a step follows one aimed after the exit (so it comes after the exit too).
    pub fn after_exit(&self) -> Vec<bool> {
        let mut after_exit = false;
        self.steps
            .iter()
            .map(|s| {
                match s.when {
                    When::Exited(_) => after_exit = true,
                    When::Phase { .. } => after_exit = false,
                    When::After(_) => {}
                }
                after_exit
            })
            .collect()
    }
}

/// An experiment that passed every check, with its faults in the form that runs.
#[derive(Debug, Clone)]
pub struct Valid {
    /// The experiment as loaded.
    pub loaded: Loaded,
    /// Its faults, in file order, lowered.
    pub faults: Vec<LoweredFault>,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly")]

    use super::*;
    use atropos_injector::Signal;

    fn load(text: &str) -> Vec<Valid> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.yaml");
        std::fs::write(&path, text).unwrap();
        crate::spec::load_all(&[path]).unwrap()
    }

    #[test]
    fn every_default_is_filled_in_and_every_phase_resolved() {
        let valid = load(
            r#"apiVersion: atropos/v1
kind: Experiment
metadata: { name: lowered }
spec:
  target:
    run: { command: ["true"] }
  phases:
    - { name: init, marker: { stdout: "^init$" } }
    - { name: ready, marker: { stdout: "^ready$" } }
  faults:
    - { name: inline, signal: SIGINT, at: { phase: ready } }
    - name: listed
      steps:
        - { pause: 50ms, to: group, at: { phase: init, offset: random } }
        - { signal: SIGKILL, to: { descendant: "^w" }, after: 10ms }
    - name: late
      steps:
        - { signal: SIGTERM, at: { exited: zombie } }
        - { signal: SIGHUP, after: 1ms }
"#,
        );
        let faults = &valid[0].faults;
        assert_eq!(faults.len(), 3);
        assert_eq!(
            faults[0],
            LoweredFault {
                name: "inline".into(),
                steps: vec![LoweredStep {
                    action: Action::Signal(Signal::INT),
                    aim: Aim::Main,
                    when: When::Phase {
                        index: 1,
                        offset: Offset::Fixed(Duration::ZERO)
                    },
                }],
            }
        );
        assert_eq!(
            faults[1].steps,
            vec![
                LoweredStep {
                    action: Action::Pause(Duration::from_millis(50)),
                    aim: Aim::Group,
                    when: When::Phase {
                        index: 0,
                        offset: Offset::Random
                    },
                },
                LoweredStep {
                    action: Action::Signal(Signal::KILL),
                    aim: Aim::Descendant("^w".into()),
                    when: When::After(Duration::from_millis(10)),
                },
            ]
        );
        assert!(faults[1].steps[0].when.is_random() && !faults[1].steps[1].when.is_random());
        assert_eq!(faults[2].steps[0].when, When::Exited(ExitedState::Zombie));
        assert_eq!(faults[1].after_exit(), vec![false, false]);
        assert_eq!(faults[2].after_exit(), vec![true, true]);
    }
}
