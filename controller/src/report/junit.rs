//! JUnit XML: one suite per experiment, one test case per fault (the baseline included).
//! A case fails when any of its trials failed, with the failed trials' reasons.
//!
//! quick-junit builds the whole document in memory, so the report is built from the run's
//! tally, not from records: per fault its counters and at most
//! [`KEPT_DETAILS`](super::tally::KEPT_DETAILS) lines about failed trials and about trials,
//! then a line saying how many more there were. The document's size is bounded by the
//! number of faults, and CI viewers show the first hundred lines of a case anyway. Each
//! suite carries the experiment's coverage and latency figures as properties, the same
//! figures as the terminal summary and the JSON report.

use std::path::Path;
use std::time::Duration;

use quick_junit::{NonSuccessKind, Property, Report, TestCase, TestCaseStatus, TestSuite};

use super::model::human_ns;
use super::tally::RunTally;

/// Writes the JUnit report of a run to `path`.
pub fn write_junit(path: &Path, tally: &RunTally) -> std::io::Result<()> {
    let mut report = Report::new("atropos");
    for exp in &tally.experiments {
        let info = &exp.info;
        let mut suite = TestSuite::new(info.name.clone());
        suite.add_property(Property::new("seed", info.seed.to_string()));
        suite.add_property(Property::new("file", info.file.display().to_string()));
        let cov = exp.coverage();
        let percent = cov
            .percent()
            .map_or_else(|| "-".to_owned(), |p| p.to_string());
        suite.add_property(Property::new("coverage_percent", percent));
        suite.add_property(Property::new(
            "coverage_cells_covered",
            cov.covered.to_string(),
        ));
        suite.add_property(Property::new(
            "coverage_cells_required",
            cov.required.to_string(),
        ));
        for gap in &cov.gaps {
            suite.add_property(Property::new("coverage_gap", gap.to_string()));
        }
        if let Some(l) = exp.latency.summary() {
            suite.add_property(Property::new("latency_deliveries", l.count.to_string()));
            suite.add_property(Property::new("latency_p50", human_ns(l.p50_ns)));
            suite.add_property(Property::new("latency_p99", human_ns(l.p99_ns)));
            suite.add_property(Property::new("latency_max", human_ns(l.max_ns)));
        }
        for fault in &exp.faults {
            let total = fault.counts.total();
            if total == 0 {
                continue;
            }
            let bad = fault.counts.fail + fault.counts.error;
            let (more_failures, more_trials) = fault.left_out();
            let status = if bad == 0 {
                TestCaseStatus::success()
            } else {
                let kind = if fault.counts.fail == 0 {
                    NonSuccessKind::Error
                } else {
                    NonSuccessKind::Failure
                };
                let mut status = TestCaseStatus::non_success(kind);
                status.set_message(format!(
                    "{bad} of {total} trials did not pass; first: {}",
                    fault.first_reason.as_deref().unwrap_or_default()
                ));
                let mut detail = fault.failures.join("\n");
                if more_failures > 0 {
                    detail.push_str(&format!("\n… and {more_failures} more"));
                }
                status.set_description(detail);
                status
            };
            let mut case = TestCase::new(fault.name.clone(), status);
            case.set_classname(info.name.clone());
            case.set_time(Duration::from_nanos(fault.duration_ns));
            case.set_assertions(usize::try_from(total).unwrap_or(usize::MAX));
            let mut out = fault.trials.join("\n");
            if more_trials > 0 {
                out.push_str(&format!("\n… and {more_trials} more trials"));
            }
            case.set_system_out(out);
            suite.add_test_case(case);
        }
        report.add_test_suite(suite);
    }
    let xml = report.to_string().map_err(std::io::Error::other)?;
    std::fs::write(path, xml)
}
