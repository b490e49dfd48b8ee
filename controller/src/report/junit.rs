//! JUnit XML: one suite per experiment, one test case per fault (the baseline included),
//! its trials inside: the case fails when any trial failed, with every failed trial's reasons.

use std::path::Path;
use std::time::Duration;

use quick_junit::{NonSuccessKind, Property, Report, TestCase, TestCaseStatus, TestSuite};

use crate::record::{ExperimentInfo, TrialRecord, Verdict};

/// Writes the JUnit report of a run to `path`.
pub fn write_junit(
    path: &Path,
    experiments: &[ExperimentInfo],
    records: &[&TrialRecord],
) -> std::io::Result<()> {
    let mut report = Report::new("atropos");
    for info in experiments {
        let mine: Vec<&TrialRecord> = records
            .iter()
            .copied()
            .filter(|r| r.experiment == info.name)
            .collect();
        let mut suite = TestSuite::new(info.name.clone());
        suite.add_property(Property::new("seed", info.seed.to_string()));
        suite.add_property(Property::new("file", info.file.display().to_string()));
        let mut faults = vec![crate::plan::BASELINE.to_owned()];
        faults.extend(info.faults.iter().cloned());
        for fault in faults {
            let trials: Vec<&TrialRecord> =
                mine.iter().copied().filter(|r| r.fault == fault).collect();
            if trials.is_empty() {
                continue;
            }
            let failed: Vec<&&TrialRecord> = trials
                .iter()
                .filter(|t| t.verdict == Verdict::Fail)
                .collect();
            let errored: Vec<&&TrialRecord> = trials
                .iter()
                .filter(|t| t.verdict == Verdict::Error)
                .collect();
            let status = if failed.is_empty() && errored.is_empty() {
                TestCaseStatus::success()
            } else {
                let kind = if failed.is_empty() {
                    NonSuccessKind::Error
                } else {
                    NonSuccessKind::Failure
                };
                let mut status = TestCaseStatus::non_success(kind);
                let bad = failed.len() + errored.len();
                let first = failed
                    .first()
                    .or(errored.first())
                    .and_then(|t| t.reasons.first())
                    .cloned()
                    .unwrap_or_default();
                status.set_message(format!(
                    "{bad} of {} trials did not pass; first: {first}",
                    trials.len()
                ));
                let detail: Vec<String> = failed
                    .iter()
                    .chain(&errored)
                    .map(|t| format!("trial {} ({}): {}", t.index, t.id, t.reasons.join(" | ")))
                    .collect();
                status.set_description(detail.join("\n"));
                status
            };
            let mut case = TestCase::new(fault.clone(), status);
            case.set_classname(info.name.clone());
            case.set_time(Duration::from_nanos(
                trials.iter().map(|t| t.duration_ns).sum(),
            ));
            case.set_assertions(trials.len());
            let lines: Vec<String> = trials
                .iter()
                .map(|t| {
                    format!(
                        "trial {} {}: phase {} latency {} delivery {}",
                        t.index,
                        t.verdict,
                        t.injected_phase.as_deref().unwrap_or("-"),
                        t.latency_ns
                            .map_or_else(|| "-".to_owned(), crate::judge::human_ns),
                        t.delivery.map_or("-", |d| d.as_str())
                    )
                })
                .collect();
            case.set_system_out(lines.join("\n"));
            suite.add_test_case(case);
        }
        report.add_test_suite(suite);
    }
    let xml = report.to_string().map_err(std::io::Error::other)?;
    std::fs::write(path, xml)
}
