//! Injection latency of a run: how late after its planned moment each first step was
//! delivered, as a histogram over 1-2-5 buckets and a few percentiles.

use serde::Serialize;
use sqlx::sqlite::SqliteConnection;

use super::runs::RunBrief;
use crate::report::model::LatencyStats;
use crate::store::Store;

/// The latency histogram of a run.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    /// The run id.
    pub run: String,
    /// Limited to this experiment, if given.
    pub experiment: Option<String>,
    /// Trials with a delivered first step.
    pub count: u64,
    /// Median (nearest rank, to three significant digits, as in every report), ns.
    pub p50_ns: Option<u64>,
    /// 90th percentile, ns.
    pub p90_ns: Option<u64>,
    /// 99th percentile, ns.
    pub p99_ns: Option<u64>,
    /// Largest, ns.
    pub max_ns: Option<u64>,
    /// Buckets from the smallest to the largest latency seen.
    pub buckets: Vec<LatencyBucket>,
}

/// Trials whose latency was in `[lo_ns, hi_ns)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct LatencyBucket {
    /// Lower bound, inclusive.
    pub lo_ns: u64,
    /// Upper bound, exclusive.
    pub hi_ns: u64,
    /// Trials in it.
    pub count: u64,
}

/// Bucket edges: 1, 2, 5 × powers of ten from 1µs to 100s, in ns.
fn edges() -> Vec<u64> {
    let mut edges = vec![0];
    let mut decade = 1_000;
    while decade <= 100_000_000_000 {
        edges.extend([decade, 2 * decade, 5 * decade]);
        decade *= 10;
    }
    edges
}

/// Builds the histogram of `values` (any order).
pub fn histogram(run: &str, experiment: Option<&str>, mut values: Vec<u64>) -> Latency {
    values.sort_unstable();
    let edges = edges();
    let mut buckets: Vec<LatencyBucket> = edges
        .windows(2)
        .map(|w| LatencyBucket {
            lo_ns: w[0],
            hi_ns: w[1],
            count: 0,
        })
        .collect();
    for v in &values {
        let i = edges.partition_point(|e| e <= v).saturating_sub(1);
        if let Some(b) = buckets.get_mut(i.min(edges.len() - 2)) {
            b.count += 1;
        }
    }
    // Keep the buckets from the first to the last one used, at least three.
    let first = buckets.iter().position(|b| b.count > 0).unwrap_or(1);
    let last = buckets.iter().rposition(|b| b.count > 0).unwrap_or(3);
    let (first, last) = (first.min(last.saturating_sub(2)), last.max(first + 2));
    let buckets = buckets[first..=last.min(buckets.len() - 1)].to_vec();
    // The percentiles as every report computes them.
    let summary = values.iter().copied().collect::<LatencyStats>().summary();
    Latency {
        run: run.to_owned(),
        experiment: experiment.map(str::to_owned),
        count: values.len() as u64,
        p50_ns: summary.map(|s| s.p50_ns),
        p90_ns: summary.map(|s| s.p90_ns),
        p99_ns: summary.map(|s| s.p99_ns),
        max_ns: summary.map(|s| s.max_ns),
        buckets,
    }
}

/// The latency of run `id` (`uid`), of one experiment if given.
pub(crate) async fn latency_of(
    conn: &mut SqliteConnection,
    id: i64,
    uid: &str,
    experiment: Option<&str>,
) -> anyhow::Result<Latency> {
    let values: Vec<i64> = sqlx::query_scalar(
        "SELECT t.latency_ns FROM trials t
         JOIN run_experiments re ON re.id = t.run_experiment_id
         JOIN experiments e ON e.id = re.experiment_id
         WHERE t.run_id = ?1 AND t.latency_ns IS NOT NULL AND (?2 IS NULL OR e.name = ?2)",
    )
    .bind(id)
    .bind(experiment)
    .fetch_all(&mut *conn)
    .await?;
    let values = values
        .into_iter()
        .map(|v| u64::try_from(v).unwrap_or(0))
        .collect();
    Ok(histogram(uid, experiment, values))
}

/// Reads the latency histogram of run `uid`, of one experiment if given.
pub async fn latency(
    store: &Store,
    uid: &str,
    experiment: Option<&str>,
) -> anyhow::Result<(RunBrief, Latency)> {
    let mut conn = store.pool.acquire().await?;
    let (id, brief) = super::run::run_brief(&mut conn, uid).await?;
    let latency = latency_of(&mut conn, id, uid, experiment).await?;
    Ok((brief, latency))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latencies_fall_into_one_two_five_buckets() {
        let h = histogram("r", None, vec![1_500, 1_900, 30_000, 700_000]);
        assert_eq!(h.count, 4);
        assert_eq!(h.buckets.first().map(|b| b.lo_ns), Some(1_000));
        assert_eq!(h.buckets.last().map(|b| b.hi_ns), Some(1_000_000));
        let in_1us = h.buckets.iter().find(|b| b.lo_ns == 1_000).map(|b| b.count);
        assert_eq!(in_1us, Some(2));
        assert_eq!(h.p50_ns, Some(1_900));
        assert_eq!(h.max_ns, Some(700_000));
    }

    #[test]
    fn an_empty_run_has_an_empty_histogram() {
        let h = histogram("r", None, Vec::new());
        assert_eq!(h.count, 0);
        assert!(h.buckets.iter().all(|b| b.count == 0));
        assert_eq!(h.p99_ns, None);
    }
}
