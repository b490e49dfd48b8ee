//! What a trial observed: the facts every later stage (verdicts, store, dashboard) consumes.
//!
//! Times are nanoseconds on the monotonic clock. `started_ns` is absolute (comparable with
//! clocks read by the target itself); every other `*_ns` is relative to it.

use serde::{Deserialize, Serialize};

use crate::plan::{Aim, Stream};
use crate::signal::Signal;

/// What became of one signal sent to one process or group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryOutcome {
    /// The kernel accepted the signal for a live process.
    Delivered,
    /// The process had exited and been reaped: the pidfd says it is gone.
    AlreadyFinished,
    /// The process had exited but was not reaped yet: the signal was dropped.
    Zombie,
    /// The kernel refused (EPERM), or atropos did (a protected process).
    Denied,
    /// Nothing matched the aim (no descendant by that pattern, an empty group).
    NoTarget,
}

impl DeliveryOutcome {
    /// The name used in records and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Delivered => "delivered",
            Self::AlreadyFinished => "already_finished",
            Self::Zombie => "zombie",
            Self::Denied => "denied",
            Self::NoTarget => "no_target",
        }
    }
}

impl std::fmt::Display for DeliveryOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Something a trial saw, told as it happened to whoever follows it live (an injector's
/// stream to its controller); the final [`Observation`] holds all of it again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Progress {
    /// A phase was entered.
    Phase(PhaseSeen),
    /// A step's signal went out (a pause's SIGCONT is in the final observation).
    Delivery(Delivery),
}

/// A phase entered, as it is told live.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PhaseSeen {
    /// Its index in the plan.
    pub index: usize,
    /// Its name.
    pub name: String,
    /// When, since the trial's start.
    pub entered_ns: u64,
    /// What showed it.
    pub evidence: String,
}

/// How the target ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Exit {
    /// Exit code, when it exited normally.
    pub code: Option<i32>,
    /// The signal that ended it, when one did.
    pub signal: Option<Signal>,
    /// Whether it dumped core.
    pub core_dumped: bool,
    /// When the exit was observed.
    pub at_ns: u64,
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.code, self.signal) {
            (Some(code), _) => write!(f, "exit code {code}"),
            (None, Some(sig)) => write!(
                f,
                "killed by {sig}{}",
                if self.core_dumped {
                    " (core dumped)"
                } else {
                    ""
                }
            ),
            (None, None) => f.write_str("exit status unknown (not a child)"),
        }
    }
}

/// Why the trial stopped watching the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// The target exited by itself (after or without faults).
    Exited,
    /// The target did not exit within the grace period after the last step; atropos killed it.
    Hung,
    /// The trial's overall timeout passed; atropos killed the target.
    Timeout,
    /// atropos was interrupted and killed the target.
    Interrupted,
    /// A trial without faults: atropos stopped the target gracefully after its last phase.
    Stopped,
    /// A recovery probe: the awaited phase was reached, and the target was then killed.
    Reached,
    /// A phase was not entered within its deadline (`within`); atropos killed the target.
    PhaseDeadline,
    /// The target could not be started, or an attached one was no longer the process
    /// selected.
    SpawnFailed,
    /// An attached target was watched for its grace period after the last step and left
    /// as it was: atropos never stops or kills a process it did not start.
    Observed,
}

impl StopReason {
    /// The name used in records and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Exited => "exited",
            Self::Hung => "hung",
            Self::Timeout => "timeout",
            Self::Interrupted => "interrupted",
            Self::Stopped => "stopped",
            Self::Reached => "reached",
            Self::PhaseDeadline => "phase_deadline",
            Self::SpawnFailed => "spawn_failed",
            Self::Observed => "observed",
        }
    }
}

/// When one phase was entered, and what showed it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PhaseEntry {
    /// Phase name.
    pub name: String,
    /// When its marker was observed; `None` if never.
    pub entered_ns: Option<u64>,
    /// What was observed: the matching line, "port 8080 listening", ...
    pub evidence: Option<String>,
}

/// One signal sent by one step of a fault.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Delivery {
    /// Index of the step within the fault.
    pub step: usize,
    /// The signal sent.
    pub signal: Signal,
    /// At whom it was aimed.
    pub aim: Aim,
    /// The processes hit (the group leader for a group).
    pub pids: Vec<i32>,
    /// The phase the target was in when it was sent (`start`, a phase name, or `exited`).
    pub phase: String,
    /// When the marker (or event) the step waited for was observed.
    pub trigger_ns: u64,
    /// The offset asked for after that trigger.
    pub offset_ns: u64,
    /// When the signal was sent.
    pub delivered_ns: u64,
    /// delivered − (trigger + offset): how late atropos was.
    pub latency_ns: u64,
    /// What the kernel made of it.
    pub outcome: DeliveryOutcome,
    /// For a pause: when SIGCONT was sent.
    pub resumed_ns: Option<u64>,
}

/// A step that was not carried out, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Skipped {
    /// Index of the step within the fault.
    pub step: usize,
    /// Why, in one line.
    pub reason: String,
}

