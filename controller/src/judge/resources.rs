//! Resources: peak threads and RSS of the main process against their limits.

use atropos_injector::record::Resources;

use crate::record::ExpectationResult;
use crate::spec::{ByteSize, ResourceLimits};

use super::verdict::result;

/// One result per limit set, threads first.
pub(super) fn resources(limits: &ResourceLimits, used: &Resources) -> Vec<ExpectationResult> {
    let threads = limits.max_threads.map(|max| {
        result(
            "resources.max_threads",
            used.max_threads <= max,
            format!("at most {max} threads"),
            format!("peaked at {}", used.max_threads),
        )
    });
    let rss = limits.max_rss.map(|max| {
        result(
            "resources.max_rss",
            used.max_rss_bytes <= max.0,
            format!("RSS at most {max}"),
            format!("peaked at {}", ByteSize(used.max_rss_bytes)),
        )
    });
    threads.into_iter().chain(rss).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::judge::fixture::{assert_results, want};

    struct Case {
        name: &'static str,
        max_threads: Option<u64>,
        max_rss: Option<u64>,
        threads: u64,
        rss: u64,
        want: Vec<ExpectationResult>,
    }

    const MIB: u64 = 1 << 20;

    #[test]
    fn resources_hold_at_or_under_their_limits() {
        let cases = vec![
            Case {
                name: "no limits, nothing judged",
                max_threads: None,
                max_rss: None,
                threads: 100,
                rss: 1 << 40,
                want: vec![],
            },
            Case {
                name: "threads under",
                max_threads: Some(4),
                max_rss: None,
                threads: 4,
                rss: 0,
                want: vec![want(
                    "resources.max_threads",
                    true,
                    "at most 4 threads",
                    "peaked at 4",
                )],
            },
            Case {
                name: "threads over",
                max_threads: Some(1),
                max_rss: None,
                threads: 2,
                rss: 0,
                want: vec![want(
                    "resources.max_threads",
                    false,
                    "at most 1 threads",
                    "peaked at 2",
                )],
            },
            Case {
                name: "RSS under",
                max_threads: None,
                max_rss: Some(64 * MIB),
                threads: 1,
                rss: 10 * MIB,
                want: vec![want(
                    "resources.max_rss",
                    true,
                    "RSS at most 64.0MiB",
                    "peaked at 10.0MiB",
                )],
            },
            Case {
                name: "RSS over, and threads judged first",
                max_threads: Some(8),
                max_rss: Some(1 << 30),
                threads: 3,
                rss: 1536 * MIB,
                want: vec![
                    want(
                        "resources.max_threads",
                        true,
                        "at most 8 threads",
                        "peaked at 3",
                    ),
                    want(
                        "resources.max_rss",
                        false,
                        "RSS at most 1GiB",
                        "peaked at 1536.0MiB",
                    ),
                ],
            },
        ];
        assert_eq!(cases.len(), 5);
        for c in &cases {
            let limits = ResourceLimits {
                max_threads: c.max_threads,
                max_rss: c.max_rss.map(ByteSize),
            };
            let used = Resources {
                max_threads: c.threads,
                max_rss_bytes: c.rss,
                samples: 10,
            };
            assert_results(c.name, &resources(&limits, &used), &c.want);
        }
    }
}
