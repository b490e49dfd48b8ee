//! The JSON report, written as the run goes: `{ "run", "trials": [...], "end",
//! "experiments": [...] }`.
//!
//! Trials are appended to a hidden file beside the report as they are judged (one per line,
//! in the order they ended), so memory does not grow with the run; at the end the run's end,
//! and per experiment the same figures as the terminal summary (verdict counts, coverage
//! matrix with its gaps, latency percentiles), close the document and the file is renamed
//! into place: a reader never sees half a report.
//!
//! Times: every `*_ns` field of a trial counts from that trial's start (its target's spawn),
//! on the monotonic clock, except `observation.started_monotonic_ns`, the moment of that
//! start itself on the system's monotonic clock (comparable with `CLOCK_MONOTONIC` read by
//! the target). The injector's `started_ns` is renamed so that no `*_ns` field is absolute.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use atropos_injector::Observation;
use serde::Serialize;

use super::model::{Counts, CoverageMatrix, LatencySummary};
use super::tally::RunTally;
use crate::record::{Recovery, RunEnd, RunInfo, TrialRecord};

/// A JSON report being written.
pub struct JsonReport {
    path: PathBuf,
    partial: PathBuf,
    out: BufWriter<File>,
    trials: u64,
}

impl JsonReport {
    /// Starts the report of `run` at `path` (written beside it until [`JsonReport::finish`]).
    pub fn create(path: &Path, run: &RunInfo) -> std::io::Result<JsonReport> {
        let name = path.file_name().map_or_else(
            || "report.json".into(),
            |n| n.to_string_lossy().into_owned(),
        );
        let partial = path.with_file_name(format!(".{name}.{}.partial", std::process::id()));
        let mut out = BufWriter::new(File::create(&partial)?);
        out.write_all(b"{\"run\":")?;
        serde_json::to_writer(&mut out, run)?;
        out.write_all(b",\n\"trials\":[")?;
        Ok(JsonReport {
            path: path.to_owned(),
            partial,
            out,
            trials: 0,
        })
    }

    /// Appends one trial.
    pub fn trial(&mut self, r: &TrialRecord) -> std::io::Result<()> {
        self.out
            .write_all(if self.trials == 0 { b"\n" } else { b",\n" })?;
        serde_json::to_writer(&mut self.out, &JsonTrial::of(r))?;
        self.trials += 1;
        Ok(())
    }

    /// Closes the document with the run's end and per-experiment figures, and puts the file
    /// in place.
    pub fn finish(mut self, end: &RunEnd, tally: &RunTally) -> std::io::Result<()> {
        self.out.write_all(b"\n],\n\"end\":")?;
        serde_json::to_writer(&mut self.out, end)?;
        self.out.write_all(b",\n\"experiments\":")?;
        let experiments: Vec<JsonExperiment<'_>> = tally
            .experiments
            .iter()
            .map(|e| JsonExperiment {
                name: &e.info.name,
                counts: e.counts,
                coverage: e.coverage(),
                coverage_percent: e.coverage().percent(),
                latency: e.latency.summary(),
                not_injected: e
                    .not_injected
                    .iter()
                    .map(|(f, c)| (f.as_str(), *c))
                    .collect(),
            })
            .collect();
        serde_json::to_writer_pretty(&mut self.out, &experiments)?;
        self.out.write_all(b"}\n")?;
        let file = self.out.into_inner().map_err(|e| e.into_error())?;
        file.sync_data()?;
        std::fs::rename(&self.partial, &self.path)
    }
}

#[derive(Serialize)]
struct JsonExperiment<'a> {
    name: &'a str,
    counts: Counts,
    coverage_percent: Option<u64>,
    coverage: CoverageMatrix,
    latency: Option<LatencySummary>,
    not_injected: std::collections::BTreeMap<&'a str, Counts>,
}

/// A trial as the report writes it: the record with its observations' clock made explicit.
#[derive(Serialize)]
struct JsonTrial<'a> {
    #[serde(flatten)]
    record: RecordFields<'a>,
}

