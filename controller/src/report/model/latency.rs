//! Injection latency figures: how many deliveries, and their percentiles.
//!
//! One definition of a percentile for every report and page: **nearest rank**, the smallest
//! value with at least `q × n` of the values at or below it (rank `⌈q·n⌉`, 1-based). p50 of
//! 1..=10 is 5.
//!
//! Memory does not grow with the number of trials: values are kept rounded to three
//! significant digits (what [`human_ns`](super::human_ns) shows), counted per distinct
//! rounded value. Rounding keeps order, so the nearest-rank value of the rounded values is
//! the rounded nearest-rank value of the exact ones: the figures read exactly as if every
//! value had been kept. There are at most 900 distinct values per power of ten.

use std::collections::BTreeMap;

use serde::Serialize;

use super::duration::round3;

/// Latency values seen so far, bounded in memory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LatencyStats {
    /// Rounded value → how many times it was seen.
    values: BTreeMap<u64, u64>,
    count: u64,
}

/// The figures every report shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct LatencySummary {
    /// Deliveries measured.
    pub count: u64,
    /// Median (nearest rank), ns, to three significant digits.
    pub p50_ns: u64,
    /// 90th percentile, ns.
    pub p90_ns: u64,
    /// 99th percentile, ns.
    pub p99_ns: u64,
    /// Largest, ns.
    pub max_ns: u64,
}

impl LatencyStats {
    /// Adds one value, ns.
    pub fn add(&mut self, ns: u64) {
        *self.values.entry(round3(ns)).or_default() += 1;
        self.count += 1;
    }

    /// Values added.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The `q` quantile (0 < q ≤ 1) by nearest rank; `None` without values.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        if self.count == 0 {
            return None;
        }
        #[expect(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss,
            reason = "a rank within 1..=count"
        )]
        let rank = ((q * self.count as f64).ceil() as u64).clamp(1, self.count);
        let mut seen = 0;
        for (value, n) in &self.values {
            seen += n;
            if seen >= rank {
                return Some(*value);
            }
        }
        self.values.keys().next_back().copied()
    }

    /// p50, p90, p99 and max; `None` without values.
    pub fn summary(&self) -> Option<LatencySummary> {
        Some(LatencySummary {
            count: self.count,
            p50_ns: self.quantile(0.50)?,
            p90_ns: self.quantile(0.90)?,
            p99_ns: self.quantile(0.99)?,
            max_ns: *self.values.keys().next_back()?,
        })
    }

    /// Every distinct (rounded) value with its count, smallest first.
    pub fn values(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.values.iter().map(|(v, n)| (*v, *n))
    }
}

impl FromIterator<u64> for LatencyStats {
    fn from_iter<I: IntoIterator<Item = u64>>(iter: I) -> Self {
        let mut stats = LatencyStats::default();
        for v in iter {
            stats.add(v);
        }
        stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let s: LatencyStats = (1..=10).collect();
        assert_eq!(s.quantile(0.5), Some(5), "p50 of 1..10 is 5, not 6");
        assert_eq!(s.quantile(0.9), Some(9));
        assert_eq!(s.quantile(0.99), Some(10));
        assert_eq!(s.quantile(0.1), Some(1));
        let one: LatencyStats = [7].into_iter().collect();
        assert_eq!(one.quantile(0.5), Some(7));
        assert_eq!(LatencyStats::default().summary(), None);
    }

    #[test]
    fn rounded_percentiles_equal_the_rounded_exact_percentiles() {
        // Pseudo-random values over six decades, against a sort of the exact values.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut exact = Vec::new();
        for _ in 0..5_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            exact.push((x % 10_000_000_000) >> (x % 24));
        }
        let stats: LatencyStats = exact.iter().copied().collect();
        exact.sort_unstable();
        for q in [0.5, 0.9, 0.99, 1.0] {
            #[expect(
                clippy::cast_possible_truncation,
                clippy::cast_sign_loss,
                clippy::cast_precision_loss
            )]
            let rank = ((q * exact.len() as f64).ceil() as usize).clamp(1, exact.len());
            assert_eq!(stats.quantile(q), Some(round3(exact[rank - 1])), "q {q}");
        }
        assert!(
            stats.values().count() < 5_000,
            "values are kept per rounded value"
        );
    }

    #[test]
    fn memory_is_bounded_by_distinct_rounded_values_not_by_count() {
        let mut s = LatencyStats::default();
        for i in 0..200_000u64 {
            s.add(100_000 + i % 50_000);
        }
        assert_eq!(s.count(), 200_000);
        assert!(s.values().count() <= 501, "{}", s.values().count());
    }
}
