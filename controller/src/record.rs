//! What a run produces: one [`TrialRecord`] per trial, and the facts about the run itself.
//!
//! These are the records written to JSON, JUnit, the store and the dashboard. A record keeps
//! the injector's whole [`Observation`] and adds the plan (fault, offset) and the judgement.

use std::collections::BTreeMap;
use std::path::PathBuf;

use atropos_injector::{DeliveryOutcome, Observation};
use serde::{Deserialize, Serialize};

use crate::report::model::{FaultKind, Landing};

/// The judgement of one trial.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Every expectation held.
    Pass,
    /// At least one expectation failed.
    Fail,
    /// The harness could not do what was asked.
    Error,
}

impl Verdict {
    /// `pass`, `fail` or `error`.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Fail => "fail",
            Verdict::Error => "error",
        }
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One expectation as judged for one trial.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExpectationResult {
    /// Which expectation: `exit`, `stdout.contains[0]`, `orphans`, `recover`, ...
    pub name: String,
    /// Whether it held.
    pub passed: bool,
    /// What was expected, in words.
    pub expected: String,
    /// What happened, in words.
    pub actual: String,
}

impl ExpectationResult {
    /// The one-line reason shown for a failed expectation.
    pub fn reason(&self) -> String {
        format!(
            "{}: expected {}, but {}",
            self.name, self.expected, self.actual
        )
    }
}

/// The restart of a recovery expectation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recovery {
    /// The phase it had to reach.
    pub phase: String,
    /// When it reached it, since the restart; `None` if it did not.
    pub reached_ns: Option<u64>,
    /// What the restarted target did.
    pub observation: Observation,
    /// For an attached target, the times of its recovery by its supervisor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attached: Option<Replacement>,
}

/// How a running service came back after a fault took its process: `reached_ns` of its
/// [`Recovery`] counts from the exit being seen to the phase (time to recover, MTTR).
pub use atropos_injector::attach::service::Replacement;

/// The check command of a trial.
pub use atropos_injector::after::CheckRun;

/// Everything known about one trial.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrialRecord {
    /// The trial id (unique on this machine; also the target's `ATROPOS_TRIAL`).
    pub id: String,
    /// The experiment's name.
    pub experiment: String,
    /// The fault's name; `baseline` for the trial without faults.
    pub fault: String,
    /// Index of the trial within its fault (0-based).
    pub index: u32,
    /// The offset as planned: `100ms`, `random`, ...; none for faults not at a phase.
    pub offset_spec: Option<String>,
    /// For random offsets: the fraction of the window drawn from the seed.
    pub offset_fraction: Option<f64>,
    /// The offset used for the first step, in ns after its phase marker.
    pub offset_ns: Option<u64>,
    /// The phase the target was in when the first step was delivered.
    pub injected_phase: Option<String>,
    /// Marker-to-delivery latency of the first step, ns.
    pub latency_ns: Option<u64>,
    /// What became of the first step's signal.
    pub delivery: Option<DeliveryOutcome>,
    /// The coverage cells (phase × kind of fault) its steps landed in, each once. The store
    /// keeps only their sums (`kind_coverage`): a trial read back from it has none.
    #[serde(default)]
    pub landed: Vec<Landing>,
    /// What the injector observed.
    pub observation: Observation,
    /// The restart, when the expectations ask for one.
    pub recovery: Option<Recovery>,
    /// The check command, when the expectations have one.
    pub check: Option<CheckRun>,
    /// Every expectation and whether it held.
    pub expectations: Vec<ExpectationResult>,
    /// The judgement.
    pub verdict: Verdict,
    /// One line for each failed expectation or harness error.
    pub reasons: Vec<String>,
    /// Wall time of the whole trial including recovery and check, ns.
    pub duration_ns: u64,
    /// The injector node it ran on; `None`: in-process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

/// CI facts taken from the environment, when present.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CiInfo {
    /// Which CI (`github`, `gitlab`, `jenkins`, `ci`).
    pub provider: Option<String>,
    /// The commit.
    pub commit: Option<String>,
    /// The branch.
    pub branch: Option<String>,
    /// A link or id of the CI job.
    pub job: Option<String>,
}

