//! What a run shows and writes: progress, failure lines, the summary, JUnit, JSON, all from
//! one read model ([`model`]) fed by a bounded [`RunTally`].

mod json;
mod junit;
pub mod model;
mod progress;
mod summary;
mod tally;

pub use json::{JsonReport, is_partial};
pub use junit::write_junit;
pub use progress::Progress;
pub use summary::{summary, verdicts};
pub use tally::{ExperimentTally, FaultTally, KEPT_DETAILS, RunTally};
