//! The results store: every run, trial, phase event and expectation result in one SQLite
//! file, shared by a running `atropos run` (the writer) and `atropos serve` (the reader).
//!
//! # Theory of operation
//! - [`Recorder`] is the writer. `atropos run` hands it every [`RunEvent`](crate::record::RunEvent);
//!   the runner hands trials over every [`crate::runner::ANNOUNCE_EVERY`] (20 ms) after
//!   they end. A trial is committed as soon as it arrives, or, when trials arrive faster than
//!   every [`recorder::COALESCE`] (100 ms), together with the others that arrived meanwhile
//!   (group commit). A run killed at any point keeps every trial that ended before its last
//!   120 ms. The writer is a thread of its own at a lower priority.
//! - A run is written with its owner: host, boot id, pid and the pid's start time. Whoever
//!   opens the file next ([`Recorder::open`], [`Store::open`]) marks a `running` run whose
//!   owner is gone as `interrupted` ([`owner`]).
//! - The file is in WAL mode with a busy timeout: readers never block the writer, and the
//!   writer waits instead of failing while another one commits.
//! - Experiments are stored by name, and each distinct YAML document (by content hash) as a
//!   version of that name.
//! - A batch of trials is one transaction and one round trip to the connection's thread: a
//!   multi-row `INSERT` each into `trials`, `phase_events` and `expectation_results`, then the
//!   batch's sums added to two aggregate tables: verdict counts per run × experiment
//!   (`run_experiments`) and coverage counts per version × phase × fault × verdict
//!   (`coverage_counts`). The overview and experiment pages read only the aggregates, so they
//!   stay fast however many trials the file holds.
//! - [`Store`] is the reader: a small pool answering the dashboard's and the CLI's queries
//!   ([`query`]) with plain serialisable views.

mod open;
pub mod owner;
pub mod query;
pub mod recorder;
pub mod schedule;
pub mod synthetic;
mod write;

pub use open::{Store, connect_options};
pub use recorder::Recorder;
