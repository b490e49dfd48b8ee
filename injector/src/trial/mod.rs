//! The trial driver: spawn, watch phases, fire steps on time, observe the end, clean up.
//!
//! One thread per trial owns the target and everything about it. It waits in a single
//! `ppoll(2)` on the target's stdout and stderr pipes and its pidfd, with a timeout set to
//! the next thing due (a step's offset, a grace period, a pending marker's next check). A
//! marker line and the step due at that marker are handled in the same wake-up, with no
//! hop between threads: that wake-up is the injection latency. (An async design with
//! reader tasks cost 70 µs at p50 from the target's print to our read in the engine
//! benchmark; this costs what a blocking read costs.)

mod driver;
mod run;
mod steps;
mod subject;
mod wait;

pub use run::{run, run_blocking, run_followed};
pub(crate) use steps::rank;
pub use subject::Subject;
