//! A trial as the injector receives it: fully resolved, no templates, no file paths to read.
//!
//! The controller turns an experiment into plans; the injector executes them in-process or
//! behind its HTTP API. Plans are plain data so they cross that boundary as JSON.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::signal::Signal;

/// The version of the plan's wire form: an injector refuses a plan of another.
pub const PLAN_FORMAT: u32 = 1;

/// One trial to execute.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TrialPlan {
    /// The wire form's version ([`PLAN_FORMAT`]).
    pub format: u32,
    /// Unique id; also put into the target's environment as `ATROPOS_TRIAL`.
    pub id: String,
    /// What faults hit: a command to spawn, or running processes to attach to.
    pub target: Target,
    /// Phases in order.
    pub phases: Vec<PhasePlan>,
    /// Fault steps in order; empty for a baseline or recovery trial.
    pub steps: Vec<StepPlan>,
    /// Output patterns whose matches are recorded (expectations on output).
    pub watches: Vec<Watch>,
    /// How the trial ends once the steps are done.
    pub finish: Finish,
    /// How long the last phase runs before atropos stops a target that is still running when
    /// it must end: the end of a baseline, or before a step due after the exit.
    #[serde(with = "crate::plan::nanos")]
    #[schema(value_type = u64)]
    pub hold: Duration,
    /// Time the target has to exit after a terminating step or a stop signal.
    #[serde(with = "crate::plan::nanos")]
    #[schema(value_type = u64)]
    pub grace: Duration,
    /// Overall limit for the trial.
    #[serde(with = "crate::plan::nanos")]
    #[schema(value_type = u64)]
    pub timeout: Duration,
    /// Whether to sample threads and RSS from `/proc`.
    pub sample_resources: bool,
    /// How many lines of each stream to keep.
    pub tail_lines: usize,
    /// Whether an attached target's orphans are killed (`orphans: kill`); a spawned
    /// target's always are.
    #[serde(default)]
    pub kill_orphans: bool,
}

/// What a trial's faults hit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// A command spawned fresh for the trial.
    Run(RunTarget),
    /// Processes already running, selected before the trial.
    Attach(AttachTarget),
}

/// Running processes a trial attaches to, each named by its identity: a pid alone may name
/// another process by the time the plan runs, so the injector pins each by pid and start
/// time, in this boot only, and refuses the trial if one is no longer the process selected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AttachTarget {
    /// The selected processes, the first one the main process of the trial's record.
    pub processes: Vec<Identity>,
    /// The boot they were selected in (`/proc/sys/kernel/random/boot_id`).
    pub boot_id: String,
    /// Where paths of the trial are resolved from.
    #[schema(value_type = String)]
    pub cwd: PathBuf,
    /// The cgroup v2 path (from the hierarchy's root) of the service, when it was selected
    /// by its cgroup or systemd unit: then every process in it (and below) is the target's,
    /// also one that left its process tree.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<String>,
    /// Processes that matched the selector but were not chosen (a peer worker): never
    /// counted among the target's descendants, whatever cgroup they share.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub spare: Vec<Identity>,
}

/// One process, as exactly as Linux can name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Identity {
    /// Process id.
    pub pid: i32,
    /// Start time in clock ticks since boot (`/proc/PID/stat` field 22).
    pub starttime: u64,
}

/// A command to spawn fresh for the trial.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RunTarget {
    /// Program and arguments.
    pub argv: Vec<String>,
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
    /// Working directory.
    #[schema(value_type = String)]
    pub cwd: PathBuf,
}

/// A named stretch of the target's life and the marker that opens it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PhasePlan {
    /// Phase name.
    pub name: String,
    /// What shows the phase has been entered.
    pub marker: Marker,
    /// A deadline for entering it, from the target's start (a start-up SLO such as "ready
    /// within 2s"): missing it ends the trial at once, naming the phase it was still in.
    #[serde(default, with = "crate::plan::opt_nanos")]
    #[schema(value_type = Option<u64>)]
    pub within: Option<Duration>,
}

