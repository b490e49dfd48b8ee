//! The controller's scheduler: experiments fired on their cron schedules by `atropos serve`.
//!
//! # Theory of operation
//! - [`schedule`] checks an experiment's `schedule`, `timezone`, `concurrency`,
//!   `starting_deadline`, `suspend`, `windows` and `blackouts` into a [`Schedule`]: ticks are
//!   instants, read on the wall clock of the experiment's time zone.
//! - [`decide`] says what a schedule does at a given moment, from the last tick decided and
//!   the run still going: wait, fire, or skip with why. It takes the clock as an argument,
//!   so its tests walk across summer time and downtime without sleeping.
//! - [`daemon`] is the loop: it sleeps until the next tick, decides, records the decision
//!   with the run it queues in one SQLite transaction (two controllers on one file fire a
//!   tick once), and starts the run as a child `atropos run`. It also carries out the
//!   orders of [`control`], the token-protected API that starts a run now or aborts one.

pub mod control;
pub mod daemon;
pub mod decide;
pub mod metrics;
pub mod pages;
pub mod probe;
pub mod schedule;

pub use schedule::Schedule;

/// `text` with everything but unreserved characters percent-encoded (a URL path segment
/// or query value).
pub fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