/// A descendant still alive after the target's main process ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Orphan {
    /// Process id.
    pub pid: i32,
    /// Short name.
    pub comm: String,
    /// Command line.
    pub cmdline: String,
    /// Whether it had left the target's process group or session.
    pub left_group: bool,
    /// Whether atropos killed it (it always tries for a target it spawned).
    pub killed: bool,
    /// Left alive on purpose: a descendant of a process atropos did not start, under an
    /// experiment that did not say `orphans: kill` (on a live host it may be someone's work).
    #[serde(default)]
    pub kept: bool,
}

/// One line of output with the time it was read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Line {
    /// When atropos read it.
    pub at_ns: u64,
    /// The text, without its newline, cut at 4 KiB.
    pub text: String,
}

/// The first line that matched a watched pattern.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WatchHit {
    /// Which stream was watched.
    pub stream: Stream,
    /// The regex.
    pub pattern: String,
    /// The first matching line, if any.
    pub first: Option<Line>,
    /// How many lines matched.
    pub count: u64,
}

/// Peak resource use sampled from `/proc`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Resources {
    /// Most threads seen.
    pub max_threads: u64,
    /// Largest RSS seen, in bytes.
    pub max_rss_bytes: u64,
    /// How many samples were taken.
    pub samples: u64,
}

/// The signal atropos used to end a target the trial did not end by a fault.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StopSignal {
    /// The signal.
    pub signal: Signal,
    /// When it was sent.
    pub at_ns: u64,
    /// What became of it.
    pub outcome: DeliveryOutcome,
}

/// Everything one trial observed, end to end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Observation {
    /// The trial id from the plan.
    pub trial_id: String,
    /// The main process id, when it was started.
    pub pid: Option<i32>,
    /// Monotonic time just before the spawn (absolute).
    pub started_ns: u64,
    /// When the trial ended (relative).
    pub ended_ns: u64,
    /// The phases in plan order, with when each was entered.
    pub phases: Vec<PhaseEntry>,
    /// Every signal sent by a fault step.
    pub deliveries: Vec<Delivery>,
    /// Steps that could not be carried out.
    pub skipped: Vec<Skipped>,
    /// The signal atropos used to stop a target still running, if any.
    pub stop_signal: Option<StopSignal>,
    /// How the main process ended.
    pub exit: Option<Exit>,
    /// Why the trial stopped.
    pub stop: StopReason,
    /// Descendants still alive after the main process ended.
    pub orphans: Vec<Orphan>,
    /// Watched patterns, in plan order.
    pub watches: Vec<WatchHit>,
    /// The last lines of stdout.
    pub stdout_tail: Vec<Line>,
    /// The last lines of stderr.
    pub stderr_tail: Vec<Line>,
    /// Lines read in all (stdout, stderr).
    pub lines: (u64, u64),
    /// Peak resource use, when sampled.
    pub resources: Option<Resources>,
    /// The phase whose deadline passed before it was entered, if one did.
    pub missed: Option<MissedPhase>,
    /// What the harness could not do, if anything.
    pub error: Option<String>,
}

impl Observation {
    /// The observation of a trial that never began (its target could not be started or
    /// attached to): nothing seen, every phase unentered.
    pub fn unstarted(trial_id: &str, phases: &[String]) -> Observation {
        Observation {
            trial_id: trial_id.to_owned(),
            pid: None,
            started_ns: crate::clock::now_ns(),
            ended_ns: 0,
            phases: phases
                .iter()
                .map(|name| PhaseEntry {
                    name: name.clone(),
                    entered_ns: None,
                    evidence: None,
                })
                .collect(),
            deliveries: Vec::new(),
            skipped: Vec::new(),
            stop_signal: None,
            exit: None,
            stop: StopReason::SpawnFailed,
            orphans: Vec::new(),
            watches: Vec::new(),
            stdout_tail: Vec::new(),
            stderr_tail: Vec::new(),
            lines: (0, 0),
            resources: None,
            missed: None,
            error: None,
        }
    }
}

/// A phase not entered within its deadline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MissedPhase {
    /// The phase that was due.
    pub phase: String,
    /// Its deadline from the start.
    pub within_ns: u64,
    /// The phase the target was still in.
    pub in_phase: String,
}

impl Observation {
    /// The phase the target was in at relative time `at_ns`: `start` before any marker,
    /// `exited` after the exit.
    pub fn phase_at(&self, at_ns: u64) -> String {
        if self.exit.as_ref().is_some_and(|e| e.at_ns <= at_ns) {
            return "exited".to_owned();
        }
        phase_at(&self.phases, at_ns)
    }
}

/// The last phase in `phases` entered at or before `at_ns`, or `start`.
pub fn phase_at(phases: &[PhaseEntry], at_ns: u64) -> String {
    phases
        .iter()
        .filter(|p| p.entered_ns.is_some_and(|t| t <= at_ns))
        .max_by_key(|p| p.entered_ns)
        .map_or_else(|| "start".to_owned(), |p| p.name.clone())
}