/// What shows a phase has been entered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[serde(rename_all = "snake_case")]
pub enum Marker {
    /// A stdout line matching this regex.
    Stdout(String),
    /// A stderr line matching this regex.
    Stderr(String),
    /// A line appended to a log file matching a regex.
    Log {
        /// The file to follow.
        #[schema(value_type = String)]
        path: PathBuf,
        /// The regex.
        regex: String,
        /// Where to start reading: where the file ended at this mark (a recovery reads the
        /// lines written since its fault); by default, where it ends when the trial begins.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        from: Option<crate::logfollow::LogMark>,
    },
    /// An entry a systemd unit logged to the journal, its message matching a regex.
    Journald {
        /// The unit (`redis-server.service`).
        unit: String,
        /// The regex its message must match.
        regex: String,
        /// The journal's folder, when not the system's (`journalctl --directory`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[schema(value_type = Option<String>)]
        directory: Option<PathBuf>,
        /// Entries count from this wall-clock time, µs since the epoch (a recovery reads
        /// those written since its fault); by default, from when the trial begins.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        since_us: Option<u64>,
    },
    /// A TCP socket listening on this port.
    Listen(u16),
    /// An HTTP URL answering 2xx.
    Http(String),
    /// A file existing.
    #[schema(value_type = String)]
    File(PathBuf),
    /// A delay since the spawn.
    #[serde(with = "crate::plan::nanos")]
    #[schema(value_type = u64)]
    Delay(Duration),
}

/// Which output stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// An output pattern to record matches of.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Watch {
    /// Which stream.
    pub stream: Stream,
    /// The regex.
    pub regex: String,
}

/// One step of a fault.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StepPlan {
    /// What to do.
    pub action: Action,
    /// At whom.
    pub aim: Aim,
    /// When.
    pub when: When,
}

/// What a step does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Send a signal.
    Signal(Signal),
    /// SIGSTOP, then SIGCONT after the duration.
    #[schema(value_type = u64)]
    Pause(#[serde(with = "crate::plan::nanos")] Duration),
}

/// At whom a step is aimed.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Aim {
    /// The main process.
    Main,
    /// The main process's whole process group.
    Group,
    /// Every descendant whose name or command line matches the regex.
    Descendant(String),
}

impl std::fmt::Display for Aim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Aim::Main => f.write_str("main"),
            Aim::Group => f.write_str("group"),
            Aim::Descendant(re) => write!(f, "descendant /{re}/"),
        }
    }
}

/// When a step fires.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum When {
    /// `offset` after the phase with this index is entered.
    Phase {
        /// Index into [`TrialPlan::phases`].
        index: usize,
        /// Delay after the marker.
        #[serde(with = "crate::plan::nanos")]
        #[schema(value_type = u64)]
        offset: Duration,
    },
    /// This long after the previous step.
    #[schema(value_type = u64)]
    After(#[serde(with = "crate::plan::nanos")] Duration),
    /// After the target exited: while a zombie, or once reaped.
    Exited(ExitedState),
}

/// Which side of reaping an after-exit step fires on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ExitedState {
    /// Exited, not yet reaped.
    Zombie,
    /// Exited and reaped.
    Reaped,
}

/// How a trial ends once its steps are done.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Finish {
    /// The target must exit within `grace` of the last step; if not it is killed (hung).
    AwaitExit,
    /// Without faults: `hold` after the last phase, stop with SIGTERM, then `grace`.
    Stop,
    /// A recovery probe: as soon as this phase is entered, kill the target (an attached
    /// target is left running).
    UntilPhase(usize),
    /// An attached target after its steps: watched for `grace`, whether it exits or not, and
    /// never stopped or killed by atropos; only the experiment's own steps touch it.
    Observe,
}

pub(crate) mod opt_nanos {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Option::<u64>::deserialize(d).map(|n| n.map(Duration::from_nanos))
    }
}