impl CiInfo {
    /// Reads the usual CI variables (GitHub Actions, GitLab, Jenkins, Buildkite, generic).
    pub fn from_env() -> CiInfo {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let provider = if var("GITHUB_ACTIONS").is_some() {
            Some("github")
        } else if var("GITLAB_CI").is_some() {
            Some("gitlab")
        } else if var("JENKINS_URL").is_some() {
            Some("jenkins")
        } else if var("BUILDKITE").is_some() {
            Some("buildkite")
        } else if var("CI").is_some() {
            Some("ci")
        } else {
            None
        };
        CiInfo {
            provider: provider.map(str::to_owned),
            commit: var("GITHUB_SHA")
                .or_else(|| var("CI_COMMIT_SHA"))
                .or_else(|| var("GIT_COMMIT"))
                .or_else(|| var("BUILDKITE_COMMIT")),
            branch: var("GITHUB_HEAD_REF")
                .or_else(|| var("GITHUB_REF_NAME"))
                .or_else(|| var("CI_COMMIT_REF_NAME"))
                .or_else(|| var("GIT_BRANCH"))
                .or_else(|| var("BUILDKITE_BRANCH")),
            job: var("GITHUB_RUN_ID")
                .or_else(|| var("CI_JOB_URL"))
                .or_else(|| var("BUILD_URL"))
                .or_else(|| var("BUILDKITE_BUILD_URL")),
        }
    }
}

/// What started a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// `atropos run` by hand.
    Manual,
    /// `atropos run` in CI (the CI variable is set).
    Ci,
    /// The controller's scheduler.
    Schedule,
    /// A request to the controller's API (`atropos trigger`).
    Api,
}

impl Trigger {
    /// `manual`, `ci`, `schedule` or `api`.
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Manual => "manual",
            Trigger::Ci => "ci",
            Trigger::Schedule => "schedule",
            Trigger::Api => "api",
        }
    }
}

/// One experiment as a run uses it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExperimentInfo {
    /// Its name.
    pub name: String,
    /// The file it came from.
    pub file: PathBuf,
    /// Its YAML document as written.
    pub source: String,
    /// SHA-256 of the document, hex: a changed document is a new version.
    pub content_hash: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Its phases in order.
    pub phases: Vec<String>,
    /// Its fault names in order (`baseline` not included).
    pub faults: Vec<String>,
    /// The seed used for it in this run.
    pub seed: u64,
    /// How many trials are planned, baseline included.
    pub planned_trials: usize,
}

/// The facts of a run known when it starts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunInfo {
    /// Unique run id (also the prefix of every trial id).
    pub id: String,
    /// What started it.
    pub trigger: Trigger,
    /// The run's seed.
    pub seed: u64,
    /// Wall-clock start, seconds since the Unix epoch.
    pub started_at: f64,
    /// atropos's version.
    pub version: String,
    /// CI facts.
    pub ci: CiInfo,
    /// The experiments, in order.
    pub experiments: Vec<ExperimentInfo>,
    /// Per experiment name, the kinds of fault its faults use: the columns of its coverage.
    #[serde(default)]
    pub fault_kinds: BTreeMap<String, Vec<FaultKind>>,
    /// How the run kept each trial's processes together (a cgroup, or process groups with
    /// why), and so how sure "nothing left behind" is.
    #[serde(default)]
    pub containment: Option<atropos_injector::Containment>,
}

impl RunInfo {
    /// The kinds of fault experiment `name` uses (none when unknown).
    pub fn kinds_of(&self, name: &str) -> &[FaultKind] {
        self.fault_kinds.get(name).map_or(&[], Vec::as_slice)
    }
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Every planned trial ran.
    Finished,
    /// atropos was interrupted (SIGINT/SIGTERM) before the end.
    Interrupted,
    /// A stop condition (`abort:`) was breached: the run stopped, with why.
    Aborted,
    /// The service was not healthy before the first trial: nothing ran.
    Skipped,
}

impl RunStatus {
    /// As the store writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Finished => "finished",
            RunStatus::Interrupted => "interrupted",
            RunStatus::Aborted => "aborted",
            RunStatus::Skipped => "skipped",
        }
    }
}

/// The facts of a run known when it ends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunEnd {
    /// Wall-clock end, seconds since the Unix epoch.
    pub ended_at: f64,
    /// How it ended.
    pub status: RunStatus,
    /// Trials by verdict.
    pub passed: usize,
    /// Failed trials.
    pub failed: usize,
    /// Trials in error.
    pub errors: usize,
    /// Why it was aborted or skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The answers of its stop-condition probes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub probes: Vec<crate::scheduler::probe::Answer>,
}

/// What a run tells its listeners (progress display, store), in order.
#[derive(Debug, Clone)]
pub enum RunEvent {
    /// The run starts.
    Started(std::sync::Arc<RunInfo>),
    /// A trial ended and was judged.
    Trial(std::sync::Arc<TrialRecord>),
    /// The run ended.
    Finished(std::sync::Arc<RunEnd>),
}

/// Seconds since the Unix epoch, now.
pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}
