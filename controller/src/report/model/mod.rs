//! The one read model of results: verdict counts, coverage cells and gaps, latency
//! percentiles, duration and plural formatting.
//!
//! The terminal summary, the JSON and JUnit reports, the dashboard pages and the `history`
//! and `coverage` commands all show these types and these functions, so one figure never
//! reads two ways. Everything here is bounded in memory whatever the number of trials.

mod counts;
mod coverage;
mod duration;
mod latency;

pub use counts::{CellState, Counts};
pub use coverage::{
    CellCounts, CoverageCell, CoverageMatrix, CoverageRow, EXITED, FaultKind, Gap, Landing, START,
    count_landings, kinds_used, landings, step_kinds,
};
pub use duration::{human_ns, round3};
pub use latency::{LatencyStats, LatencySummary};

/// `1 experiment`, `2 experiments`: `n` and the word, plural when `n` is not 1.
pub fn plural(n: impl Into<u64>, one: &str, many: &str) -> String {
    let n = n.into();
    format!("{n} {}", if n == 1 { one } else { many })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_of_a_thing_is_singular() {
        assert_eq!(plural(1u32, "delivery", "deliveries"), "1 delivery");
        assert_eq!(plural(0u32, "delivery", "deliveries"), "0 deliveries");
        assert_eq!(plural(2u32, "experiment", "experiments"), "2 experiments");
    }
}