pub(crate) mod nanos {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_nanos)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly")]

    use super::*;

    fn plan(
        target: Target,
        phases: Vec<Marker>,
        steps: Vec<StepPlan>,
        finish: Finish,
    ) -> TrialPlan {
        TrialPlan {
            format: PLAN_FORMAT,
            id: "r1-0-0".into(),
            target,
            phases: phases
                .into_iter()
                .enumerate()
                .map(|(i, marker)| PhasePlan {
                    name: format!("p{i}"),
                    marker,
                    within: (i == 0).then(|| Duration::from_millis(1500)),
                })
                .collect(),
            steps,
            watches: vec![Watch {
                stream: Stream::Stderr,
                regex: "panic".into(),
            }],
            finish,
            hold: Duration::from_millis(200),
            grace: Duration::from_secs(5),
            timeout: Duration::from_secs(30),
            sample_resources: true,
            tail_lines: 50,
            kill_orphans: false,
        }
    }

    #[test]
    fn every_variant_of_a_plan_comes_back_from_its_json_as_it_went() {
        let run = Target::Run(RunTarget {
            argv: vec!["./api".into(), "--port".into(), "18080".into()],
            env: vec![("RUST_LOG".into(), "info".into())],
            cwd: "/srv".into(),
        });
        let attach = Target::Attach(AttachTarget {
            processes: vec![Identity {
                pid: 4242,
                starttime: 123_456,
            }],
            boot_id: "b00t".into(),
            cwd: "/".into(),
            cgroup: Some("/system.slice/redis.service".into()),
            spare: vec![Identity {
                pid: 4243,
                starttime: 123_457,
            }],
        });
        let markers = vec![
            Marker::Stdout("^ready".into()),
            Marker::Stderr("listening".into()),
            Marker::Log {
                path: "/var/log/app.log".into(),
                regex: "^${target.pid}:M .*Ready".into(),
                from: Some(crate::logfollow::LogMark {
                    dev: 1,
                    ino: 2,
                    len: 3,
                }),
            },
            Marker::Log {
                path: "/var/log/app.log".into(),
                regex: "ready".into(),
                from: None,
            },
            Marker::Listen(18080),
            Marker::Http("http://127.0.0.1:18080/healthz".into()),
            Marker::File("/tmp/ready".into()),
            Marker::Delay(Duration::from_millis(10)),
        ];
        let step = |action, aim, when| StepPlan { action, aim, when };
        let steps = vec![
            step(
                Action::Signal(Signal::TERM),
                Aim::Main,
                When::Phase {
                    index: 1,
                    offset: Duration::from_millis(7),
                },
            ),
            step(
                Action::Pause(Duration::from_millis(50)),
                Aim::Group,
                When::After(Duration::from_millis(10)),
            ),
            step(
                Action::Signal(Signal::KILL),
                Aim::Descendant("worker".into()),
                When::Exited(ExitedState::Zombie),
            ),
            step(
                Action::Signal(Signal::INT),
                Aim::Main,
                When::Exited(ExitedState::Reaped),
            ),
        ];
        let finishes = [
            Finish::AwaitExit,
            Finish::Stop,
            Finish::UntilPhase(2),
            Finish::Observe,
        ];
        for target in [run, attach] {
            for finish in &finishes {
                let sent = plan(
                    target.clone(),
                    markers.clone(),
                    steps.clone(),
                    finish.clone(),
                );
                let json = serde_json::to_string(&sent).unwrap();
                let back: TrialPlan = serde_json::from_str(&json).unwrap();
                assert_eq!(back, sent, "{json}");
            }
        }
    }

    #[test]
    fn a_plan_with_a_field_it_does_not_know_is_refused_by_name() {
        let sent = plan(
            Target::Run(RunTarget {
                argv: vec!["true".into()],
                env: Vec::new(),
                cwd: "/".into(),
            }),
            vec![Marker::Listen(1)],
            Vec::new(),
            Finish::Stop,
        );
        let mut json: serde_json::Value = serde_json::to_value(&sent).unwrap();
        json["target"]["run"]["shell"] = true.into();
        let err = serde_json::from_value::<TrialPlan>(json.clone()).unwrap_err();
        assert!(err.to_string().contains("unknown field `shell`"), "{err}");
        json["target"]["run"]
            .as_object_mut()
            .unwrap()
            .remove("shell");
        json["retries"] = 3.into();
        let err = serde_json::from_value::<TrialPlan>(json).unwrap_err();
        assert!(err.to_string().contains("unknown field `retries`"), "{err}");
    }
}
