//! What a run shows and writes: progress, failure lines, the coverage summary, JUnit, JSON.

mod coverage;
mod json;
mod junit;
mod progress;

pub use coverage::{Cell, Coverage, summary};
pub use json::write_json;
pub use junit::write_junit;
pub use progress::Progress;

/// Latency percentiles (p50, p99, max) over `values`, ns; `None` when empty.
pub fn percentiles(values: &mut [u64]) -> Option<(u64, u64, u64)> {
    if values.is_empty() {
        return None;
    }
    values.sort_unstable();
    let at = |q: f64| values[((values.len() as f64 - 1.0) * q).round() as usize];
    Some((at(0.50), at(0.99), values[values.len() - 1]))
}