#[derive(Serialize)]
struct RecordFields<'a> {
    id: &'a str,
    experiment: &'a str,
    fault: &'a str,
    index: u32,
    offset_spec: &'a Option<String>,
    offset_fraction: Option<f64>,
    offset_ns: Option<u64>,
    injected_phase: &'a Option<String>,
    latency_ns: Option<u64>,
    delivery: Option<atropos_injector::DeliveryOutcome>,
    landed: &'a [super::model::Landing],
    observation: JsonObservation<'a>,
    recovery: Option<JsonRecovery<'a>>,
    check: &'a Option<crate::record::CheckRun>,
    expectations: &'a [crate::record::ExpectationResult],
    verdict: crate::record::Verdict,
    reasons: &'a [String],
    duration_ns: u64,
    /// The injector node it ran on; absent: in-process.
    #[serde(skip_serializing_if = "Option::is_none")]
    node: &'a Option<String>,
}

impl<'a> JsonTrial<'a> {
    fn of(r: &'a TrialRecord) -> JsonTrial<'a> {
        // Destructured so that a field added to the record fails to compile here.
        let TrialRecord {
            id,
            experiment,
            fault,
            index,
            offset_spec,
            offset_fraction,
            offset_ns,
            injected_phase,
            latency_ns,
            delivery,
            landed,
            observation,
            recovery,
            check,
            expectations,
            verdict,
            reasons,
            duration_ns,
            node,
        } = r;
        JsonTrial {
            record: RecordFields {
                id,
                experiment,
                fault,
                index: *index,
                offset_spec,
                offset_fraction: *offset_fraction,
                offset_ns: *offset_ns,
                injected_phase,
                latency_ns: *latency_ns,
                delivery: *delivery,
                landed,
                observation: JsonObservation::of(observation),
                recovery: recovery.as_ref().map(
                    |Recovery {
                         phase,
                         reached_ns,
                         observation,
                         attached,
                     }| {
                        JsonRecovery {
                            phase,
                            reached_ns: *reached_ns,
                            observation: JsonObservation::of(observation),
                            attached: attached.as_ref(),
                        }
                    },
                ),
                check,
                expectations,
                verdict: *verdict,
                reasons,
                duration_ns: *duration_ns,
                node,
            },
        }
    }
}

#[derive(Serialize)]
struct JsonRecovery<'a> {
    phase: &'a str,
    reached_ns: Option<u64>,
    observation: JsonObservation<'a>,
    /// An attached target's times to detect, to replace and (`reached_ns`) to recover.
    #[serde(skip_serializing_if = "Option::is_none")]
    attached: Option<&'a crate::record::Replacement>,
}

/// An observation with `started_ns` (absolute) renamed `started_monotonic_ns`.
#[derive(Serialize)]
struct JsonObservation<'a> {
    trial_id: &'a str,
    pid: Option<i32>,
    started_monotonic_ns: u64,
    ended_ns: u64,
    phases: &'a [atropos_injector::PhaseEntry],
    deliveries: &'a [atropos_injector::Delivery],
    skipped: &'a [atropos_injector::record::Skipped],
    stop_signal: &'a Option<atropos_injector::record::StopSignal>,
    exit: &'a Option<atropos_injector::Exit>,
    stop: atropos_injector::StopReason,
    orphans: &'a [atropos_injector::Orphan],
    watches: &'a [atropos_injector::record::WatchHit],
    stdout_tail: &'a [atropos_injector::record::Line],
    stderr_tail: &'a [atropos_injector::record::Line],
    lines: (u64, u64),
    resources: &'a Option<atropos_injector::record::Resources>,
    missed: &'a Option<atropos_injector::record::MissedPhase>,
    error: &'a Option<String>,
}

impl<'a> JsonObservation<'a> {
    fn of(obs: &'a Observation) -> JsonObservation<'a> {
        // Destructured so that a field added to `Observation` fails to compile here.
        let Observation {
            trial_id,
            pid,
            started_ns,
            ended_ns,
            phases,
            deliveries,
            skipped,
            stop_signal,
            exit,
            stop,
            orphans,
            watches,
            stdout_tail,
            stderr_tail,
            lines,
            resources,
            missed,
            error,
        } = obs;
        JsonObservation {
            trial_id,
            pid: *pid,
            started_monotonic_ns: *started_ns,
            ended_ns: *ended_ns,
            phases,
            deliveries,
            skipped,
            stop_signal,
            exit,
            stop: *stop,
            orphans,
            watches,
            stdout_tail,
            stderr_tail,
            lines: *lines,
            resources,
            missed,
            error,
        }
    }
}

/// Whether `name` is a partial report this module writes (for tests).
pub fn is_partial(name: &str) -> bool {
    name.starts_with('.') && name.ends_with(".partial")
}
