//! atropos: fault injection at the edges of a process's life.
//!
//! # Theory of operation
//! An experiment file names a target, its lifecycle phases (each opened by a marker), the
//! faults to inject at those phases and what must hold afterwards. `atropos run`:
//!
//! 1. loads and validates every experiment ([`spec`]), reporting every problem with its
//!    file, line and column, and runs nothing if there is one;
//! 2. plans the trials from one seeded generator ([`plan`]): a baseline trial without faults
//!    per experiment, then `trials` per fault, with per-trial ports and directories;
//! 3. runs the baseline to measure how long each phase lasts (random offsets spread over the
//!    whole phase), then the fault trials in parallel through the injector ([`runner`]);
//! 4. judges each trial's observation against its expectations ([`judge`]), restarting the
//!    target for recovery checks and running check commands;
//! 5. reports: progress and a coverage matrix on the terminal, JUnit and JSON ([`report`]),
//!    and the events of the run to whoever listens (the store).
//!
//! The injector does the process work; this crate never signals anything itself.

pub mod cli;
pub mod dashboard;
pub mod dispatch;
pub mod judge;
pub mod plan;
pub mod record;
pub mod report;
pub mod runner;
pub mod scheduler;
pub mod spec;
pub mod store;
pub mod template;

/// atropos's version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
