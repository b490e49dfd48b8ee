//! The JSON report: the run's facts and every trial record.

use std::path::Path;

use serde::Serialize;

use crate::record::{RunEnd, RunInfo, TrialRecord};

#[derive(Serialize)]
struct JsonReport<'a> {
    run: &'a RunInfo,
    end: &'a RunEnd,
    trials: &'a [&'a TrialRecord],
}

/// Writes `{ run, end, trials }` to `path`.
pub fn write_json(
    path: &Path,
    run: &RunInfo,
    end: &RunEnd,
    trials: &[&TrialRecord],
) -> std::io::Result<()> {
    let file = std::io::BufWriter::new(std::fs::File::create(path)?);
    serde_json::to_writer_pretty(file, &JsonReport { run, end, trials })
        .map_err(std::io::Error::other)
}
